"""Every stage's parameter model: the form in the Prefect UI, what the CLI validates its options with and
takes its help defaults from. Kept free of Prefect, so the command line can import it for `--help` and the
read-only commands stay fast; each stage module (`flows/stages/<stage>.py`) takes its model from here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, model_validator

from annotation.consensus import MIN_BOX_IOU, BoxIouThreshold, ConsensusPolicy
from flows.ingest.core import IngestOptions
from flows.ingest.source_registry import is_source_id, register_location
from flows.ingest.sources.registry import KINDS, source_adapter
from flows.runtime.recipes import STAGES, recipe_files
from flows.runtime.settings import Settings, load_settings
from flows.teacher.backends import SamplingParams
from flows.teacher.diversity import DiversityPolicy
from flows.teacher.prompting import DEFAULT_PROMPT_VERSION
from flows.teacher.synthesis import SynthesisConfig
from schemas.evaluation import RolloutSettings
from schemas.frames import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from schemas.records import Organ

SourceKind = Literal[KINDS]  # type: ignore[valid-type]  # the kinds of the source registry
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"  # a dataset name: the release folder and the Hub repo


class IngestParams(BaseModel):
    """Parameters of one ingest run (the form in the Prefect UI)."""

    kind: SourceKind = "phantom"
    path: str | None = Field(
        default=None,
        description="source id (src-…) from the workspace's source registry; a folder, file or dataset id given "
        "here is registered and replaced by its id, so no path reaches Prefect (not for phantom)",
    )
    organ: Organ | None = Field(default=None, description="only this organ / the organ of an organ-less source")
    count: int = Field(default=30, ge=1, description="phantom: number of images")
    seed: int = Field(default=0, ge=0, description="phantom: random seed")
    adapter_options: dict[str, Any] = Field(default_factory=dict, description="adapter keyword options")
    source_name: str | None = Field(
        default=None,
        description="names this source in refs, so two sources with the same relative file names never collide "
        "(default: the last part of the path or dataset id)",
    )
    options: IngestOptions = Field(default_factory=IngestOptions)
    wait_for_other_ingest_s: float = Field(
        default=0.0,
        ge=0.0,
        description="when another ingest holds the catalog's ingest lease: wait this long for it, then refuse "
        "(0: refuse at once); the nightly deployment waits, so a manual run never makes it fail",
    )

    @model_validator(mode="after")
    def _path_for_real_sources(self) -> IngestParams:
        adapter = source_adapter(self.kind)
        if adapter.path != "none" and not self.path:
            raise ValueError(f"source kind {self.kind!r} needs a path")
        if self.path and adapter.path != "none" and not is_source_id(self.path):
            settings = load_settings()
            self.path = register_location(
                settings.workspace, settings.salt(), self.kind, self.path, local=adapter.path == "local"
            )
        return self


class AnnotateParams(BaseModel):
    """Parameters of one annotate run (the form in the Prefect UI)."""

    organ: Organ | None = Field(default=None, description="only this organ (default: all)")
    preannotate: bool = Field(default=True, description="pre-fill lesion boxes from source masks")


class PullParams(BaseModel):
    """Parameters of one pull run (the form in the Prefect UI)."""

    organ: Organ | None = Field(default=None, description="only this organ (default: all)")
    min_box_iou: BoxIouThreshold = MIN_BOX_IOU


class ConsensusParams(BaseModel):
    """Parameters of one consensus run (the form in the Prefect UI)."""

    organ: Organ | None = Field(default=None, description="only this organ (default: all)")
    policy: ConsensusPolicy = Field(default_factory=ConsensusPolicy)


class SynthesizeParams(BaseModel):
    """Parameters of one synthesis run (the form in the Prefect UI)."""

    backend: Literal["template", "openai"] = Field(default="template", description="template is offline")
    organ: Organ | None = Field(default=None, description="only this organ (default: all)")
    prompt_version: str = DEFAULT_PROMPT_VERSION
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    candidates: int = Field(default=2, ge=1, le=16, description="n: candidates per request; the first valid wins")
    max_tokens: int = Field(default=512, ge=32)
    concurrency: int = Field(default=32, ge=1, le=4096, description="requests in flight over all replicas")
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=6, ge=0)
    backoff_s: float = Field(default=0.5, ge=0)
    rouge_l_threshold: float = Field(default=0.7, gt=0, le=1)
    simhash_max_distance: int = Field(default=3, ge=0, le=64)
    max_regenerations: int = Field(default=3, ge=0)
    progress: bool = Field(default=True, description="progress bar on stderr")

    def synthesis_config(self, settings: Settings) -> SynthesisConfig:
        return SynthesisConfig(
            sampling=SamplingParams(temperature=self.temperature, n=self.candidates, max_tokens=self.max_tokens),
            diversity=DiversityPolicy(
                rouge_l_threshold=self.rouge_l_threshold,
                simhash_max_distance=self.simhash_max_distance,
                max_regenerations=self.max_regenerations,
            ),
            concurrency=self.concurrency,
            min_pixels=settings.min_pixels,
            max_pixels=settings.max_pixels,
        )


class ReviewParams(BaseModel):
    """Parameters of one review round (the form in the Prefect UI)."""

    share: float = Field(default=0.05, ge=0.0, le=1.0, description="share of produced rationales per organ and tone")


class PublishParams(BaseModel):
    """Parameters of one release (the form in the Prefect UI)."""

    name: str = Field(pattern=NAME_PATTERN, description="dataset name: the release folder and repo")
    version: str | None = Field(default=None, pattern=r"^v\d+\.\d+\.\d+$", description="default: next patch")
    max_shard_mb: int = Field(default=500, ge=1, description="parquet shard size limit")
    exclude_measurement_marks: bool = Field(
        default=False,
        description="leave out images where ingest saw calipers or a measurement readout (a known shortcut)",
    )


class TrainParams(BaseModel):
    """One training job (the form in the Prefect UI)."""

    dataset: str = Field(description="dataset name (a release)")
    version: str = Field(pattern=r"^v\d+\.\d+\.\d+$", description="dataset version, e.g. v1.0.0")
    recipe: str = Field(default="tiny-cpu", pattern=r"^[A-Za-z0-9._-]+$", description="recipe name")
    accelerate_config: str | None = Field(default=None, description="accelerate config file (multi-GPU)")
    stages: list[str] = Field(default_factory=lambda: list(STAGES), description="sft, grpo or both")


class EvaluateParams(BaseModel):
    """One evaluation (the form in the Prefect UI)."""

    dataset: str
    version: str = Field(pattern=r"^v\d+\.\d+\.\d+$")
    split: str = "test"
    endpoint: str | None = Field(default=None, description="OpenAI-compatible base URL (vLLM)")
    served_model: str | None = Field(default=None, description="model name at the endpoint")
    model: str | None = Field(default=None, description="local checkpoint folder (transformers)")
    adapters: list[str] = Field(default_factory=list, description="PEFT adapters merged into the checkpoint, in order")
    rollouts: int = Field(default=8, ge=1, description="sampled rollouts per sample (uncertainty metrics)")
    temperature: float = Field(default=0.7, ge=0.0)
    delta: float = Field(default=0.75, gt=0.0, le=1.0, description="δ: ĉ ≥ δ counts as certain")
    bins: int = Field(default=10, ge=1, description="ECE bins (M)")
    tool: bool = Field(default=True, description="False: the single-turn baseline (no zoom)")
    max_tokens: int = Field(default=512, ge=1)
    max_rows: int | None = Field(default=None, ge=1)
    concurrency: int = Field(default=8, ge=1)
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS
    recipe: str | None = Field(
        default=None, description="GRPO recipe name: its G, T, δ and pixel budget unless given here"
    )

    @model_validator(mode="after")
    def _one_model(self) -> EvaluateParams:
        if (self.endpoint is None) == (self.model is None):
            raise ValueError("give exactly one of endpoint or model")
        return self

    def with_recipe(self) -> EvaluateParams:
        """The recipe's sampling and frame settings, for every field not set explicitly."""
        if self.recipe is None:
            return self
        values = yaml.safe_load(recipe_files(self.recipe, ["grpo"])["grpo"].read_text())
        from_recipe = {
            "rollouts": values.get("num_generations"),
            "temperature": values.get("temperature"),
            "delta": values.get("consistency_threshold"),
            "min_pixels": values.get("min_pixels"),
            "max_pixels": values.get("max_pixels"),
        }
        update = {k: v for k, v in from_recipe.items() if v is not None and k not in self.model_fields_set}
        return self.model_copy(update=update)

    def rollout_settings(self) -> RolloutSettings:
        return RolloutSettings(
            rollouts=self.rollouts, temperature=self.temperature, max_tokens=self.max_tokens, tool=self.tool
        )

    def run_name(self) -> str:
        local = self.adapters[-1] if self.adapters else self.model or ""
        what = (self.served_model or "endpoint") if self.endpoint else Path(local).name
        return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{what}{'' if self.tool else '-no-tool'}").strip("-") or "model"

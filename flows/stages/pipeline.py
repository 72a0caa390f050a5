"""The whole path as one parent flow: ingest → annotate → pull → consensus → synthesize → publish → train → evaluate.

Each stage is its own sub-flow (its own run, logs and artifacts in the Prefect UI), skippable by name, and
resumable because every stage is: a re-run skips what is already done (ingested images, imported tasks,
pulled annotations, unchanged consensus, cached teacher replies, an unchanged release keeps its tag, a
finished training stage is skipped). Train and evaluate use the version publish just tagged, or the
latest one when publish is skipped.

`labels_flow` (pull → consensus) is the hourly deployment in prefect.yaml; `pipeline_flow` the on-demand one.
"""

from __future__ import annotations

from typing import Literal

import yaml
from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from flows.release.folders import release_folder
from flows.release.repository import versions
from flows.runtime.settings import SettingsError, load_settings
from flows.stages.annotate import AnnotateParams, annotate_flow
from flows.stages.consensus import ConsensusParams, consensus_flow
from flows.stages.evaluate import EvaluateParams, evaluate_flow
from flows.stages.ingest import IngestParams, ingest_flow
from flows.stages.publish import PublishParams, publish_flow
from flows.stages.pull import PullParams, pull_flow
from flows.stages.synthesize import SynthesizeParams, synthesize_flow
from flows.stages.train import TrainParams, recipe_files, run_folder, train_flow

Stage = Literal["ingest", "annotate", "pull", "consensus", "synthesize", "publish", "train", "evaluate"]
STAGES: tuple[Stage, ...] = ("ingest", "annotate", "pull", "consensus", "synthesize", "publish", "train", "evaluate")


class PipelineParams(BaseModel):
    """The whole path (the form in the Prefect UI): one section per stage, and the stages to skip."""

    dataset: str = Field(default="lookcloser", pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", description="release name")
    skip: list[Stage] = Field(default_factory=list, description="stages not to run this time")
    ingest: IngestParams = Field(default_factory=IngestParams)
    annotate: AnnotateParams = Field(default_factory=AnnotateParams)
    pull: PullParams = Field(default_factory=PullParams)
    consensus: ConsensusParams = Field(default_factory=ConsensusParams)
    synthesize: SynthesizeParams = Field(default_factory=lambda: SynthesizeParams(progress=False))
    max_shard_mb: int = Field(default=500, ge=1, description="publish: parquet shard size limit")
    recipe: str = Field(default="tiny-cpu", description="train and evaluate: the recipe name")
    accelerate_config: str | None = Field(default=None, description="train: accelerate config (multi-GPU)")
    evaluate_split: str = "test"
    evaluate_max_rows: int | None = Field(default=None, ge=1, description="evaluate: first N rows only")


def dataset_version(dataset: str, published: str | None) -> str:
    """The version publish tagged now, or the latest one."""
    if published:
        return published
    tags = versions(release_folder(load_settings(), dataset))
    if not tags:
        raise SettingsError(f"no release of {dataset} yet: run publish first")
    return tags[-1]


def recipe_model(recipe: str) -> str:
    return yaml.safe_load(recipe_files(recipe, ["grpo"])["grpo"].read_text())["model_name_or_path"]


def finished_adapters(train: TrainParams) -> list[str]:
    """The adapters of the finished stages of this training run, in order (SFT, then GRPO)."""
    folder = run_folder(load_settings(), train)
    return [str(folder / stage) for stage in ("sft", "grpo") if (folder / stage / "run.json").is_file()]


@flow(name="labels")
def labels_flow(pull: PullParams | None = None, consensus: ConsensusParams | None = None) -> None:
    """Pull the readers' work from Label Studio and decide consensus (the hourly deployment)."""
    pull_flow(pull or PullParams())
    consensus_flow(consensus or ConsensusParams())


@flow(name="pipeline")
def pipeline_flow(params: PipelineParams | None = None) -> dict[str, str]:
    """Every stage in order, each as a sub-flow; returns what each produced (a short text per stage)."""
    params = params or PipelineParams()
    log = get_run_logger()
    done: dict[str, str] = {}

    def wanted(stage: Stage) -> bool:
        if stage in params.skip:
            log.info("%s skipped", stage)
            return False
        return True

    if wanted("ingest"):
        summary = ingest_flow(params.ingest)
        done["ingest"] = f"{summary.out} new images"
    if wanted("annotate"):
        done["annotate"] = f"{sum(s.imported for s in annotate_flow(params.annotate))} tasks imported"
    if wanted("pull"):
        done["pull"] = f"{sum(s.pulled for s in pull_flow(params.pull))} annotations pulled"
    if wanted("consensus"):
        done["consensus"] = f"{sum(s.decided for s in consensus_flow(params.consensus))} records decided"
    if wanted("synthesize"):
        done["synthesize"] = f"{synthesize_flow(params.synthesize).produced} rationales produced"
    published = None
    if wanted("publish"):
        release = publish_flow(PublishParams(name=params.dataset, max_shard_mb=params.max_shard_mb))
        published = release.version
        done["publish"] = f"{params.dataset}@{release.version} ({release.rows} rows)"
    if wanted("train") or wanted("evaluate"):
        version = dataset_version(params.dataset, published)
        train = TrainParams(
            dataset=params.dataset, version=version, recipe=params.recipe, accelerate_config=params.accelerate_config
        )
    if wanted("train"):
        trained = train_flow(train)
        done["train"] = ", ".join(f"{stage} {path}" for stage, path in trained.items())
    if wanted("evaluate"):
        evaluation = EvaluateParams(
            dataset=params.dataset,
            version=version,
            split=params.evaluate_split,
            model=recipe_model(params.recipe),
            adapters=finished_adapters(train),
            recipe=params.recipe,
            max_rows=params.evaluate_max_rows,
        )
        done["evaluate"] = evaluate_flow(evaluation)
    return done

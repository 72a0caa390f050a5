"""The whole path as one parent flow, in the order of the stage list (`flows/stages/registry.py`).

Each stage is its own sub-flow (its own run, logs and artifacts in the Prefect UI), skippable by name, and
resumable because every stage is: a re-run skips what is already done (ingested images, imported tasks,
pulled annotations, unchanged consensus, cached teacher replies, reviewed rationales, an unchanged release
keeps its tag, a finished training stage is skipped). Train and evaluate use the version publish just
tagged, or the latest one when publish is skipped. `run_pipeline` is the plain function (the demo calls
it and prints); `pipeline_flow` the Prefect flow around it.

`labels_flow` (pull → consensus) is the hourly deployment in prefect.yaml; `pipeline_flow` the on-demand one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from flows.release.folders import release_folder
from flows.release.repository import versions
from flows.runtime.recipes import recipe_files
from flows.runtime.settings import SettingsError, load_settings
from flows.stages.annotate import AnnotateParams, annotate_flow, simulate_readers_flow
from flows.stages.consensus import ConsensusParams, consensus_flow
from flows.stages.evaluate import EvaluateParams, evaluate_flow
from flows.stages.ingest import IngestParams, ingest_flow
from flows.stages.publish import PublishParams, publish_flow
from flows.stages.pull import PullParams, pull_flow
from flows.stages.registry import STAGES, WHOLE_PATH, StageSpec
from flows.stages.review import ReviewParams, review_flow
from flows.stages.synthesize import SynthesizeParams, synthesize_flow
from flows.stages.train import TrainParams, run_folder, train_flow

Stage = Literal[WHOLE_PATH]  # type: ignore[valid-type]  # the names of the stage list's whole-path stages


class PipelineParams(BaseModel):
    """The whole path (the form in the Prefect UI): one section per stage, and the stages to skip."""

    dataset: str = Field(default="lookcloser", pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", description="release name")
    skip: list[Stage] = Field(default_factory=list, description="stages not to run this time")
    ingest: IngestParams = Field(default_factory=IngestParams)
    annotate: AnnotateParams = Field(default_factory=AnnotateParams)
    simulate_readers: bool = Field(
        default=False, description="demo: two simulated readers read between annotate and pull"
    )
    pull: PullParams = Field(default_factory=PullParams)
    consensus: ConsensusParams = Field(default_factory=ConsensusParams)
    synthesize: SynthesizeParams = Field(default_factory=lambda: SynthesizeParams(progress=False))
    review: ReviewParams = Field(default_factory=ReviewParams)
    simulate_review: bool = Field(default=False, description="demo: a simulated senior reader gives the verdicts")
    max_shard_mb: int = Field(default=500, ge=1, description="publish: parquet shard size limit")
    recipe: str = Field(default="tiny-cpu", description="train and evaluate: the recipe name")
    accelerate_config: str | None = Field(default=None, description="train: accelerate config (multi-GPU)")
    evaluate_split: str = "test"
    evaluate_max_rows: int | None = Field(default=None, ge=1, description="evaluate: first N rows only")
    evaluate_rollouts: int = Field(default=8, ge=1, description="evaluate: sampled rollouts per sample")
    evaluate_max_tokens: int = Field(default=512, ge=1, description="evaluate: tokens per reply")


@dataclass
class StageRun:
    """What one stage of the whole path returned, a one-line summary, and how long it took."""

    name: str
    result: Any
    line: str
    seconds: float
    extra: dict[str, Any]


Done = dict[str, StageRun]


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


def train_params(params: PipelineParams, done: Done) -> TrainParams:
    publish = done.get("publish")
    version = dataset_version(params.dataset, publish.result.version if publish else None)
    return TrainParams(
        dataset=params.dataset, version=version, recipe=params.recipe, accelerate_config=params.accelerate_config
    )


# ---------------------------------------------------------------- one step per whole-path stage
# Each step: (pipeline params, what ran before) → (the stage flow's result, a one-line summary, extras).
Step = Callable[[PipelineParams, Done], tuple[Any, str, dict[str, Any]]]


def _ingest(params: PipelineParams, done: Done) -> tuple[Any, str, dict[str, Any]]:
    summary = ingest_flow(params.ingest)
    return summary, f"{summary.out} new images", {}


def _annotate(params: PipelineParams, done: Done) -> tuple[Any, str, dict[str, Any]]:
    summaries = annotate_flow(params.annotate)
    posted = simulate_readers_flow(params.annotate.organ) if params.simulate_readers else None
    return summaries, f"{sum(s.imported for s in summaries)} tasks imported", {"posted": posted}


def _pull(params: PipelineParams, done: Done) -> tuple[Any, str, dict[str, Any]]:
    summaries = pull_flow(params.pull)
    return summaries, f"{sum(s.pulled for s in summaries)} annotations pulled", {}


def _consensus(params: PipelineParams, done: Done) -> tuple[Any, str, dict[str, Any]]:
    summaries = consensus_flow(params.consensus)
    return summaries, f"{sum(s.decided for s in summaries)} records decided", {}


def _synthesize(params: PipelineParams, done: Done) -> tuple[Any, str, dict[str, Any]]:
    summary = synthesize_flow(params.synthesize)
    return summary, f"{summary.produced} rationales produced", {}


def _review(params: PipelineParams, done: Done) -> tuple[Any, str, dict[str, Any]]:
    summary = review_flow(params.review, simulate=params.simulate_review)
    return summary, f"{summary.sampled} sampled, {summary.verdicts} verdicts", {}


def _publish(params: PipelineParams, done: Done) -> tuple[Any, str, dict[str, Any]]:
    release = publish_flow(PublishParams(name=params.dataset, max_shard_mb=params.max_shard_mb))
    return release, f"{params.dataset}@{release.version} ({release.rows} rows)", {}


def _train(params: PipelineParams, done: Done) -> tuple[Any, str, dict[str, Any]]:
    trained = train_flow(train_params(params, done))
    return trained, ", ".join(f"{stage} {path}" for stage, path in trained.items()), {}


def _evaluate(params: PipelineParams, done: Done) -> tuple[Any, str, dict[str, Any]]:
    train = train_params(params, done)
    evaluation = EvaluateParams(
        dataset=params.dataset,
        version=train.version,
        split=params.evaluate_split,
        model=recipe_model(params.recipe),
        adapters=finished_adapters(train),
        recipe=params.recipe,
        rollouts=params.evaluate_rollouts,
        max_rows=params.evaluate_max_rows,
        max_tokens=params.evaluate_max_tokens,
    )
    folder = evaluate_flow(evaluation)
    return folder, folder, {}


STEPS: dict[str, Step] = {
    "ingest": _ingest,
    "annotate": _annotate,
    "pull": _pull,
    "consensus": _consensus,
    "synthesize": _synthesize,
    "review": _review,
    "publish": _publish,
    "train": _train,
    "evaluate": _evaluate,
}


def run_pipeline(
    params: PipelineParams,
    on_start: Callable[[StageSpec], None] | None = None,
    on_done: Callable[[StageRun, Done], None] | None = None,
) -> Done:
    """Every whole-path stage of the stage list in order, skipping `params.skip`; `on_start` and `on_done` are
    told of each (the demo prints with them)."""
    done: Done = {}
    for spec in STAGES:
        if not spec.whole_path or spec.name in params.skip:
            continue
        if on_start is not None:
            on_start(spec)
        started = time.perf_counter()
        result, line, extra = STEPS[spec.name](params, done)
        done[spec.name] = StageRun(spec.name, result, line, round(time.perf_counter() - started, 1), extra)
        if on_done is not None:
            on_done(done[spec.name], done)
    return done


@flow(name="pipeline")
def pipeline_flow(params: PipelineParams | None = None) -> dict[str, str]:
    """Every stage in order, each as a sub-flow; returns what each produced (a short text per stage)."""
    params = params or PipelineParams()
    log = get_run_logger()
    for name in params.skip:
        log.info("%s skipped", name)
    return {name: run.line for name, run in run_pipeline(params).items()}

"""The one stage list: every stage of the path declared once, in the order a sample walks it.

Each entry names the stage's Prefect flow and its parameter model (in `flows/stages/params.py`) as
`module:name`, imported on use (the form of `prefect.yaml` entrypoints: reading this list never imports
Prefect), what it reads and writes, whether the whole path (`pipeline_flow`, the demo) runs it, and
whether the catalog's stage ledger counts it (`status`: in = out + quarantined). The pipeline runs the
whole-path stages in this order; tests check the pipeline, the catalog's ledger and the deployments in
`prefect.yaml` against this list.

Adding a stage: one entry here, its module in `flows/stages/`, its step in `flows/stages/pipeline.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any


@dataclass(frozen=True)
class StageSpec:
    name: str
    flow: str  # "module:function"
    params: str  # "module:Model"
    reads: str
    writes: str
    whole_path: bool = True
    ledger: bool = False

    def load_flow(self) -> Any:
        return _load(self.flow)

    def load_params(self) -> type:
        return _load(self.params)


def _load(reference: str) -> Any:
    module, _, name = reference.partition(":")
    return getattr(import_module(module), name)


STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        "ingest",
        "flows.stages.ingest:ingest_flow",
        "flows.stages.params:IngestParams",
        reads="a source: folder, manifest, public data set, DICOM, phantom",
        writes="de-identified images in the image store; image records, splits",
        ledger=True,
    ),
    StageSpec(
        "annotate",
        "flows.stages.annotate:annotate_flow",
        "flows.stages.params:AnnotateParams",
        reads="image records",
        writes="Label Studio tasks, two blinded reader projects per organ",
        ledger=True,
    ),
    StageSpec(
        "pull",
        "flows.stages.pull:pull_flow",
        "flows.stages.params:PullParams",
        reads="finished Label Studio readings",
        writes="reader annotations; disputed images to adjudication",
        ledger=True,
    ),
    StageSpec(
        "consensus",
        "flows.stages.consensus:consensus_flow",
        "flows.stages.params:ConsensusParams",
        reads="reader annotations, adjudications",
        writes="consensus records (label, box, c); the agreement report",
        ledger=True,
    ),
    StageSpec(
        "synthesize",
        "flows.stages.synthesize:synthesize_flow",
        "flows.stages.params:SynthesizeParams",
        reads="consensus records, images",
        writes="teacher rationales (confidence-toned zoom trajectories); the synthesis report",
        ledger=True,
    ),
    StageSpec(
        "review",
        "flows.stages.review:review_flow",
        "flows.stages.params:ReviewParams",
        reads="rationales; expert verdicts from Label Studio",
        writes="review tasks; rejected rationales quarantined; the acceptance report",
    ),
    StageSpec(
        "publish",
        "flows.stages.publish:publish_flow",
        "flows.stages.params:PublishParams",
        reads="consensus records, accepted rationales, images",
        writes="a validated, tagged dataset version (parquet shards, card, Data Docs)",
        ledger=True,
    ),
    StageSpec(
        "train",
        "flows.stages.train:train_flow",
        "flows.stages.params:TrainParams",
        reads="a dataset version",
        writes="SFT and GRPO adapters with their run records",
    ),
    StageSpec(
        "evaluate",
        "flows.stages.evaluate:evaluate_flow",
        "flows.stages.params:EvaluateParams",
        reads="a dataset version's split, a model (checkpoint + adapters, or an endpoint)",
        writes="results, metrics (paper Tables 1 and 2) and plots",
    ),
)

WHOLE_PATH: tuple[str, ...] = tuple(spec.name for spec in STAGES if spec.whole_path)
LEDGER_STAGES: tuple[str, ...] = tuple(spec.name for spec in STAGES if spec.ledger)


def stage(name: str) -> StageSpec:
    for spec in STAGES:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")

"""Consensus stage: readings → one `ConsensusRecord` per image × attribute, and agreement statistics.

The rules live in `annotation.consensus`; this module feeds them from the catalog and writes the
decisions back. Each image's inputs (readings, metadata confidence, policy) are hashed: an image
whose inputs did not change since its last decision is skipped, a changed one is decided again,
and every decision is appended to the audit trail (rule, inputs hash, time). A reading withdrawn at
the pull (deleted or emptied in Label Studio) is no longer an input: the hash changes and the image is
decided again, even when no input is left (then every attribute is quarantined `no_readings`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from annotation.consensus import ConsensusPolicy, derive_consensus
from flows.catalog import Catalog, StageCounter, open_catalog
from flows.catalog.locks import stage_lock
from flows.runtime.retries import CATALOG_RETRIES
from flows.runtime.settings import load_settings
from flows.stages.params import ConsensusParams
from schemas.records import ReaderAnnotation, SourceAnnotation
from schemas.vocabulary import load_vocabulary, registered_organs

log = logging.getLogger(__name__)
CONSENSUS_BATCH = 500  # decisions per catalog transaction


@dataclass(kw_only=True)
class ConsensusSummary(StageCounter):
    """Image × attribute decisions: out = a record (c1 + c0), skipped = inputs unchanged since the last run."""

    stage: str = "consensus"
    organ: str
    c1: int = 0
    c0: int = 0

    @property
    def decided(self) -> int:
        return self.out + self.quarantined_total

    @property
    def unchanged(self) -> int:
        return self.skipped


def inputs_hash(readings: list[ReaderAnnotation], sources: list[SourceAnnotation], policy: ConsensusPolicy) -> str:
    """What a decision depends on; Label Studio ids and lead times are not part of it."""
    payload = {
        "readings": sorted(
            json.dumps(
                r.model_dump(mode="json", exclude={"lead_time", "ls_project_id", "ls_task_id", "ls_annotation_id"}),
                sort_keys=True,
            )
            for r in readings
        ),
        "sources": sorted(json.dumps(s.model_dump(mode="json"), sort_keys=True) for s in sources),
        "policy": policy.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def decide_organ(catalog: Catalog, organ: str, policy: ConsensusPolicy) -> ConsensusSummary:
    """Decide every read (or metadata-graded) image of the organ whose inputs changed."""
    summary = ConsensusSummary(organ=organ)
    attributes = list(load_vocabulary(organ).attributes)
    settled = catalog.consensus_hashes()
    readings_by_image = catalog.readings_by_image(organ)
    decisions = []
    for image in list(catalog.iter_images(organ=organ)):  # listed first: no cursor open across the commits
        readings = [r for per_reader in readings_by_image.get(image.image_id, {}).values() for r in per_reader]
        sources = [s for s in catalog.source_annotations(image.image_id) if s.confidence]
        if not readings and not sources and not any(f"{image.image_id}:{a}" in settled for a in attributes):
            continue  # not read yet: nothing to decide (once decided, it is decided again when its readings go)
        digest = inputs_hash(readings, sources, policy)
        if all(settled.get(f"{image.image_id}:{a}") == digest for a in attributes):
            summary.count_skipped(len(attributes))
            continue
        for outcome in derive_consensus(image.image_id, organ, (image.width, image.height), readings, sources, policy):
            decisions.append(
                (outcome.image_id, outcome.attribute, outcome.record, outcome.rule, outcome.reason, digest)
            )
            if outcome.record is None:
                summary.count_quarantined(outcome.reason)
            elif outcome.record.confidence == 1:
                summary.count_out()
                summary.c1 += 1
            else:
                summary.count_out()
                summary.c0 += 1
        if len(decisions) >= CONSENSUS_BATCH:  # a failed run keeps what it decided (resumes from here)
            catalog.save_consensus(decisions)
            decisions = []
    catalog.save_consensus(decisions)
    log.info("consensus %s: %s", organ, summary)
    return summary.check()


@task(**CATALOG_RETRIES)  # a database outage mid-run: run again once it is back, from the last batch
def decide_organ_task(organ: str, params: ConsensusParams) -> ConsensusSummary:
    with open_catalog(load_settings()) as catalog:
        return decide_organ(catalog, organ, params.policy)


@task
def report_statistics(organs: list[str], params: ConsensusParams) -> str:
    """Agreement statistics per organ and attribute: a markdown artifact and PNG plots in the workspace."""
    from flows.reports.agreement import agreement_folder, write_agreement_report  # matplotlib: only this task pays

    settings = load_settings()
    with open_catalog(settings) as catalog:
        markdown = write_agreement_report(catalog, organs, agreement_folder(settings.workspace), params.policy)
    create_markdown_artifact(key="reader-agreement", markdown=markdown, description="reader agreement per attribute")
    return markdown


@flow(name="consensus")
def consensus_flow(params: ConsensusParams | None = None) -> list[ConsensusSummary]:
    """Derive labels, c and fused boxes from the readings of every organ; report agreement."""
    params = params or ConsensusParams()
    organs = [params.organ] if params.organ else list(registered_organs())
    with stage_lock(load_settings().resolved_catalog_url, "consensus"):
        summaries = [decide_organ_task(organ, params) for organ in organs]
        report_statistics(list(registered_organs()), params)  # the report always covers every organ
    return summaries

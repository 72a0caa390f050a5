"""Write a release: rows → parquet shards → validation → card → a tagged commit.

The card (`flows.release.card`) holds nothing that changes between identical releases (no dates),
so re-publishing unchanged data leaves the folder unchanged and creates no tag.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from flows.catalog import Catalog
from flows.ingest.image_store import ImageStore
from flows.release.card import ASSETS, CardContext, CardFacts, card_text, load_provenance
from flows.release.hub import HubPush
from flows.release.repository import commit_release, discard_uncommitted, ensure_repository
from flows.release.rows import FrameSettings, RowOutcome, iter_rows
from flows.release.shards import DEFAULT_SHARD_BYTES, write_shards
from flows.release.validation import (
    DistributionBounds,
    ValidationReport,
    add_distribution_facts,
    add_split_facts,
    row_facts,
    validate_rows,
)
from flows.reports.review import acceptance
from schemas.records import Sample


@dataclass(kw_only=True)
class ReleaseSummary(CardFacts):
    version: str = ""
    created: bool = False
    validation: ValidationReport | None = None
    hub: list[HubPush] = field(default_factory=list)  # versions pushed to the Hub by this run


class ReleaseBlockedError(Exception):
    """The validation suite failed: nothing was committed or tagged."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.summary())
        self.report = report


def _samples(outcomes: Iterator[RowOutcome], summary: ReleaseSummary, facts: list[dict]) -> Iterator[Sample]:
    for outcome in outcomes:
        if outcome.sample is None:
            summary.count_quarantined(outcome.reason or "unknown", outcome.record_id)
            continue
        sample = outcome.sample
        facts.append(row_facts(sample, outcome.image))
        summary.count_out(outcome.record_id)
        summary.labels[(sample.organ, sample.attribute, sample.label, sample.confidence)] += 1
        summary.generators[sample.generator] += 1
        summary.sources[sample.source] += 1
        yield sample


def card_context(
    catalog: Catalog,
    folder: Path,
    summary: ReleaseSummary,
    frames: FrameSettings,
    *,
    name: str,
    provenance: dict[str, dict[str, str | None]] | None = None,
    hub_repo_id: str | None = None,
    agreement_report: Path | None = None,
) -> CardContext:
    """Plots into `folder/assets` (labels per organ; reader agreement from the consensus stage's report saved in
    `agreement_report`) and expert acceptance."""
    from annotation.agreement import plot_label_distribution, statistics_markdown  # matplotlib: only releases pay
    from flows.reports.agreement import card_agreement
    from flows.reports.deidentification import deidentification_counts, deidentification_markdown

    assets = folder / ASSETS
    shutil.rmtree(assets, ignore_errors=True)
    assets.mkdir(parents=True)
    organs = sorted({organ for organ, _ in summary.counts})
    everything, agreement, agreement_origin = card_agreement(catalog, organs, assets, agreement_report)
    plots: dict[str, list[Path]] = {}
    for organ in organs:
        counts = {
            (attribute, label): (
                summary.labels[(organ, attribute, label, 1)],
                summary.labels[(organ, attribute, label, 0)],
            )
            for (o, attribute, label, _) in summary.labels
            if o == organ
        }
        plots[organ] = [plot_label_distribution(organ, counts, assets / f"labels-{organ}.png"), *agreement[organ]]
    table = {stratum: e for stratum, e in acceptance(catalog).items() if stratum.split("/")[0] in organs}
    return CardContext(
        name=name,
        frames=frames,
        agreement_markdown=statistics_markdown(everything) if everything else "",
        agreement_origin=agreement_origin,
        plots={organ: tuple(str(p.relative_to(folder)) for p in paths) for organ, paths in plots.items()},
        acceptance=table,
        provenance=provenance if provenance is not None else load_provenance(),
        hub_repo_id=hub_repo_id,
        deidentification_markdown=deidentification_markdown(deidentification_counts(catalog)),
    )


def publish_release(
    catalog: Catalog,
    store: ImageStore,
    folder: Path,
    name: str,
    frames: FrameSettings,
    *,
    version: str | None = None,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    docs_dir: Path | None = None,
    bounds: DistributionBounds | None = None,
    provenance: dict[str, dict[str, str | None]] | None = None,
    hub_repo_id: str | None = None,
    agreement_report: Path | None = None,
    exclude_measurement_marks: bool = False,
) -> ReleaseSummary:
    """Write the catalog's rows into `folder`, validate them, and tag them; an unchanged release keeps its tag.

    A failing validation restores the folder to the latest release and raises ReleaseBlockedError. The card's
    reader agreement is the consensus stage's report saved in `agreement_report` (measured now when there is none).
    """
    summary, facts = ReleaseSummary(), []
    ensure_repository(folder)
    summary.counts = write_shards(
        _samples(
            iter_rows(catalog, store, frames, exclude_measurement_marks=exclude_measurement_marks), summary, facts
        ),
        folder / "data",
        max_shard_bytes=max_shard_bytes,
    )
    add_split_facts(facts)
    bounds = bounds or DistributionBounds()
    add_distribution_facts(facts, bounds)
    report = validate_rows(facts, docs_dir=docs_dir, bounds=bounds)
    summary.validation = report
    if not report.success:
        discard_uncommitted(folder)
        raise ReleaseBlockedError(report)
    context = card_context(
        catalog,
        folder,
        summary,
        frames,
        name=name,
        provenance=provenance,
        hub_repo_id=hub_repo_id,
        agreement_report=agreement_report,
    )
    (folder / "README.md").write_text(card_text(summary, context, report))
    summary.version, summary.created = commit_release(folder, version, f"{name}: {summary.rows} rows")
    return summary.check()

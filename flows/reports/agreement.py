"""The consensus stage's report: agreement statistics from the catalog, as markdown and PNG plots, saved with the
policy the decisions were taken with (`agreement.json`), so the release card states what the stage measured
instead of measuring again with default values."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from pydantic import BaseModel, Field

from annotation.agreement import (
    AttributeStatistics,
    attribute_statistics,
    plot_confusion,
    plot_iou_histogram,
    statistics_markdown,
)
from annotation.consensus import ConsensusPolicy
from flows.catalog import Catalog
from schemas.vocabulary import load_vocabulary

log = logging.getLogger(__name__)
SAVED_REPORT = "agreement.json"


class SavedAgreement(BaseModel):
    """What the consensus stage saved next to its plots: the policy, the statistics and each organ's plot files."""

    policy: ConsensusPolicy
    decisions: str = Field(description="fingerprint of the catalog's consensus decisions the report describes")
    statistics: list[AttributeStatistics]
    plots: dict[str, list[str]] = Field(description="organ → plot files in the report folder")

    def organ_plots(self, organ: str, source: Path, folder: Path) -> tuple[list[AttributeStatistics], list[Path]]:
        """The organ's saved statistics, and its saved plots copied from `source` (the report folder) into `folder`."""
        plots = [Path(shutil.copyfile(source / name, folder / name)) for name in self.plots.get(organ, [])]
        return [s for s in self.statistics if s.organ == organ], plots


def agreement_folder(workspace: Path) -> Path:
    """Where the consensus stage writes its report in a workspace."""
    return workspace / "reports" / "agreement"


def decisions_fingerprint(catalog: Catalog) -> str:
    """Changes whenever a consensus decision does (its inputs hash is part of the catalog's ledger)."""
    hashes = sorted(catalog.consensus_hashes().items())
    return hashlib.sha256(json.dumps(hashes).encode()).hexdigest()


def organ_statistics(catalog: Catalog, organ: str) -> tuple[list[AttributeStatistics], list[float]]:
    """Per attribute of the organ: reader labels (main lesion of each reader), consensus, c and box IoU."""
    records = catalog.consensus_records(organ=organ)
    readers = sorted({reader for record in records for reader in record.reader_labels})
    box_iou_by_image = {r.image_id: r.box_iou for r in records if r.box_iou is not None}
    stats = []
    for attribute, spec in load_vocabulary(organ).attributes.items():
        rows = [r for r in records if r.attribute == attribute]
        if not rows or len(readers) < 2:
            continue
        stats.append(
            attribute_statistics(
                organ,
                attribute,
                readings={r.image_id: dict(r.reader_labels) for r in rows},
                readers=readers,
                labels=spec.canonical_values,
                consensus_labels={r.image_id: r.label for r in rows},
                confidences=[r.confidence for r in rows],
                box_ious=[r.box_iou for r in rows if r.box_iou is not None],
            )
        )
    return stats, list(box_iou_by_image.values())


def organ_plots(
    catalog: Catalog, organ: str, folder: Path, *, min_box_iou: float
) -> tuple[list[AttributeStatistics], list[Path]]:
    """An organ's statistics, a confusion matrix per attribute and the box IoU histogram, written into `folder`."""
    stats, ious = organ_statistics(catalog, organ)
    plots = [plot_confusion(s, folder / f"confusion-{organ}-{s.attribute}.png") for s in stats]
    if ious:
        plots.append(plot_iou_histogram(organ, ious, folder / f"box-iou-{organ}.png", threshold=min_box_iou))
    return stats, plots


def write_agreement_report(catalog: Catalog, organs: list[str], folder: Path, policy: ConsensusPolicy) -> str:
    """agreement.md plus a confusion matrix per organ × attribute and an IoU histogram per organ, and the same
    saved as `agreement.json` with the policy for the release card."""
    folder.mkdir(parents=True, exist_ok=True)
    everything: list[AttributeStatistics] = []
    plots: dict[str, list[str]] = {}
    for organ in organs:
        stats, paths = organ_plots(catalog, organ, folder, min_box_iou=policy.min_box_iou)
        everything += stats
        plots[organ] = [path.name for path in paths]
    markdown = statistics_markdown(everything)
    (folder / "agreement.md").write_text(markdown)
    saved = SavedAgreement(policy=policy, decisions=decisions_fingerprint(catalog), statistics=everything, plots=plots)
    # json, not pydantic's: κ is NaN where undefined, and NaN must come back as NaN
    (folder / SAVED_REPORT).write_text(json.dumps(saved.model_dump(mode="python"), indent=1))
    return markdown


def load_agreement_report(folder: Path, catalog: Catalog) -> SavedAgreement | None:
    """The consensus stage's saved report when it describes the catalog's current decisions; else None (logged)."""
    path = folder / SAVED_REPORT
    if not path.is_file():
        log.warning("no saved consensus report at %s", path)
        return None
    saved = SavedAgreement.model_validate(json.loads(path.read_text()))
    if saved.decisions != decisions_fingerprint(catalog):
        log.warning("the consensus report at %s predates the catalog's decisions", path)
        return None
    if missing := [name for names in saved.plots.values() for name in names if not (folder / name).is_file()]:
        log.warning("the consensus report at %s lacks plots: %s", path, ", ".join(missing))
        return None
    return saved


def card_agreement(
    catalog: Catalog, organs: list[str], folder: Path, report: Path | None
) -> tuple[list[AttributeStatistics], dict[str, list[Path]], str]:
    """The release card's agreement: statistics, each organ's plots (in `folder`) and one sentence saying where they
    come from: the consensus stage's saved report in `report`, or, without one, measured from the catalog now with
    the default policy's threshold."""
    saved = load_agreement_report(report, catalog) if report is not None else None
    stats: list[AttributeStatistics] = []
    plots: dict[str, list[Path]] = {}
    if saved is not None and report is not None:
        for organ in organs:
            organ_stats, plots[organ] = saved.organ_plots(organ, report, folder)
            stats += organ_stats
        policy = saved.policy
        origin = (
            f"From the consensus stage's report: reader boxes overlapping less than IoU {policy.min_box_iou:.2f} "
            f"need review; c = 1 where at least {policy.agreement_threshold:.0%} of the readers agree; the label on "
            f"disagreement: {policy.disagreement}."
        )
        return stats, plots, origin
    policy = ConsensusPolicy()
    for organ in organs:
        organ_stats, plots[organ] = organ_plots(catalog, organ, folder, min_box_iou=policy.min_box_iou)
        stats += organ_stats
    origin = (
        "No saved consensus report describes this catalog's decisions: measured from the catalog when the release "
        f"was made, with the default box IoU threshold {policy.min_box_iou:.2f}."
    )
    return stats, plots, origin

"""The consensus stage's report: agreement statistics from the catalog, as markdown and PNG plots."""

from __future__ import annotations

from pathlib import Path

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
    """agreement.md plus a confusion matrix per organ × attribute and an IoU histogram per organ."""
    folder.mkdir(parents=True, exist_ok=True)
    everything: list[AttributeStatistics] = []
    for organ in organs:
        everything += organ_plots(catalog, organ, folder, min_box_iou=policy.min_box_iou)[0]
    markdown = statistics_markdown(everything)
    (folder / "agreement.md").write_text(markdown)
    return markdown

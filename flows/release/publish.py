"""Write a release: rows → parquet shards → validation → card → a tagged commit.

The card here is the data's first description (configs, features, counts, generator, frame
settings); it holds nothing that changes between identical releases (no dates), so re-publishing
unchanged data leaves the folder unchanged and creates no tag.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from datasets import DatasetInfo
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCardData

from flows.catalog import Catalog
from flows.image_store import ImageStore
from flows.release.repository import commit_release, discard_uncommitted, ensure_repository
from flows.release.rows import FrameSettings, RowOutcome, iter_rows
from flows.release.shards import DEFAULT_SHARD_BYTES, FEATURES, write_shards
from flows.release.validation import ValidationReport, add_split_facts, row_facts, validate_rows
from schemas.crop import CROP_VERSION
from schemas.records import Sample
from schemas.trajectory import TRAJECTORY_VERSION


@dataclass
class ReleaseSummary:
    version: str = ""
    created: bool = False
    rows: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    labels: Counter[tuple[str, str, str, int]] = field(default_factory=Counter)  # organ, attribute, label, c
    generators: Counter[str] = field(default_factory=Counter)
    validation: ValidationReport | None = None
    outcomes: list[tuple[str, str | None]] = field(default_factory=list)  # record id, reason it is not a row


class ReleaseBlockedError(Exception):
    """The validation suite failed: nothing was committed or tagged."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.summary())
        self.report = report


def _samples(outcomes: Iterator[RowOutcome], summary: ReleaseSummary, facts: list[dict]) -> Iterator[Sample]:
    for outcome in outcomes:
        summary.outcomes.append((outcome.record_id, outcome.reason))
        if outcome.sample is None:
            summary.skipped[outcome.reason or "unknown"] += 1
            continue
        sample = outcome.sample
        facts.append(row_facts(sample, outcome.image))
        summary.rows += 1
        summary.labels[(sample.organ, sample.attribute, sample.label, sample.confidence)] += 1
        summary.generators[sample.generator] += 1
        yield sample


def card_text(name: str, summary: ReleaseSummary, frames: FrameSettings) -> str:
    """README.md: YAML front matter (configs `all` + one per organ, features) and the counts."""
    organs = sorted({organ for organ, _ in summary.counts})
    splits = sorted({split for _, split in summary.counts})
    configs = {
        "all": {"data_files": [{"split": s, "path": f"data/*/{s}-*"} for s in splits], "default": True},
    }
    for organ in organs:
        files = [{"split": split, "path": f"data/{organ}/{split}-*"} for (o, split) in summary.counts if o == organ]
        configs[organ] = {"data_files": files}
    card = DatasetCardData(pretty_name=name, license="other", task_categories=["visual-question-answering"])
    DatasetInfosDict({"all": DatasetInfo(config_name="all", features=FEATURES)}).to_dataset_card_data(card)
    MetadataConfigs(configs).to_dataset_card_data(card)
    lines = [
        "---",
        card.to_yaml(),
        "---",
        "",
        f"# {name}",
        "",
        "Zoom-then-Diagnose ultrasound VQA rows made by lookcloser (teacher rationales, consensus labels and c).",
        "",
        "| organ | split | rows |",
        "|---|---|---|",
        *(f"| {organ} | {split} | {n} |" for (organ, split), n in sorted(summary.counts.items())),
        "",
        "| organ | attribute | label | c | rows |",
        "|---|---|---|---|---|",
        *(f"| {o} | {a} | {lab} | {c} | {n} |" for (o, a, lab, c), n in sorted(summary.labels.items())),
        "",
        "Generators: " + ", ".join(f"`{g}` ({n})" for g, n in sorted(summary.generators.items())),
        "",
        f"Frame: min_pixels {frames.min_pixels}, max_pixels {frames.max_pixels}, crop padding "
        f"{frames.crop_padding}, {CROP_VERSION}, {TRAJECTORY_VERSION}.",
        "",
    ]
    return "\n".join(lines)


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
) -> ReleaseSummary:
    """Write the catalog's rows into `folder`, validate them, and tag them; an unchanged release keeps its tag.

    A failing validation restores the folder to the latest release and raises ReleaseBlockedError.
    """
    summary, facts = ReleaseSummary(), []
    ensure_repository(folder)
    summary.counts = write_shards(
        _samples(iter_rows(catalog, store, frames), summary, facts),
        folder / "data",
        max_shard_bytes=max_shard_bytes,
    )
    add_split_facts(facts)
    report = validate_rows(facts, docs_dir=docs_dir)
    summary.validation = report
    if not report.success:
        discard_uncommitted(folder)
        raise ReleaseBlockedError(report)
    (folder / "README.md").write_text(card_text(name, summary, frames))
    summary.version, summary.created = commit_release(folder, version, f"{name}: {summary.rows} rows")
    return summary

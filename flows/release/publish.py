"""Write a release: rows → parquet shards → card → a tagged commit (no validation yet: see issue 7).

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
from flows.release.repository import commit_release
from flows.release.rows import FrameSettings, RowOutcome, iter_rows
from flows.release.shards import DEFAULT_SHARD_BYTES, FEATURES, write_shards
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


def _samples(outcomes: Iterator[RowOutcome], summary: ReleaseSummary) -> Iterator[Sample]:
    for outcome in outcomes:
        if outcome.sample is None:
            summary.skipped[outcome.reason or "unknown"] += 1
            continue
        sample = outcome.sample
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
) -> ReleaseSummary:
    """Write the catalog's rows into `folder` and tag them; an unchanged release keeps its tag."""
    summary = ReleaseSummary()
    folder.mkdir(parents=True, exist_ok=True)
    summary.counts = write_shards(
        _samples(iter_rows(catalog, store, frames), summary), folder / "data", max_shard_bytes=max_shard_bytes
    )
    (folder / "README.md").write_text(card_text(name, summary, frames))
    summary.version, summary.created = commit_release(folder, version, f"{name}: {summary.rows} rows")
    return summary

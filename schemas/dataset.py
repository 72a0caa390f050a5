"""The published dataset (DESIGN §6): its columns, defined once, and its layout on disk,
`data/<config>/<split>-NNNNN-of-NNNNN.parquet`, one config per organ (the config `all` is every organ's shards).

The columns are the fields of `schemas.records.Sample`, in order; the release's `datasets.Features`
(flows/release/shards.py), the training job's required columns and the evaluation harness's columns are
this list or named subsets of it (tests/test_published_columns.py checks them).
"""

from __future__ import annotations

from pathlib import Path

from schemas.records import Sample

COLUMNS: tuple[str, ...] = tuple(Sample.model_fields)
# What the training job needs of a row (checked before a model is loaded) and what it reads without images.
TRAINING_COLUMNS: tuple[str, ...] = (
    "id", "organ", "attribute", "label", "confidence", "images", "messages", "bbox", "orig_size", "model_size", "split",
)  # fmt: skip
METADATA_COLUMNS: tuple[str, ...] = ("id", "orig_size", "model_size", "split")
# What the evaluation harness reads of a row.
EVAL_COLUMNS: tuple[str, ...] = (
    "id",
    "organ",
    "attribute",
    "label",
    "confidence",
    "bbox",
    "images",
    "messages",
    "split",
)


def shard_paths(release: Path, config: str) -> list[Path]:
    pattern = "data/*/*.parquet" if config == "all" else f"data/{config}/*.parquet"
    return sorted(release.glob(pattern))


def split_shards(release: Path, config: str, split: str) -> list[Path]:
    """The shards of one split of one config."""
    return [shard for shard in shard_paths(release, config) if shard.name.startswith(f"{split}-")]

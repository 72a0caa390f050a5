"""The published dataset (DESIGN §6): its columns, defined once, and its layout on disk,
`data/<config>/<split>-NNNNN-of-NNNNN.parquet`, one config per organ (the config `all` is every organ's shards).

The columns are the fields of `schemas.records.Sample`, in order, and `COLUMN_TYPES` says how each is
stored; the release's `datasets.Features` are built from it (flows/release/shards.py), and the training
job's required columns and the evaluation harness's columns are named subsets of it
(tests/test_published_columns.py checks all of them against `Sample`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

from schemas.records import Sample

IMAGE = "image"  # an encoded image (PNG bytes and a path), decoded by `load_dataset`


@dataclass(frozen=True)
class ListOf:
    """A list column or field; `length` fixes its size (a box has 4 numbers)."""

    element: ColumnType
    length: int | None = None


# A column's storage type: a scalar dtype name ("string", "int8", "float32", ...), IMAGE, a ListOf, or a
# struct {field: type}. Plain data, so schemas/ needs no `datasets`; the release turns it into Features.
ColumnType = Union[str, ListOf, dict[str, "ColumnType"]]  # noqa: UP007  (a recursive alias needs Union)

COLUMN_TYPES: dict[str, ColumnType] = {
    "id": "string",
    "organ": "string",
    "attribute": "string",
    "question": "string",
    "label": "string",
    "confidence": "int8",
    "agreement": "float32",
    "reader_labels": ListOf({"reader": "string", "label": "string"}),  # a list: pseudonyms differ between rows
    "images": ListOf(IMAGE),
    "messages": ListOf({"role": "string", "content": ListOf({"type": "string", "text": "string"})}),
    "bbox": ListOf("int32", length=4),
    "bbox_orig": ListOf("float64", length=4),  # the catalog's boxes exactly
    "orig_size": ListOf("int32", length=2),
    "model_size": ListOf("int32", length=2),
    "split": "string",
    "source": "string",
    "generator": "string",
}
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

"""Parquet shards in the layout of a Hugging Face Hub dataset repository, written as rows stream in.

`data/<organ>/<split>-XXXXX-of-YYYYY.parquet`, one folder per organ config; the `all` config is the
union of the organ folders (a glob in the card), so no image is stored twice. Shards close at a size
limit; their final names (which need the shard count) are given once a split is complete. Each file
carries the `datasets` features in its schema metadata, so `load_dataset` decodes images and messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, Image, List, Value

from schemas.dataset import COLUMN_TYPES, IMAGE, ColumnType, ListOf
from schemas.records import Sample

ROWS_PER_GROUP = 100  # as push_to_hub: row groups of about 20 MB with two images a row
DEFAULT_SHARD_BYTES = 500 << 20  # push_to_hub's default max shard size


def to_feature(column_type: ColumnType) -> Any:
    """The `datasets` feature of one column type of the published row (schemas/dataset.py)."""
    if isinstance(column_type, ListOf):
        return List(to_feature(column_type.element), length=column_type.length or -1)
    if isinstance(column_type, dict):
        return {name: to_feature(field_type) for name, field_type in column_type.items()}
    return Image() if column_type == IMAGE else Value(column_type)


FEATURES = Features({name: to_feature(column_type) for name, column_type in COLUMN_TYPES.items()})


def sample_to_example(sample: Sample) -> dict[str, Any]:
    """The row as `FEATURES` encodes it (reader labels as a list: pseudonyms differ between rows)."""
    row = sample.model_dump(mode="python")
    row["reader_labels"] = [{"reader": r, "label": v} for r, v in sorted(sample.reader_labels.items())]
    return FEATURES.encode_example({name: row[name] for name in FEATURES})


@dataclass
class _ShardWriter:
    folder: Path
    split: str
    max_bytes: int
    done: list[Path] = field(default_factory=list)
    rows: int = 0
    _buffer: list[dict[str, Any]] = field(default_factory=list)
    _writer: pq.ParquetWriter | None = None
    _path: Path | None = None
    _bytes: int = 0

    def add(self, example: dict[str, Any], nbytes: int) -> None:
        self._buffer.append(example)
        self._bytes += nbytes
        self.rows += 1
        if len(self._buffer) >= ROWS_PER_GROUP:
            self._flush()
        if self._bytes >= self.max_bytes:
            self._close_shard()

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._writer is None:
            self._path = self.folder / f"{self.split}-{len(self.done):05d}.parquet.partial"
            self._writer = pq.ParquetWriter(self._path, FEATURES.arrow_schema)
        self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=FEATURES.arrow_schema))
        self._buffer = []

    def _close_shard(self) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self.done.append(self._path)
        self._writer, self._path, self._bytes = None, None, 0

    def finish(self) -> list[Path]:
        """Close the last shard and give every shard its final `-XXXXX-of-YYYYY` name."""
        self._close_shard()
        final = []
        for index, partial in enumerate(self.done):
            target = self.folder / f"{self.split}-{index:05d}-of-{len(self.done):05d}.parquet"
            partial.rename(target)
            final.append(target)
        return final


def write_shards(
    samples: Iterable[Sample], data_dir: Path, *, max_shard_bytes: int = DEFAULT_SHARD_BYTES
) -> dict[tuple[str, str], int]:
    """Write every sample into `data_dir/<organ>/<split>-*.parquet`; returns rows per (organ, split).

    The folder is emptied first: a release is written whole, never merged with an older one.
    """
    for old in data_dir.glob("*/*.parquet*"):
        old.unlink()
    writers: dict[tuple[str, str], _ShardWriter] = {}
    for sample in samples:
        key = (sample.organ, sample.split)
        if key not in writers:
            (data_dir / sample.organ).mkdir(parents=True, exist_ok=True)
            writers[key] = _ShardWriter(data_dir / sample.organ, sample.split, max_shard_bytes)
        nbytes = sum(len(image["bytes"]) for image in sample.images) + 2048  # images dominate a row
        writers[key].add(sample_to_example(sample), nbytes)
    for writer in writers.values():
        writer.finish()
    return {key: writer.rows for key, writer in sorted(writers.items())}

"""Hugging Face source: rows of an existing `datasets` dataset become source items.

Accepted: a folder written by `save_to_disk` (`load_from_disk`), a Hub-layout folder or data file
(parquet, arrow, json, csv; `load_dataset(..., streaming=True)`, so no second Arrow copy lands in
the cache), or a Hub repo id (`snapshot_download`, then the snapshot folder is loaded like a local
one). The Hub is an external call: it gets a short timeout, honours HF_HUB_OFFLINE=1 at call time
(the library reads it only at import), and any failure is one item with "hf_dataset_unreachable",
never a crash or a hang.

Rows are read one at a time (memory-mapped or streamed). The image column is read undecoded and
decoded here cell by cell, so one corrupt cell is one "corrupt_image" item instead of an exception
that would end the whole iteration. Row fields are named by `columns` and parsed with the manifest
parsers, since a dataset row and a manifest row carry the same things.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageOps

from flows.ingest.decode import DecodeError, decode_image_bytes, to_declared_mode
from flows.ingest.sources.base import SourceAdapter, SourceItem
from flows.ingest.sources.cells import (
    BOX_MALFORMED,
    MalformedBoxError,
    RowError,
    attribute_name,
    lesion_annotations,
    parse_attributes,
    parse_box,
    parse_boxes,
    parse_confidence,
    parse_json_cell,
)
from flows.ingest.sources.files import OUTSIDE_SOURCE, is_inside

if TYPE_CHECKING:  # `datasets` costs ~0.7 s to import: only the runs that read a dataset pay it
    from datasets import Dataset, DatasetDict, Features, IterableDataset, IterableDatasetDict

log = logging.getLogger(__name__)

KIND = "hf"  # the `source` of its items
UNREACHABLE = "hf_dataset_unreachable"  # the repo id could not be fetched (offline, no such repo, network)
UNREADABLE = "hf_dataset_unreadable"  # a local folder or file (or a fetched snapshot) that `datasets` cannot read
ROW_UNPARSEABLE = "hf_row_unparseable"  # a mapped cell that is not what its field needs (bad JSON, wrong type)
CORRUPT_IMAGE = "corrupt_image"
IMAGE_MISSING = "image_missing"

DEFAULT_SPLIT = "train"  # what load_dataset calls the only split of plain data files
DEFAULT_HUB_TIMEOUT_S = 10.0  # per request; HF_HUB_ETAG_TIMEOUT overrides it
OFFLINE_VALUES = ("1", "true", "yes", "on")
ROW_FIELDS = ("organ", "patient_id", "boxes", "box", "attributes", "confidence")
ATTRIBUTE_PREFIX = "attribute:"
FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".jsonl": "json", ".json": "json", ".csv": "csv"}


class SourceUnavailableError(Exception):
    """The dataset as a whole cannot be read; `reason` is the quarantine reason of its one item."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- opening
def check_columns(columns: Mapping[str, str] | None) -> dict[str, str]:
    """`columns` as a dict, or ValueError naming the field that is not one of ours."""
    mapping = dict(columns or {})
    for field, column in mapping.items():
        known = field in ROW_FIELDS or (field.startswith(ATTRIBUTE_PREFIX) and len(field) > len(ATTRIBUTE_PREFIX))
        if not known:
            raise ValueError(f"columns: unknown field {field!r}; use {', '.join(ROW_FIELDS)} or 'attribute:<name>'")
        if not isinstance(column, str) or not column:
            raise ValueError(f"columns[{field!r}] must name a dataset column")
    return mapping


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in OFFLINE_VALUES


def _hub_timeout() -> float:
    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT", DEFAULT_HUB_TIMEOUT_S))
    except ValueError:
        return DEFAULT_HUB_TIMEOUT_S


def fetch_snapshot(repo_id: str, revision: str | None) -> Path:
    """The local snapshot folder of a Hub dataset repo; SourceUnavailableError(UNREACHABLE) on any failure."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            repo_id,
            repo_type="dataset",
            revision=revision,
            local_files_only=_hub_offline(),  # offline: the hub cache or nothing, at once
            etag_timeout=_hub_timeout(),
        )
    except Exception as err:  # offline, DNS, 401/404, invalid id...: all mean "cannot get it", never a crash
        log.warning("hf: dataset repo not reachable (%s)", type(err).__name__)
        raise SourceUnavailableError(UNREACHABLE) from None
    return Path(str(folder))


def load_local(path: Path) -> Dataset | DatasetDict | IterableDataset | IterableDatasetDict:
    """A saved dataset (memory-mapped) or data files / a Hub-layout folder (streamed); else SourceUnavailableError."""
    from datasets import load_dataset, load_from_disk

    try:
        if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
            return load_from_disk(str(path))
        if path.is_file():
            builder = FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise SourceUnavailableError(UNREADABLE)
            return load_dataset(builder, data_files=str(path), streaming=True)
        return load_dataset(str(path), streaming=True)
    except SourceUnavailableError:
        raise
    except Exception as err:  # datasets raises many types for unreadable folders; the reason is the same
        log.warning("hf: local dataset unreadable (%s)", type(err).__name__)
        raise SourceUnavailableError(UNREADABLE) from None


def open_dataset(
    source: str, revision: str | None
) -> tuple[Dataset | DatasetDict | IterableDataset | IterableDatasetDict, Path]:
    """The dataset and the folder relative image paths are resolved against."""
    local = Path(source).expanduser()
    if local.exists():
        if revision is not None:
            log.warning("hf: revision is ignored for a local dataset (datasets ignores it silently)")
        return load_local(local), local if local.is_dir() else local.parent
    snapshot = fetch_snapshot(source, revision)
    return load_local(snapshot), snapshot


def select_splits(
    data: Dataset | DatasetDict | IterableDataset | IterableDatasetDict, split: str | None
) -> list[tuple[str, Dataset | IterableDataset]]:
    """(name, rows) of the requested split, or of every split; ValueError for a split the dataset lacks."""
    if isinstance(data, dict):  # DatasetDict and IterableDatasetDict
        if split is None:
            return list(data.items())
        if split not in data:
            raise ValueError(f"split {split!r} not in the dataset; it has {', '.join(data)}")
        return [(split, data[split])]
    own = str(data.split) if data.split is not None else None
    if split is not None and own is not None and split != own:
        raise ValueError(f"split {split!r} not in the dataset; it has {own}")
    return [(split or own or DEFAULT_SPLIT, data)]


def prepare_split(
    rows: Dataset | IterableDataset, image_column: str, mapping: dict[str, str]
) -> tuple[Dataset | IterableDataset, Features | None]:
    """Check the columns exist and switch image decoding off (decoding is done per cell, below)."""
    from datasets import Image as ImageFeature

    features = rows.features
    if features is None:  # some streamed sources only know their columns row by row
        return rows, None
    missing = [column for column in (image_column, *mapping.values()) if column not in features]
    if missing:
        raise ValueError(f"columns {missing} not in the dataset; it has {', '.join(features)}")
    feature = features[image_column]
    if isinstance(feature, ImageFeature) and feature.decode:
        rows = rows.cast_column(image_column, ImageFeature(decode=False))
    return rows, features


# --------------------------------------------------------------------------- cells
def image_from_cell(cell: Any, base: Path) -> tuple[Image.Image | None, Path | None, str | None]:
    """(image, path, reason) of one image cell: decoded bytes or PIL image, or a file for the core to decode."""
    if isinstance(cell, Image.Image):
        try:
            cell.load()
            return to_declared_mode(ImageOps.exif_transpose(cell)), None, None
        except (OSError, SyntaxError, ValueError, EOFError):
            return None, None, CORRUPT_IMAGE
    data: Any = None
    path: Any = None
    if isinstance(cell, Mapping):  # the Image feature undecoded: {"bytes": ..., "path": ...}
        data, path = cell.get("bytes"), cell.get("path")
    elif isinstance(cell, bytes | bytearray | memoryview):
        data = bytes(cell)
    elif isinstance(cell, str):
        path = cell
    elif cell is not None:
        return None, None, CORRUPT_IMAGE
    if data is not None:
        try:
            return decode_image_bytes(bytes(data)), None, None
        except DecodeError as err:
            return None, None, err.reason
    if isinstance(path, str) and path:
        file = Path(path).expanduser()
        file = file if file.is_absolute() else base / file
        if not is_inside(file, dataset_roots(base)):  # a third-party dataset must not make ingest open any file
            return None, None, OUTSIDE_SOURCE
        return (None, file, None) if file.is_file() else (None, None, IMAGE_MISSING)
    return None, None, IMAGE_MISSING


def dataset_roots(base: Path) -> list[Path]:
    """Where a dataset's image paths may point: its folder and, for a Hub snapshot (whose files are links
    into the repo cache's `blobs/`), the repo's cache folder."""
    return [base, base.parents[1]] if base.parent.name == "snapshots" else [base]


def _cell(row: Mapping[str, Any], features: Features | None, column: str | None) -> Any:
    """A cell's value, with ClassLabel integers turned into their names."""
    from datasets import ClassLabel

    if column is None:
        return None
    value = row.get(column)
    feature = features.get(column) if features is not None else None
    if isinstance(feature, ClassLabel) and isinstance(value, int) and value >= 0:
        return feature.int2str(value)
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _row_annotations(
    row: Mapping[str, Any], features: Features | None, mapping: dict[str, str], organ: str
) -> list[dict[str, Any]]:
    boxes = parse_boxes(_cell(row, features, mapping.get("boxes")))
    one_box = parse_json_cell(_cell(row, features, mapping.get("box")))
    if one_box is not None:
        boxes.append(parse_box(one_box))
    attributes = parse_attributes(_cell(row, features, mapping.get("attributes")), organ)
    per_column = parse_attributes(
        {
            attribute_name(organ, field.removeprefix(ATTRIBUTE_PREFIX)): _cell(row, features, column)
            for field, column in mapping.items()
            if field.startswith(ATTRIBUTE_PREFIX)
        },
        organ,
    )
    # a column per attribute describes the row's lesion(s), like a dict `attributes` cell
    if isinstance(attributes, list):
        attributes = [{**lesion, **(per_column or {})} for lesion in attributes]
    elif per_column or attributes:
        attributes = {**(attributes or {}), **(per_column or {})}
    confidence = parse_confidence(_cell(row, features, mapping.get("confidence")), organ)
    return lesion_annotations(boxes, attributes, confidence, origin=KIND)


def row_item(
    row: Mapping[str, Any],
    ref: str,
    *,
    features: Features | None,
    image_column: str,
    mapping: dict[str, str],
    default_organ: str | None,
    base: Path,
) -> SourceItem:
    """The source item of one dataset row."""
    organ_cell = _cell(row, features, mapping.get("organ"))
    organ = str(organ_cell).strip().lower() if organ_cell is not None else (default_organ or "")
    item = SourceItem(source=KIND, source_ref=ref, organ=organ)
    try:
        patient = _cell(row, features, mapping.get("patient_id"))
        item.patient_id = None if patient is None else str(patient)
        item.annotations = _row_annotations(row, features, mapping, organ)
    except MalformedBoxError:
        item.error = BOX_MALFORMED
        return item
    except RowError:
        item.error = ROW_UNPARSEABLE
        return item
    item.image, item.path, item.error = image_from_cell(row.get(image_column), base)
    return item


# --------------------------------------------------------------------------- iteration
def iter_hf_items(
    source: str,
    *,
    organ: str | None = None,
    split: str | None = None,
    image_column: str = "image",
    columns: dict[str, str] | None = None,
    revision: str | None = None,
) -> Iterator[SourceItem]:
    """One item per row of a local or Hub dataset (every split unless `split` is given).

    `columns` maps our fields (organ, patient_id, boxes, box, attributes, confidence,
    attribute:<name>) to dataset columns; `organ` is the default for rows without one.
    Raises ValueError at once for an unknown field in `columns`, and on first iteration for a
    split or column the dataset lacks; an unreachable or unreadable dataset is one item with a reason.
    """
    mapping = check_columns(columns)
    return _iter_items(source, organ, split, image_column, mapping, revision)


def _iter_items(
    source: str,
    organ: str | None,
    split: str | None,
    image_column: str,
    mapping: dict[str, str],
    revision: str | None,
) -> Iterator[SourceItem]:
    try:
        data, base = open_dataset(source, revision)
    except SourceUnavailableError as err:
        yield SourceItem(source=KIND, source_ref=f"{split or 'all'}:dataset", organ=organ or "", error=err.reason)
        return
    counts: Counter[str] = Counter()
    for split_name, split_rows in select_splits(data, split):
        rows, features = prepare_split(split_rows, image_column, mapping)
        iterator = iter(rows)
        index = 0
        while True:
            try:
                row = next(iterator)
            except StopIteration:
                break
            except Exception as err:  # a broken shard ends this split; it is reported, not raised
                log.warning("hf: split %s unreadable after %d rows (%s)", split_name, index, type(err).__name__)
                counts[UNREADABLE] += 1
                yield SourceItem(source=KIND, source_ref=f"{split_name}:{index}", organ=organ or "", error=UNREADABLE)
                break
            item = row_item(
                row,
                f"{split_name}:{index}",
                features=features,
                image_column=image_column,
                mapping=mapping,
                default_organ=organ,
                base=base,
            )
            counts[item.error or "ok"] += 1
            index += 1
            yield item
    log.info("hf: %d rows, %s", sum(counts.values()), dict(counts))


SOURCE = SourceAdapter(KIND, iter_hf_items, path="dataset id")  # the Hub's boxes are not pre-filled

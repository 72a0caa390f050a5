"""Manifest source: a CSV or JSONL file with one row per image, written by whoever owns the data.

A manifest is the simplest way to bring in labelled images that no other adapter knows: a path,
an organ, and optionally boxes, attributes, per-reader labels and metadata-derived confidence.
Rows are independent; a bad row becomes an item with a reason (and is quarantined by the core),
it never stops the file. Only the row's own syntax is checked here: whether a box lies inside the
image or a value is in the vocabulary needs the decoded image and the organ vocabulary, so the
core decides that.

The cell parsers (`parse_boxes`, `parse_attributes`, ...) are shared with the Hugging Face adapter,
whose rows carry the same fields.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import numbers
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from flows.ingest.sources.base import SourceItem
from schemas.vocabulary import VocabularyError, load_vocabulary

log = logging.getLogger(__name__)

SOURCE = "manifest"
ROW_UNPARSEABLE = "manifest_row_unparseable"
IMAGE_MISSING = "image_missing"
BOX_MALFORMED = "box_malformed"
CSV_SUFFIXES = (".csv",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
REPLACEMENT_CHAR = "\ufffd"  # what invalid UTF-8 decodes to: the row's text cannot be trusted


class RowError(ValueError):
    """A cell that cannot be read; `reason` names the kind of problem."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedBoxError(RowError):
    """A box that is not four finite numbers."""

    def __init__(self) -> None:
        super().__init__(BOX_MALFORMED)


# --------------------------------------------------------------------------- cell parsers (shared)
def parse_json_cell(value: Any) -> Any:
    """A cell as a Python value: strings are JSON text (CSV cells are), other values are taken as they are."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise RowError(ROW_UNPARSEABLE) from None


def parse_box(value: Any) -> list[float]:
    """`[x1, y1, x2, y2]` as floats; MalformedBoxError unless it is exactly four finite numbers."""
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise MalformedBoxError
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_) for v in value):
        raise MalformedBoxError
    box = [float(v) for v in value]
    if not all(math.isfinite(v) for v in box):
        raise MalformedBoxError
    return box


def parse_boxes(value: Any) -> list[list[float]]:
    """A list of boxes (JSON text or a list); None or empty gives no boxes."""
    value = parse_json_cell(value)
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise MalformedBoxError
    return [parse_box(box) for box in value]


def attribute_name(organ: str, name: str) -> str:
    """The vocabulary's attribute name for `name`, which may also be its answer key (`echo` → `echo_pattern`)."""
    try:
        attributes = load_vocabulary(organ).attributes
    except VocabularyError:
        return name  # unknown organ: the core quarantines the item anyway
    if name in attributes:
        return name
    by_answer_key = {spec.answer_key: canonical for canonical, spec in attributes.items()}
    return by_answer_key.get(name, name)


def _attribute_dict(value: Any, organ: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise RowError(ROW_UNPARSEABLE)
    attributes = {}
    for name, raw in value.items():
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue  # an empty cell says nothing about the lesion
        if isinstance(raw, dict | list | tuple | bool):
            raise RowError(ROW_UNPARSEABLE)
        # raw values, not canonical ones: the core normalises and quarantines unknown values with a reason
        attributes[attribute_name(organ, str(name))] = str(raw).strip()
    return attributes


def parse_attributes(value: Any, organ: str) -> dict[str, str] | list[dict[str, str]] | None:
    """One attribute dict for every lesion, or a list of dicts aligned with the boxes; None when absent."""
    value = parse_json_cell(value)
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return [_attribute_dict(lesion, organ) for lesion in value]
    return _attribute_dict(value, organ)


def parse_confidence(value: Any, organ: str) -> dict[str, int]:
    """Attribute → c ∈ {0, 1} (metadata-derived confidence, the paper's `c`)."""
    value = parse_json_cell(value)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RowError(ROW_UNPARSEABLE)
    confidence = {}
    for name, raw in value.items():
        c = _binary(raw)
        if c is None:
            raise RowError(ROW_UNPARSEABLE)
        confidence[attribute_name(organ, str(name))] = c
    return confidence


def _binary(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, int | float) and raw in (0, 1):
        return int(raw)
    if isinstance(raw, str) and raw.strip() in ("0", "1"):
        return int(raw.strip())
    return None


def parse_readers(value: Any, organ: str) -> list[dict[str, Any]]:
    """`{pseudonym: {attribute: value, "box": [...]}}` (or a list of such dicts per reader) → readings."""
    value = parse_json_cell(value)
    if value is None:
        return []
    if not isinstance(value, dict):
        raise RowError(ROW_UNPARSEABLE)
    readings = []
    for reader, lesions in value.items():
        if not str(reader).strip():
            raise RowError(ROW_UNPARSEABLE)
        for k, lesion in enumerate(lesions if isinstance(lesions, list) else [lesions]):
            if not isinstance(lesion, dict):
                raise RowError(ROW_UNPARSEABLE)
            fields = dict(lesion)
            box = fields.pop("box", None)
            readings.append(
                {
                    "reader": str(reader),
                    "lesion_index": k,
                    "box": None if box is None else parse_box(box),
                    "attributes": _attribute_dict(fields, organ),
                }
            )
    return readings


def lesion_annotations(
    boxes: list[list[float]],
    attributes: dict[str, str] | list[dict[str, str]] | None,
    confidence: dict[str, int],
    origin: str,
) -> list[dict[str, Any]]:
    """One annotation per lesion: boxes and attributes zipped, confidence kept for the attributes each one has.

    A single attribute dict applies to every box (or to one box-less lesion when there are no
    boxes); a list must be as long as the boxes, or stands alone when there are none.
    """
    if isinstance(attributes, list):
        if boxes and len(attributes) != len(boxes):
            raise RowError(ROW_UNPARSEABLE)
        per_lesion = attributes
    elif attributes:
        per_lesion = [attributes] * max(1, len(boxes))
    else:
        per_lesion = [{} for _ in boxes]
    lesion_boxes: list[list[float] | None] = list(boxes) if boxes else [None] * len(per_lesion)
    return [
        {
            "box": box,
            "attributes": dict(lesion),
            "confidence": {name: c for name, c in confidence.items() if name in lesion},
            "origin": origin,
        }
        for box, lesion in zip(lesion_boxes, per_lesion, strict=True)
    ]


# --------------------------------------------------------------------------- rows
def _cell(row: dict[str, Any], key: str) -> Any:
    value = row.get(key)
    return None if isinstance(value, str) and not value.strip() else value


def _row_organ(row: dict[str, Any], default: str | None) -> str:
    value = _cell(row, "organ")
    organ = str(value).strip().lower() if value is not None else (default or "")
    return organ  # unknown organs pass on: the core quarantines them as unknown_organ


def _resolve_path(value: Any, folder: Path) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise RowError(ROW_UNPARSEABLE)
    path = Path(value.strip()).expanduser()
    return path if path.is_absolute() else folder / path


def row_item(row: Any, ref: str, folder: Path, default_organ: str | None) -> SourceItem:
    """The source item of one manifest row (already read as a dict, or the reason it is not one)."""
    if not isinstance(row, dict):
        return SourceItem(source=SOURCE, source_ref=ref, organ=default_organ or "", error=ROW_UNPARSEABLE)
    organ = _row_organ(row, default_organ)
    item = SourceItem(source=SOURCE, source_ref=ref, organ=organ)
    try:
        item.path = _resolve_path(row.get("path"), folder)
        patient = _cell(row, "patient_id")
        item.patient_id = None if patient is None else str(patient).strip()
        boxes = parse_boxes(_cell(row, "boxes"))
        attributes = parse_attributes(_cell(row, "attributes"), organ)
        confidence = parse_confidence(_cell(row, "confidence"), organ)
        item.annotations = lesion_annotations(boxes, attributes, confidence, origin=SOURCE)
        item.readings = parse_readers(_cell(row, "readers"), organ)
    except RowError as err:
        item.error = err.reason
        return item
    if not item.path.is_file():
        item.error = IMAGE_MISSING
    return item


def _csv_rows(path: Path) -> Iterator[Any]:
    """Each non-blank CSV data row as a dict, or None when the row cannot be a row (never raises mid-file)."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except (StopIteration, csv.Error):
            return
        header = [name.strip() for name in header]
        if "path" not in header:
            log.warning("manifest has no 'path' column; every row is unparseable")
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error:  # e.g. a field over csv.field_size_limit; the reader moves on to the next line
                yield None
                continue
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) > len(header) or any(REPLACEMENT_CHAR in cell for cell in cells):
                yield None
                continue
            yield dict(zip(header, cells, strict=False))  # missing trailing cells are absent fields


def _jsonl_rows(path: Path) -> Iterator[Any]:
    """Each non-blank JSONL line as its parsed value, or None when it is not JSON."""
    with path.open(encoding="utf-8-sig", errors="replace") as fh:
        for line in fh:
            if not line.strip():
                continue
            if REPLACEMENT_CHAR in line:
                yield None
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                yield None


def iter_manifest_items(path: Path, *, organ: str | None = None) -> Iterator[SourceItem]:
    """One `SourceItem` per row of a CSV or JSONL manifest; `organ` is the default for rows without one.

    Raises ValueError for a file that is neither CSV nor JSONL (a caller error, not a row error).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        rows = _csv_rows(path)
    elif suffix in JSONL_SUFFIXES:
        rows = _jsonl_rows(path)
    else:
        raise ValueError(f"manifest must be .csv or .jsonl, got {suffix or 'no suffix'!r}")
    return _iter_rows(rows, path, organ)


def _iter_rows(rows: Iterator[Any], path: Path, organ: str | None) -> Iterator[SourceItem]:
    counts: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        item = row_item(row, f"{path.name}:{number}", path.parent, organ)
        counts[item.error or "ok"] = counts.get(item.error or "ok", 0) + 1
        yield item
    log.info("manifest: %d rows, %s", sum(counts.values()), counts)

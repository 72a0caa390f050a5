"""Manifest source: a CSV or JSONL file with one row per image, written by whoever owns the data.

A manifest is the simplest way to bring in labelled images that no other adapter knows: a path,
an organ, and optionally boxes, attributes, per-reader labels and metadata-derived confidence.
Rows are independent; a bad row becomes an item with a reason (and is quarantined by the core),
it never stops the file. Only the row's own syntax is checked here: whether a box lies inside the
image or a value is in the vocabulary needs the decoded image and the organ vocabulary, so the
core decides that.

The cell parsers (`parse_boxes`, `parse_attributes`, ...) are in `cells.py`, shared with the Hugging
Face adapter, whose rows carry the same fields.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flows.ingest.sources.base import SourceAdapter, SourceItem
from flows.ingest.sources.cells import (
    ROW_UNPARSEABLE,
    RowError,
    lesion_annotations,
    parse_attributes,
    parse_boxes,
    parse_confidence,
    parse_readers,
)
from flows.ingest.sources.files import OUTSIDE_SOURCE, is_inside

log = logging.getLogger(__name__)

KIND = "manifest"  # the `source` of its items
IMAGE_MISSING = "image_missing"
CSV_SUFFIXES = (".csv",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
REPLACEMENT_CHAR = "\ufffd"  # what invalid UTF-8 decodes to: the row's text cannot be trusted


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


def row_key(row: Any, manifest: Path, number: int, roots: list[Path]) -> str:
    """What names a row across edits of the manifest: its `id` column, else its image path and the file's hash.

    Inserting, deleting or reordering rows then changes nothing for the other rows. Only a row that names
    no readable file inside the source falls back to its row number (it is quarantined either way).
    """
    if isinstance(row, dict):
        row_id = _cell(row, "id")
        if row_id is not None:
            return f"{manifest.name}:id={str(row_id).strip()}"
        value = _cell(row, "path")
        if isinstance(value, str):
            path = _resolve_path(value, manifest.parent)
            if is_inside(path, roots) and path.is_file():
                try:
                    with path.open("rb") as fh:
                        digest = hashlib.file_digest(fh, "sha256").hexdigest()[:16]
                    return f"{manifest.name}:{value.strip()}#{digest}"
                except OSError:
                    pass
    return f"{manifest.name}:row={number}"


def row_item(
    row: Any, ref: str, folder: Path, default_organ: str | None, roots: list[Path] | None = None
) -> SourceItem:
    """The source item of one manifest row (already read as a dict, or the reason it is not one).

    `roots` are where a row's image may be (default: the manifest's folder); a path that resolves
    elsewhere (`../`, an absolute path, a symlink out) is quarantined `outside_source`.
    """
    if not isinstance(row, dict):
        return SourceItem(source=KIND, source_ref=ref, organ=default_organ or "", error=ROW_UNPARSEABLE)
    organ = _row_organ(row, default_organ)
    item = SourceItem(source=KIND, source_ref=ref, organ=organ)
    try:
        item.path = _resolve_path(row.get("path"), folder)
        if not is_inside(item.path, roots or [folder]):
            item.path, item.error = None, OUTSIDE_SOURCE
            return item
        patient = _cell(row, "patient_id")
        item.patient_id = None if patient is None else str(patient).strip()
        boxes = parse_boxes(_cell(row, "boxes"))
        attributes = parse_attributes(_cell(row, "attributes"), organ)
        confidence = parse_confidence(_cell(row, "confidence"), organ)
        item.annotations = lesion_annotations(boxes, attributes, confidence, origin=KIND)
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


def iter_manifest_items(
    path: Path, *, organ: str | None = None, extra_roots: list[str] | None = None
) -> Iterator[SourceItem]:
    """One `SourceItem` per row of a CSV or JSONL manifest; `organ` is the default for rows without one.

    Rows may name images in the manifest's folder and below, and in `extra_roots` (folders a manifest
    legitimately points into); anything else is quarantined `outside_source`.
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
    roots = [path.parent, *(Path(root).expanduser() for root in extra_roots or [])]
    return _iter_rows(rows, path, organ, roots)


def _iter_rows(rows: Iterator[Any], path: Path, organ: str | None, roots: list[Path]) -> Iterator[SourceItem]:
    counts: dict[str, int] = {}
    seen_keys: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        key = row_key(row, path, number, roots)
        seen_keys[key] = seen_keys.get(key, 0) + 1
        if seen_keys[key] > 1:  # the same image listed again (e.g. another reader's row): its own item
            key = f"{key}#{seen_keys[key]}"
        item = row_item(row, key, path.parent, organ, roots)
        counts[item.error or "ok"] = counts.get(item.error or "ok", 0) + 1
        yield item
    log.info("manifest: %d rows, %s", sum(counts.values()), counts)


SOURCE = SourceAdapter(KIND, iter_manifest_items, preannotation_origins=("manifest",))

"""A folder of ultrasound images, with masks and clinical data where its layout has them.

Public data sets arrive as folders whose layout says where masks are: BUSI (`<class>/<name> (N).png`
with `_mask.png`, `_mask_1.png`, ...), TN3K (`<split>-image/N.jpg` with `<split>-mask/N.jpg`),
BrEaST-Lesions-USG (`caseNNN.png` with `caseNNN_tumor.png` and a clinical spreadsheet) or plain images.
This adapter only pairs files and turns masks into boxes; the images themselves are decoded by the
shared defensive decoder from `item.path`, so a bad image is quarantined with the decoder's reason.

File and folder names may hold patient data: they go into `source_ref` (hashed by ingest) and are
never logged. The walk never follows symlinked folders (a link loop cannot hang it) and keeps names
that are not UTF-8 as Python decodes them (surrogate escapes).
"""

from __future__ import annotations

import logging
import re
import warnings
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openpyxl import load_workbook
from openpyxl.utils.exceptions import InvalidFileException

from flows.ingest.decode import DecodeError, decode_image_file
from flows.ingest.sources.base import SourceAdapter, SourceItem
from flows.ingest.sources.files import (
    UNSUPPORTED_FORMAT,
    entry_reason,
    image_size,
    is_image_file,
    unlisted_reason,
    walk_files,
)
from flows.ingest.sources.masks import MaskError, boxes_from_mask

log = logging.getLogger(__name__)

KIND = "folder"  # the `source` of its items
LAYOUTS = ("auto", "busi", "tn3k", "breast", "plain")
LAYOUT_ORGANS = {"busi": "breast", "tn3k": "thyroid", "breast": "breast"}
BUSI_CLASSES = frozenset({"benign", "malignant", "normal"})  # folder names, never patient data

_BUSI_MASK = re.compile(r"^(?P<image>.+)_mask(?:_\d+)?$")
_BREAST_TUMOR_MASK = re.compile(r"^(?P<image>.+)_tumor(?:[_-]?\d+)?$")
_BREAST_OTHER_MASK = re.compile(r"^.+_other(?:[_-]?\d+)?$")  # masks of non-tumour findings: not lesions
_TN3K_IMAGE_DIR, _TN3K_MASK_DIR = "-image", "-mask"

# --------------------------------------------------------------------------- BrEaST clinical values
# Spreadsheet column (normalised header) → attribute of the breast vocabulary.
BREAST_ATTRIBUTE_COLUMNS = {
    "shape": "shape",
    "margin": "margin",
    "echogenicity": "echo_pattern",
    "posterior_features": "posterior_features",
    "calcifications": "calcifications",
}
# Columns kept as source metadata: the case's class and category, nothing about the patient.
BREAST_METADATA_COLUMNS = {"classification": "class", "birads": "birads"}
# Cells that say "no value" (the vocabulary's "None" is a value, so the word "none" is not here).
MISSING_VALUES = frozenset({"", "nan", "n/a", "na", "-", "not applicable", "not available"})
# BrEaST words the vocabulary cannot know; other values (oval, hypoechoic, ...) are its synonyms already.
BREAST_VALUE_MAP: dict[str, dict[str, str | None]] = {
    "margin": {"circumscribed": "Circumscribed", "not circumscribed": None},  # bare "not": no descriptor given
    "echo_pattern": {"complex cystic/solid": "Complex cystic and solid"},
    "posterior_features": {"no": "No posterior features", "combined": "Combined pattern"},
    "calcifications": {"no": "None", "indefinable": None},  # indefinable: the reader could not tell
}
# "not circumscribed - spiculated&angular" lists several descriptors; one value is recorded, the most
# suspicious (BI-RADS positive predictive values fall in this order).
BREAST_MARGIN_DESCRIPTORS = {
    "spiculated": "Spiculated",
    "angular": "Angular",
    "microlobulated": "Microlobulated",
    "indistinct": "Indistinct",
}
_NOT_CIRCUMSCRIBED = re.compile(r"^not circumscribed\s*-\s*(?P<descriptors>.+)$")


@dataclass
class _Pairing:
    """One image file (relative to the root), its mask files, and what the layout knows about it."""

    image: Path
    masks: list[Path] = field(default_factory=list)
    mask_missing: bool = False
    attributes: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- layouts
def detect_layout(files: list[Path]) -> str:
    """The layout whose file names appear under the root; "plain" when none does."""
    if any(f.parent.name.endswith(_TN3K_MASK_DIR) and is_image_file(f) for f in files):
        return "tn3k"
    if any(is_image_file(f) and _BREAST_TUMOR_MASK.match(f.stem) for f in files):
        return "breast"
    if any(is_image_file(f) and _BUSI_MASK.match(f.stem) for f in files):
        return "busi"
    return "plain"


def _pair_busi(files: list[Path]) -> list[_Pairing]:
    masks: dict[tuple[Path, str], list[Path]] = defaultdict(list)
    images = []
    for f in filter(is_image_file, files):
        if match := _BUSI_MASK.match(f.stem):
            masks[(f.parent, match["image"])].append(f)
        else:
            images.append(f)
    pairings = []
    for image in images:
        found = masks.get((image.parent, image.stem), [])
        klass = image.parent.name.lower()
        metadata = {"class": klass} if klass in BUSI_CLASSES else {}
        pairings.append(_Pairing(image, found, mask_missing=not found, metadata=metadata))
    return pairings


def _pair_tn3k(files: list[Path]) -> list[_Pairing]:
    masks: dict[tuple[Path, str, str], Path] = {}
    images = []
    for f in filter(is_image_file, files):
        if f.parent.name.endswith(_TN3K_MASK_DIR):
            masks[(f.parent.parent, f.parent.name.removesuffix(_TN3K_MASK_DIR), f.stem)] = f
        else:
            images.append(f)
    pairings = []
    for image in images:
        split = image.parent.name.removesuffix(_TN3K_IMAGE_DIR)
        mask = masks.get((image.parent.parent, split, image.stem))
        pairings.append(_Pairing(image, [mask] if mask else [], mask_missing=mask is None))
    return pairings


def _pair_breast(files: list[Path], clinical: dict[str, tuple[dict[str, str], dict[str, Any]]]) -> list[_Pairing]:
    masks: dict[tuple[Path, str], list[Path]] = defaultdict(list)
    images = []
    for f in filter(is_image_file, files):
        if match := _BREAST_TUMOR_MASK.match(f.stem):
            masks[(f.parent, match["image"])].append(f)
        elif not _BREAST_OTHER_MASK.match(f.stem):
            images.append(f)
    pairings = []
    for image in images:
        attributes, metadata = clinical.get(image.stem.lower(), ({}, {}))
        # normal cases have no tumour mask: no mask means no lesion here, not a broken copy
        found = masks.get((image.parent, image.stem), [])
        pairings.append(_Pairing(image, found, attributes=dict(attributes), metadata=dict(metadata)))
    return pairings


def _pair_plain(files: list[Path]) -> list[_Pairing]:
    return [_Pairing(f) for f in files if is_image_file(f)]


# --------------------------------------------------------------------------- BrEaST spreadsheet
def _header_key(cell: Any) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(cell or "").strip().lower()).strip("_")


def _cell_text(value: Any) -> str | None:
    """A cell as text, or None when it holds no value (empty, NaN, "not applicable")."""
    if value is None or (isinstance(value, float) and value != value):  # NaN is the only value != itself
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # BI-RADS 3.0 → "3"
    text = " ".join(str(value).split())
    return None if text.lower() in MISSING_VALUES else text


def breast_attribute_value(attribute: str, raw: Any) -> str | None:
    """A BrEaST cell → a value the breast vocabulary accepts, or None when it carries none.

    Values not in the explicit maps are returned as they are: the vocabulary normalises its own
    synonyms, and a value it does not know quarantines the image at ingest (visible, not dropped).
    """
    text = _cell_text(raw)
    if text is None:
        return None
    key = text.lower()
    if attribute == "margin" and (match := _NOT_CIRCUMSCRIBED.match(key)):
        descriptors = {d.strip() for d in match["descriptors"].split("&")}
        for descriptor, canonical in BREAST_MARGIN_DESCRIPTORS.items():
            if descriptor in descriptors:
                return canonical
        return text
    table = BREAST_VALUE_MAP.get(attribute, {})
    return table.get(key, text)


def _clinical_row_keys(row: dict[str, Any]) -> list[str]:
    """Image stems (lower case) a spreadsheet row describes: its file name and/or its case number."""
    keys = []
    if filename := _cell_text(row.get("image_filename")):
        keys.append(Path(filename).stem.lower())
    case_id = _cell_text(row.get("caseid", row.get("case_id")))
    if case_id is not None and case_id.isdigit():
        keys.append(f"case{int(case_id):03d}")  # BrEaST names its images case001.png ... case256.png
    return keys


def read_breast_spreadsheet(path: Path) -> dict[str, tuple[dict[str, str], dict[str, Any]]]:
    """Image stem → (attributes, metadata) from a BrEaST clinical spreadsheet; ValueError if unusable.

    Only the lesion descriptor columns and the class/BI-RADS are read: age, symptoms and the other
    clinical columns are patient data the pipeline has no use for.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # openpyxl warns about unsupported extensions (data validation)
            workbook = load_workbook(path, read_only=True, data_only=True)
        try:
            rows = list(workbook.worksheets[0].iter_rows(values_only=True))
        finally:
            workbook.close()
    except (OSError, ValueError, KeyError, IndexError, zipfile.BadZipFile, InvalidFileException) as err:
        raise ValueError(f"spreadsheet unreadable ({type(err).__name__})") from None
    if not rows:
        raise ValueError("spreadsheet is empty")
    header = [_header_key(cell) for cell in rows[0]]
    if not {"image_filename", "caseid", "case_id"} & set(header):
        raise ValueError("spreadsheet has neither an Image_filename nor a CaseID column")
    clinical: dict[str, tuple[dict[str, str], dict[str, Any]]] = {}
    for values in rows[1:]:
        row = dict(zip(header, values, strict=False))
        attributes = {
            name: value
            for column, name in BREAST_ATTRIBUTE_COLUMNS.items()
            if (value := breast_attribute_value(name, row.get(column))) is not None
        }
        metadata = {
            name: value.lower()
            for column, name in BREAST_METADATA_COLUMNS.items()
            if (value := _cell_text(row.get(column))) is not None
        }
        for key in _clinical_row_keys(row):
            clinical.setdefault(key, (attributes, metadata))
    return clinical


def _read_breast_clinical(root: Path, files: list[Path]) -> dict[str, tuple[dict[str, str], dict[str, Any]]]:
    """Rows of every spreadsheet under the root (the first row for an image wins); ValueError if one is bad."""
    clinical: dict[str, tuple[dict[str, str], dict[str, Any]]] = {}
    for f in files:
        if f.suffix.lower() == ".xlsx":
            for key, row in read_breast_spreadsheet(root / f).items():
                clinical.setdefault(key, row)
    return clinical


# --------------------------------------------------------------------------- items
def _error_item(pairing: _Pairing, organ: str, reason: str) -> SourceItem:
    return SourceItem(
        source=KIND, source_ref=pairing.image.as_posix(), organ=organ, metadata=pairing.metadata, error=reason
    )


def _mask_boxes(mask_path: Path, size: tuple[int, int]) -> list[list[float]]:
    """One box per connected lesion of a mask file; MaskError(reason) when the mask cannot be used."""
    try:
        mask = decode_image_file(mask_path)
    except DecodeError:
        raise MaskError("mask_unreadable") from None
    return boxes_from_mask(mask, size)


def _build_item(root: Path, pairing: _Pairing, organ: str) -> SourceItem:
    if reason := entry_reason(root, pairing.image) or next(
        (r for mask in pairing.masks if (r := entry_reason(root, mask))), None
    ):
        return _error_item(pairing, organ, reason)  # a link out of the source, a FIFO named like an image
    if pairing.mask_missing:
        return _error_item(pairing, organ, "mask_missing")
    path = root / pairing.image
    item = SourceItem(
        source=KIND, source_ref=pairing.image.as_posix(), organ=organ, path=path, metadata=pairing.metadata
    )
    if not pairing.masks:
        if pairing.attributes:  # clinical descriptors without an outline: still the source's word
            item.annotations = [{"box": None, "attributes": dict(pairing.attributes), "origin": "metadata"}]
        return item
    size = image_size(path)
    if size is None:
        return item  # the core decodes it and quarantines it with the decoder's own reason
    try:
        boxes = sorted(box for mask in pairing.masks for box in _mask_boxes(root / mask, size))
    except MaskError as err:
        return _error_item(pairing, organ, str(err))
    item.annotations = [{"box": box, "attributes": dict(pairing.attributes), "origin": "mask"} for box in boxes]
    return item


def iter_folder_items(root: Path, *, organ: str | None = None, layout: str = "auto") -> Iterator[SourceItem]:
    """One SourceItem per image under `root`, with a box per masked lesion; see the module docstring.

    A wrong call (unknown layout, missing folder, plain images without an organ) raises at once,
    before the first item is asked for.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown folder layout {layout!r}; known: {', '.join(LAYOUTS)}")
    if layout == "plain" and organ is None:
        raise ValueError("plain image folders need an organ (breast, liver or thyroid)")
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError("the folder source root is not a folder")  # no path: it may name a patient
    return _iter_items(root, organ, layout)


def _iter_items(root: Path, organ: str | None, layout: str) -> Iterator[SourceItem]:
    files = walk_files(root)
    if layout == "auto":
        layout = detect_layout(files)
        log.info("folder layout detected: %s (%d files)", layout, len(files))
    organ = organ or LAYOUT_ORGANS.get(layout)
    if organ is None:
        raise ValueError("no known layout under the root: plain image folders need an organ")
    if layout == "breast":
        try:
            clinical = _read_breast_clinical(root, files)
        except ValueError as err:
            log.warning("BrEaST clinical data: %s; every image of the folder is quarantined", err)
            for pairing in _pair_breast(files, {}):
                yield _error_item(pairing, organ, "spreadsheet_unreadable")
            return
        pairings = _pair_breast(files, clinical)
    else:
        pairings = {"busi": _pair_busi, "tn3k": _pair_tn3k, "plain": _pair_plain}[layout](files)
    for pairing in pairings:
        yield _build_item(root, pairing, organ)
    yield from _unlisted_items(root, files, pairings, layout, organ)


def _side_file(f: Path, layout: str) -> bool:
    """Files a layout reads besides images and their masks: BrEaST's spreadsheet and its non-tumour masks."""
    return layout == "breast" and (f.suffix.lower() == ".xlsx" or bool(_BREAST_OTHER_MASK.match(f.stem)))


def _unlisted_items(
    root: Path, files: list[Path], pairings: list[_Pairing], layout: str, organ: str
) -> Iterator[SourceItem]:
    """Every entry no pairing took, quarantined with its reason: nothing under the root is skipped unseen."""
    taken = {p.image for p in pairings} | {m for p in pairings for m in p.masks}
    for f in files:
        if f in taken or _side_file(f, layout):
            continue
        reason = unlisted_reason(root, f)
        if reason == UNSUPPORTED_FORMAT and is_image_file(f):
            reason = "mask_without_image"  # an image file a layout took for a mask, with no image beside it
        yield SourceItem(source=KIND, source_ref=f.as_posix(), organ=organ, error=reason)


SOURCE = SourceAdapter(KIND, iter_folder_items, preannotation_origins=("mask",))

"""DDTI (Pedraza et al. 2015): thyroid nodules with TI-RADS descriptors and freehand outlines.

One case is `N.xml` plus its images `N_1.jpg`, `N_2.jpg`, ...; the XML holds the case's TI-RADS
descriptors and one `<mark>` per outlined image, whose `<svg>` is JSON: a list of polygons
`{"points": [{"x": .., "y": ..}, ...], "regionType": "freehand"}`. Each polygon becomes a box; the
case's descriptors go on every box of every image of the case.

DDTI words its descriptors in its own way ("hypoechogenicity", "well defined", "non"); they are
mapped to the thyroid vocabulary in explicit tables here, so the mapping is reviewable in one place.
The case number is the patient: all images of a case share it. Age and sex are never read.
"""

from __future__ import annotations

import json
import logging
import math
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.ingest.sources.base import SourceAdapter, SourceItem
from flows.ingest.sources.files import entry_reason, image_size, is_image_file, unlisted_reason, walk_files
from flows.ingest.sources.masks import MaskError, box_from_polygon

log = logging.getLogger(__name__)

KIND = "ddti"  # the `source` of its items
DEFAULT_ORGAN = "thyroid"
MAX_XML_BYTES = 1024 * 1024  # a case file is a few kB; anything far larger is not a DDTI case

# XML element → thyroid vocabulary attribute.
DDTI_FIELDS = {
    "composition": "composition",
    "echogenicity": "echogenicity",
    "margins": "margin",
    "calcifications": "echogenic_foci",
}
# DDTI value (lower case, single spaces) → canonical thyroid value; None: the value says nothing usable.
# Values missing from a table are passed on as they are (ingest quarantines what the vocabulary rejects).
DDTI_VALUES: dict[str, dict[str, str | None]] = {
    "composition": {
        "solid": "Solid",
        "predominantly solid": "Mixed cystic and solid",  # TI-RADS folds both "predominantly" grades into mixed
        "predominantly cystic": "Mixed cystic and solid",
        "spongiform": "Spongiform",
        "cystic": "Cystic",
        "dense": None,  # not a TI-RADS composition and not defined by the data set: no safe mapping
    },
    "echogenicity": {
        "hyperechogenicity": "Hyperechoic or isoechoic",
        "isoechogenicity": "Hyperechoic or isoechoic",
        "hypoechogenicity": "Hypoechoic",
        "marked hypoechogenicity": "Very hypoechoic",
    },
    "margin": {
        "well defined": "Smooth",
        "well defined smooth": "Smooth",
        "ill defined": "Ill-defined",
        "microlobulated": "Lobulated or irregular",
        "macrolobulated": "Lobulated or irregular",
        "spiculated": "Lobulated or irregular",
    },
    "echogenic_foci": {
        "non": "None",
        "microcalcifications": "Punctate echogenic foci",
        "microcalcification": "Punctate echogenic foci",
        "macrocalcifications": "Macrocalcifications",
        "macrocalcification": "Macrocalcifications",
    },
}
_IMAGE_NAME = re.compile(r"^(?P<case>.+)_(?P<index>\d+)$")  # N_k


class CaseError(ValueError):
    """A case or outline that cannot be used; the message is the quarantine reason."""


@dataclass
class DdtiCase:
    """What one case XML says, without age and sex."""

    number: str
    attributes: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    marks: dict[str, list[str]] = field(default_factory=dict)  # image index k → svg texts of its marks


def ddti_value(attribute: str, raw: str | None) -> str | None:
    """A DDTI descriptor → a thyroid vocabulary value, or None when it carries none."""
    text = " ".join((raw or "").split())
    if not text:
        return None
    table = DDTI_VALUES.get(attribute, {})
    return table.get(text.lower(), text)


def parse_case(xml_path: Path, fallback_number: str) -> DdtiCase:
    """The descriptors and marks of one case file; CaseError("xml_unreadable") if it is not a DDTI case."""
    try:
        if xml_path.stat().st_size > MAX_XML_BYTES:
            raise CaseError("xml_unreadable")
        root = ET.parse(xml_path).getroot()  # expat ≥ 2.4 refuses entity-expansion bombs
    except (OSError, ET.ParseError, ValueError, LookupError):  # LookupError: an unknown declared encoding
        raise CaseError("xml_unreadable") from None
    if root.tag != "case":
        raise CaseError("xml_unreadable")
    number = " ".join((root.findtext("number") or "").split()) or fallback_number
    attributes = {
        name: value
        for element, name in DDTI_FIELDS.items()
        if (value := ddti_value(name, root.findtext(element))) is not None
    }
    tirads = " ".join((root.findtext("tirads") or "").split())
    marks: dict[str, list[str]] = defaultdict(list)
    for mark in root.iter("mark"):
        marks[" ".join((mark.findtext("image") or "").split())].append(mark.findtext("svg") or "")
    return DdtiCase(number, attributes, {"tirads": tirads.lower()} if tirads else {}, dict(marks))


def _point(point: Any) -> tuple[float, float]:
    if not isinstance(point, dict):
        raise CaseError("outline_unreadable")
    x, y = point.get("x"), point.get("y")
    for v in (x, y):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise CaseError("outline_unreadable")
    return float(x), float(y)


def boxes_from_svg(svg: str, size: tuple[int, int]) -> list[list[float]]:
    """One box per polygon of a mark's svg JSON; CaseError(reason) if it is unreadable or degenerate."""
    try:
        regions = json.loads(svg)
    except (json.JSONDecodeError, RecursionError):
        raise CaseError("outline_unreadable") from None
    # an empty list is a mark without an outline: as unusable as broken JSON
    if not isinstance(regions, list) or not regions:
        raise CaseError("outline_unreadable")
    boxes = []
    for region in regions:
        points = region.get("points") if isinstance(region, dict) else None
        if not isinstance(points, list):
            raise CaseError("outline_unreadable")
        try:
            boxes.append(box_from_polygon([_point(p) for p in points], size))
        except MaskError as err:
            raise CaseError(str(err)) from None
    return boxes


def _image_item(root: Path, ref: Path, path: Path | None, case: DdtiCase, svgs: list[str], organ: str) -> SourceItem:
    item = SourceItem(
        source=KIND,
        source_ref=ref.as_posix(),
        organ=organ,
        patient_id=f"ddti-{case.number}",
        metadata=dict(case.metadata),
    )
    if path is None:
        item.error = "image_missing"
        return item
    item.path = path
    if not svgs:
        if case.attributes:  # an image of the nodule without an outline still carries the case's descriptors
            item.annotations = [{"box": None, "attributes": dict(case.attributes), "origin": "metadata"}]
        return item
    size = image_size(path)
    if size is None:
        return item  # the core decodes it and quarantines it with the decoder's own reason
    try:
        boxes = sorted(box for svg in svgs for box in boxes_from_svg(svg, size))
    except CaseError as err:
        item.path, item.error = None, str(err)
        return item
    item.annotations = [{"box": box, "attributes": dict(case.attributes), "origin": "outline"} for box in boxes]
    return item


def _index(k: str) -> str:
    """An image index as written in a file name or a mark ("01" and "1" are the same image)."""
    return str(int(k)) if k.isdigit() else k


def _index_order(k: str) -> tuple[bool, int, str]:
    return (not k.isdigit(), int(k) if k.isdigit() else 0, k)


def _case_items(root: Path, xml: Path, images: dict[str, Path], organ: str) -> Iterator[SourceItem]:
    """The items of one case: every image found or referenced, each with its outlines' boxes."""
    try:
        case = parse_case(root / xml, xml.stem)
    except CaseError as err:
        refs = [images[k] for k in sorted(images, key=_index_order)] or [xml]  # no image: count the case itself
        for ref in refs:
            yield SourceItem(
                source=KIND, source_ref=ref.as_posix(), organ=organ, patient_id=f"ddti-{xml.stem}", error=str(err)
            )
        return
    marks: dict[str, list[str]] = defaultdict(list)
    for k, svgs in case.marks.items():
        marks[_index(k)].extend(svgs)
    for k in sorted(set(images) | set(marks), key=_index_order):
        found = images.get(k)
        ref = found or xml.parent / f"{xml.stem}_{k}.jpg"  # where DDTI would have put the missing image
        yield _image_item(root, ref, root / found if found else None, case, marks.get(k, []), organ)


def iter_ddti_items(root: Path, *, organ: str | None = None) -> Iterator[SourceItem]:
    """One SourceItem per DDTI image under `root`, case by case in sorted order; see the module docstring."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError("the DDTI source root is not a folder")  # no path: it may name a patient
    return (_contained(root, item) for item in _iter_items(root, organ or DEFAULT_ORGAN))


def _contained(root: Path, item: SourceItem) -> SourceItem:
    """An item whose file is a link out of the source (or not a regular file) is quarantined, never opened."""
    if item.path is not None and (reason := entry_reason(root, item.path.relative_to(root))):
        item.path, item.error = None, reason
    return item


def _iter_items(root: Path, organ: str) -> Iterator[SourceItem]:
    files = walk_files(root)
    cases: dict[tuple[Path, str], dict[str, Path]] = defaultdict(dict)
    strays: list[Path] = []
    for f in filter(is_image_file, files):
        if match := _IMAGE_NAME.match(f.stem):
            cases[(f.parent, match["case"])][_index(match["index"])] = f
        else:
            strays.append(f)
    for xml in (f for f in files if f.suffix.lower() == ".xml"):
        yield from _case_items(root, xml, cases.pop((xml.parent, xml.stem), {}), organ)
    # images without a case file, or not named N_k: no descriptors or outlines, but never silently dropped
    for (_, number), found in sorted(cases.items()):
        for k in sorted(found, key=_index_order):
            ref = found[k]
            yield SourceItem(
                source=KIND, source_ref=ref.as_posix(), organ=organ, path=root / ref, patient_id=f"ddti-{number}"
            )
    for ref in strays:
        yield SourceItem(source=KIND, source_ref=ref.as_posix(), organ=organ, path=root / ref)
    # everything else under the root (not an image, not a case file) is accounted for, never skipped unseen
    for ref in files:
        if not is_image_file(ref) and ref.suffix.lower() != ".xml":
            yield SourceItem(source=KIND, source_ref=ref.as_posix(), organ=organ, error=unlisted_reason(root, ref))


SOURCE = SourceAdapter(KIND, iter_ddti_items, preannotation_origins=("outline",))

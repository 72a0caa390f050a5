"""Cell parsers shared by the tabular sources (manifest, Hugging Face): boxes, attributes, confidence and
per-reader labels as a row's cells carry them, and the lesion annotations they make. A cell that cannot be
read raises `RowError` with the reason the item is quarantined for."""

from __future__ import annotations

import json
import math
import numbers
from typing import Any

import numpy as np

from schemas.vocabulary import VocabularyError, load_vocabulary

ROW_UNPARSEABLE = "manifest_row_unparseable"
BOX_MALFORMED = "box_malformed"


class RowError(ValueError):
    """A cell that cannot be read; `reason` names the kind of problem."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedBoxError(RowError):
    """A box that is not four finite numbers."""

    def __init__(self) -> None:
        super().__init__(BOX_MALFORMED)


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

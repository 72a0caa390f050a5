"""Label Studio label configs and results for one organ, both derived from the organ vocabulary.

Why: the vocabulary YAML is the single source of attributes and values, so the labelling UI is
generated from it and can never drift from what the rest of the pipeline accepts. The server
stores any result it is sent (boxes outside the image, values the config does not offer: research
note §5), and the SDK's `LabelInterface` lets most of those through too, so every result we post or
read is checked here, with one snake_case reason per kind of problem, the way a curation check says
why it drops a record. Configs are read back through `LabelInterface`, never by matching tag strings.

Boxes cross this module in two frames: original pixels `[x1, y1, x2, y2]` (schemas.frames) on our
side, Label Studio percent `{x, y, width, height}` of the original image on the server's side.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

# the SDK raises these (not ValueError) from LabelInterface; they live in its `_legacy` module in 2.1.2
from label_studio_sdk._legacy.exceptions import (
    LabelStudioValidationErrorSentryIgnored,
    LabelStudioXMLSyntaxErrorSentryIgnored,
)
from label_studio_sdk.label_interface import LabelInterface
from label_studio_sdk.label_interface.control_tags import ControlTag

from schemas.frames import Box, percent_to_pixels, pixels_to_percent
from schemas.vocabulary import OrganVocabulary, load_vocabulary

IMAGE_NAME = "image"  # the object tag; task data carries the image URL under the same key
LESION_CONTROL = "lesion"
LESION_LABEL = "Lesion"
RECTANGLE_TYPE = "rectanglelabels"
CHOICES_TYPE = "choices"
RELATION_TYPE = "relation"

# A box under one original pixel on a side is a stray click in the editor, not a lesion outline.
MIN_BOX_SIDE_PX = 1.0
# Float slack for a box after the pixel → percent → pixel trip (at the image edge, or exactly one pixel wide).
PERCENT_TOLERANCE = 1e-6
PIXEL_TOLERANCE = 1e-6
ROTATION_TOLERANCE_DEG = 1e-6

# Why a result is not acceptable; the first seven and `no_lesion_box` are the brief's, the last three
# name problems that none of those describe truthfully.
VALUE_NOT_IN_VOCABULARY = "value_not_in_vocabulary"
BOX_ZERO_AREA = "box_zero_area"
BOX_OUTSIDE_IMAGE = "box_outside_image"
BOX_ROTATED = "box_rotated"
REQUIRED_ATTRIBUTE_MISSING = "required_attribute_missing"
UNKNOWN_CONTROL = "unknown_control"
CHOICE_WITHOUT_REGION = "choice_without_region"
NO_LESION_BOX = "no_lesion_box"
MULTIPLE_VALUES = "multiple_values"  # two answers to a single-choice attribute of one region
DUPLICATE_REGION_ID = "duplicate_region_id"  # two boxes with one id: their answers cannot be told apart
MALFORMED_ITEM = "malformed_item"  # missing or non-numeric fields, or anything else the SDK rejects
REASONS: tuple[str, ...] = (
    VALUE_NOT_IN_VOCABULARY,
    BOX_ZERO_AREA,
    BOX_OUTSIDE_IMAGE,
    BOX_ROTATED,
    REQUIRED_ATTRIBUTE_MISSING,
    UNKNOWN_CONTROL,
    CHOICE_WITHOUT_REGION,
    NO_LESION_BOX,
    MULTIPLE_VALUES,
    DUPLICATE_REGION_ID,
    MALFORMED_ITEM,
)

Reading = tuple[Sequence[float], Mapping[str, str]]  # (box in original pixels, attribute → value)


# --- config ---------------------------------------------------------------------------------------


def label_config(organ: str) -> str:
    """The Label Studio XML of one organ: a lesion box tool and one per-box single choice per attribute."""
    vocabulary = load_vocabulary(organ)
    view = ET.Element("View")
    ET.SubElement(view, "Image", name=IMAGE_NAME, value=f"${IMAGE_NAME}", zoom="true")
    lesion = ET.SubElement(view, "RectangleLabels", name=LESION_CONTROL, toName=IMAGE_NAME)
    ET.SubElement(lesion, "Label", value=LESION_LABEL)
    # perRegion: an image with two lesions gets answers per box; the panel shows only for the selected box
    per_box = ET.SubElement(view, "View", visibleWhen="region-selected")
    for name, attribute in vocabulary.attributes.items():
        if name in (IMAGE_NAME, LESION_CONTROL):
            raise ValueError(f"attribute {name!r} of organ {organ!r} clashes with a fixed tag name of the config")
        ET.SubElement(per_box, "Header", value=name.replace("_", " ").capitalize())
        choices = ET.SubElement(
            per_box,
            "Choices",
            name=name,
            toName=IMAGE_NAME,
            choice="single",
            perRegion="true",
            required="true" if attribute.required else "false",
        )
        for value in attribute.canonical_values:
            ET.SubElement(choices, "Choice", value=value)  # ElementTree escapes & < > " in attributes
    ET.indent(view)
    return ET.tostring(view, encoding="unicode")


def _parse_config(xml: str) -> LabelInterface:
    """The SDK's parse and validation, its own exception types turned into ValueError."""
    try:
        interface = LabelInterface(xml)
        interface.validate()
    except (LabelStudioXMLSyntaxErrorSentryIgnored, LabelStudioValidationErrorSentryIgnored) as exc:
        raise ValueError(f"label config rejected by the Label Studio SDK: {exc}") from exc
    return interface


def _controls(interface: LabelInterface) -> dict[str, ControlTag]:
    return {control.name: control for control in interface.controls or []}


def _structure_problems(interface: LabelInterface) -> list[str]:
    """What the SDK accepts but this pipeline cannot read: unknown tags, a missing box tool, global choices."""
    problems = []
    objects = {obj.name: obj.tag for obj in interface.objects or []}
    if objects != {IMAGE_NAME: "Image"}:
        problems.append(f"expected one Image object named {IMAGE_NAME!r}, found {objects}")
    controls = _controls(interface)
    lesion = controls.pop(LESION_CONTROL, None)
    if lesion is None or lesion.tag != "RectangleLabels" or list(lesion.labels or []) != [LESION_LABEL]:
        problems.append(f"expected RectangleLabels {LESION_CONTROL!r} with the single label {LESION_LABEL!r}")
    for control in [lesion, *controls.values()]:
        if control is not None and control.to_name != [IMAGE_NAME]:
            problems.append(f"control {control.name!r} must point at {IMAGE_NAME!r}, not {control.to_name}")
    for name, control in controls.items():
        if control.tag != "Choices":
            problems.append(f"control {name!r} is a {control.tag}; only Choices may describe a lesion")
        elif control.is_multiple_choice or control.attr.get("perRegion") != "true":
            problems.append(f"choices {name!r} must be single-choice and perRegion")
    return problems


def _vocabulary_problems(interface: LabelInterface, vocabulary: OrganVocabulary) -> list[str]:
    """Differences between the config's choices and the organ vocabulary (names, values, order, required)."""
    problems = []
    controls = _controls(interface)
    controls.pop(LESION_CONTROL, None)
    if list(controls) != list(vocabulary.attributes):
        problems.append(f"choices {list(controls)} differ from the {vocabulary.organ} attributes")
    for name, attribute in vocabulary.attributes.items():
        control = controls.get(name)
        if control is None:
            continue
        if list(control.labels or []) != attribute.canonical_values:
            problems.append(f"choices {name!r} offer {control.labels}, the vocabulary {attribute.canonical_values}")
        if control.is_output_required != attribute.required:
            problems.append(f"choices {name!r} have required={control.is_output_required}, vocabulary says otherwise")
    return problems


def validate_label_config(xml: str, *, organ: str | None = None) -> None:
    """ValueError unless the SDK accepts `xml` and it has our shape (and, given `organ`, its vocabulary)."""
    interface = _parse_config(xml)
    problems = _structure_problems(interface)
    if organ is not None:
        problems += _vocabulary_problems(interface, load_vocabulary(organ))
    if problems:
        raise ValueError("label config does not fit the pipeline: " + "; ".join(problems))


@cache
def label_interface(organ: str) -> LabelInterface:
    """The parsed, validated config of one organ (cached: results are checked against it one by one)."""
    xml = label_config(organ)
    validate_label_config(xml, organ=organ)
    return _parse_config(xml)


# --- result checks --------------------------------------------------------------------------------


def _finite_numbers(value: Mapping[str, Any], keys: Sequence[str]) -> bool:
    return all(
        isinstance(value.get(k), int | float) and not isinstance(value.get(k), bool) and math.isfinite(value[k])
        for k in keys
    )


def _box_reasons(item: Mapping[str, Any], lesion: ControlTag) -> list[str]:
    """Reasons a rectangle item is not a usable lesion box (geometry in percent, checked in pixels)."""
    value = item["value"]
    if not ({"x", "y", "width", "height"} <= value.keys() and _finite_numbers(value, ("x", "y", "width", "height"))):
        return [MALFORMED_ITEM]
    if not (_finite_numbers(item, ("original_width", "original_height")) and min(_image_size(item)) > 0):
        return [MALFORMED_ITEM]  # without the image size a percent box has no pixels
    reasons = []
    labels = value.get(RECTANGLE_TYPE)
    if not isinstance(labels, list) or not labels:
        reasons.append(MALFORMED_ITEM)
    elif not set(labels) <= set(lesion.labels or []):
        reasons.append(VALUE_NOT_IN_VOCABULARY)
    elif len(labels) > 1:
        reasons.append(MULTIPLE_VALUES)
    rotation = value.get("rotation") or 0
    if not _finite_numbers({"r": rotation}, ("r",)):
        reasons.append(MALFORMED_ITEM)
    elif min(rotation % 360, -rotation % 360) > ROTATION_TOLERANCE_DEG:
        reasons.append(BOX_ROTATED)  # an axis-aligned [x1, y1, x2, y2] cannot hold a turned box
    width, height = _image_size(item)
    min_side = MIN_BOX_SIDE_PX - PIXEL_TOLERANCE
    if value["width"] * width / 100 < min_side or value["height"] * height / 100 < min_side:
        reasons.append(BOX_ZERO_AREA)
    low, high = -PERCENT_TOLERANCE, 100 + PERCENT_TOLERANCE
    if min(value["x"], value["y"]) < low or max(value["x"] + value["width"], value["y"] + value["height"]) > high:
        reasons.append(BOX_OUTSIDE_IMAGE)
    return reasons


def _choice_reasons(item: Mapping[str, Any], control: ControlTag) -> list[str]:
    """Reasons a choices item's answer is not one canonical value of its attribute."""
    choices = item["value"].get(CHOICES_TYPE)
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        return [MALFORMED_ITEM]
    reasons = []
    if not set(choices) <= set(control.labels or []):
        reasons.append(VALUE_NOT_IN_VOCABULARY)
    if len(choices) > 1:
        reasons.append(MULTIPLE_VALUES)
    return reasons


def _image_size(item: Mapping[str, Any]) -> tuple[int, int]:
    return item["original_width"], item["original_height"]


def _control_of(item: Mapping[str, Any], controls: Mapping[str, ControlTag]) -> ControlTag | None:
    """The config control an item belongs to, if its name, target and type all match one."""
    name = item.get("from_name")
    control = controls.get(name) if isinstance(name, str) else None
    if control is None or item.get("to_name") not in control.to_name:
        return None
    return control if str(item.get("type", "")).lower() == control.tag.lower() else None


def validate_result(organ: str, result: Sequence[Any], *, require_attributes: bool = True) -> list[str]:
    """Why an annotation's `result` is not acceptable, each reason once in the order found; [] when it is.

    `require_attributes=False` checks a boxes-only result (a pre-annotation) without asking for answers.
    """
    interface = label_interface(organ)
    controls = _controls(interface)
    reasons: list[str] = []
    box_ids: list[str] = []
    answers: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))  # region id → attribute → count
    choice_items: list[Mapping[str, Any]] = []
    for item in result:
        if isinstance(item, Mapping) and item.get("type") == RELATION_TYPE:
            continue  # a link the reader drew between two boxes: it carries nothing we read
        if not isinstance(item, Mapping) or not isinstance(item.get("value"), Mapping):
            reasons.append(MALFORMED_ITEM)
            continue
        control = _control_of(item, controls)
        if control is None:
            reasons.append(UNKNOWN_CONTROL)
            continue
        if control.name == LESION_CONTROL:
            item_reasons = _box_reasons(item, control)
            if not isinstance(item.get("id"), str) or not item["id"]:
                item_reasons.append(MALFORMED_ITEM)  # without an id no answer can be attached to the box
            else:
                box_ids.append(item["id"])
        else:
            item_reasons = _choice_reasons(item, control)
            choice_items.append(item)
            if isinstance(item.get("id"), str) and item_reasons != [MALFORMED_ITEM] and item["value"][CHOICES_TYPE]:
                answers[item["id"]][control.name] += 1
        # the SDK as a backstop for whatever our own checks do not look at
        if not item_reasons and interface.validate_region(item, return_errors=True):
            item_reasons.append(MALFORMED_ITEM)
        reasons += item_reasons
    if not box_ids:
        reasons.append(NO_LESION_BOX)
    if len(set(box_ids)) < len(box_ids):
        reasons.append(DUPLICATE_REGION_ID)
    if any(item.get("id") not in box_ids for item in choice_items):
        reasons.append(CHOICE_WITHOUT_REGION)  # a whole-image answer, or one whose box was deleted
    if any(count > 1 for per_region in answers.values() for count in per_region.values()):
        reasons.append(MULTIPLE_VALUES)
    if require_attributes:
        required = [name for name, attribute in load_vocabulary(organ).attributes.items() if attribute.required]
        if any(not answers[box_id].get(name) for box_id in box_ids for name in required):
            reasons.append(REQUIRED_ATTRIBUTE_MISSING)
    return list(dict.fromkeys(reasons))


def _raise_if_invalid(organ: str, result: Sequence[Any], *, require_attributes: bool = True) -> None:
    if reasons := validate_result(organ, result, require_attributes=require_attributes):
        raise ValueError(f"{organ} result is not acceptable: {', '.join(reasons)}")


# --- readings ↔ results ---------------------------------------------------------------------------


def _region_id(index: int) -> str:
    # deterministic, so posting the same reading twice gives the same result (idempotent simulations)
    return f"lesion-{index}"


def _rectangle_item(region_id: str, box: Sequence[float], image_size: tuple[int, int]) -> dict[str, Any]:
    width, height = image_size
    return {
        "id": region_id,
        "from_name": LESION_CONTROL,
        "to_name": IMAGE_NAME,
        "type": RECTANGLE_TYPE,
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {**pixels_to_percent(box, width, height), "rotation": 0, RECTANGLE_TYPE: [LESION_LABEL]},
    }


def _choices_item(rectangle: Mapping[str, Any], attribute: str, value: str) -> dict[str, Any]:
    # per-region answers repeat their box's id and geometry, as the editor writes them
    geometry = {k: v for k, v in rectangle["value"].items() if k != RECTANGLE_TYPE}
    return {
        "id": rectangle["id"],
        "from_name": attribute,
        "to_name": IMAGE_NAME,
        "type": CHOICES_TYPE,
        "original_width": rectangle["original_width"],
        "original_height": rectangle["original_height"],
        "image_rotation": 0,
        "value": {**geometry, CHOICES_TYPE: [value]},
    }


def _canonical_attributes(vocabulary: OrganVocabulary, attributes: Mapping[str, str]) -> dict[str, str]:
    """Synonyms → canonical values, in vocabulary order; VocabularyError for anything unknown."""
    for name in attributes:
        vocabulary.attribute(name)
    return {name: vocabulary.normalize(name, attributes[name]) for name in vocabulary.attributes if name in attributes}


def result_from_reading(organ: str, lesions: Sequence[Reading], image_size: tuple[int, int]) -> list[dict[str, Any]]:
    """A Label Studio result (boxes + per-box answers) from original-pixel boxes; ValueError if unacceptable."""
    vocabulary = load_vocabulary(organ)
    result: list[dict[str, Any]] = []
    for index, (box, attributes) in enumerate(lesions):
        rectangle = _rectangle_item(_region_id(index), box, image_size)
        result.append(rectangle)
        for name, value in _canonical_attributes(vocabulary, attributes).items():
            result.append(_choices_item(rectangle, name, value))
    _raise_if_invalid(organ, result)
    return result


def prediction_result(
    organ: str, boxes: Sequence[Sequence[float]], image_size: tuple[int, int]
) -> list[dict[str, Any]]:
    """A boxes-only result for a pre-annotation: answers are left to the reader so they are not biased."""
    result = [_rectangle_item(_region_id(index), box, image_size) for index, box in enumerate(boxes)]
    _raise_if_invalid(organ, result, require_attributes=False)
    return result


def _pixel_box(item: Mapping[str, Any]) -> Box:
    """The item's box in original pixels, clamped to the image against percent round-off."""
    width, height = _image_size(item)
    value = item["value"]
    x1, y1, x2, y2 = percent_to_pixels(value["x"], value["y"], value["width"], value["height"], width, height)
    return [min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(x2, width), min(y2, height)]


def reading_from_result(organ: str, result: Sequence[Any]) -> list[dict[str, Any]]:
    """`[{lesion_index, box, attributes}]` from an acceptable result, boxes in original pixels ordered by x then y."""
    _raise_if_invalid(organ, result)
    boxes: dict[str, Box] = {}
    attributes: dict[str, dict[str, str]] = defaultdict(dict)
    for item in result:
        if item.get("type") == RECTANGLE_TYPE:
            boxes[item["id"]] = _pixel_box(item)
        elif item.get("type") == CHOICES_TYPE and item["value"][CHOICES_TYPE]:
            attributes[item["id"]][item["from_name"]] = item["value"][CHOICES_TYPE][0]
    ordered = sorted(boxes, key=lambda region_id: boxes[region_id])  # x1, then y1 (then x2, y2 for ties)
    vocabulary_order = list(load_vocabulary(organ).attributes)
    return [
        {
            "lesion_index": index,
            "box": boxes[region_id],
            "attributes": dict(sorted(attributes[region_id].items(), key=lambda kv: vocabulary_order.index(kv[0]))),
        }
        for index, region_id in enumerate(ordered)
    ]

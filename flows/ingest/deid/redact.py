"""De-identification of one image's pixels: cut to the scan area, find burned-in text, mask it, verify.

    cut    the source's ultrasound region (DICOM), or the scan area found from the pixels (anything else);
           outside it goes with the cut (header bands, side panels, corner labels)
    find   the OCR detector looks for text lines in what is left; only the lines it finds are read
    mask   every line found is inpainted (OpenCV Telea), whatever it says: measurements over the tissue are
           a shortcut for a model, names and dates are identifying
    verify the places that were masked are read again (a window around each line: nothing else changed);
           identifying text still there means the masking failed, and the image is quarantined
           (`burned_in_text_unredacted`) rather than stored

The policy (`BurnedInTextPolicy`) lets a site be stricter (`quarantine`: any text found quarantines the
image) or looser (`crop_only`: cut only, no OCR). What was done is returned as a `Deidentification` note
that the image record keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np
from PIL import Image

from flows.ingest.deid.marks import count_caliper_marks
from flows.ingest.deid.ocr import OCR_ENGINE, TextBox, text_reader
from flows.ingest.deid.scan_area import cut_to_scan_area, find_scan_area
from flows.ingest.deid.text_rules import identifying_kinds, is_measurement
from schemas.records import Deidentification

MASK_PADDING = 3  # pixels around a detected line: its box is tight and JPEG smears glyph edges
INPAINT_RADIUS = 3
MASK_ROUNDS = 2  # a second pass masks what the first one uncovered (a line hidden behind a longer one)
VERIFY_MARGIN = 32  # pixels around a masked line read again: a line's neighbours and what the mask missed


class BurnedInTextPolicy(StrEnum):
    mask = "mask"  # mask every text line found; quarantine if identifying text survives
    quarantine = "quarantine"  # stricter: any text found in the scan area quarantines the image
    crop_only = "crop_only"  # looser: cut to the scan area, no OCR (for sources known to be clean)


@dataclass
class Redacted:
    """The de-identified image and the offset of its cut, or the reason it cannot be used."""

    image: Image.Image | None
    offset: tuple[int, int] = (0, 0)
    note: Deidentification | None = None
    reason: str | None = None


def deidentify_pixels(
    image: Image.Image,
    *,
    us_region: list[int] | None,
    keep_boxes: list[tuple[float, float, float, float]],
    policy: BurnedInTextPolicy,
) -> Redacted:
    """Cut, find, mask and verify (see the module docstring); `keep_boxes` are lesion boxes the cut must keep."""
    if us_region is not None:
        x1, y1, x2, y2 = us_region
        cut, offset, scan_area = image.crop((x1, y1, x2, y2)), (x1, y1), "source_region"
    else:
        area = find_scan_area(image, keep_boxes)
        if area is None:
            return Redacted(None, reason="scan_area_not_found")
        cut, offset, scan_area = cut_to_scan_area(image, area), area.box[:2], "detected"
    if policy == BurnedInTextPolicy.crop_only:
        return Redacted(cut, offset, Deidentification(scan_area=scan_area, text_policy=policy.value))
    reader = text_reader()
    found = reader.find(cut, read=True)
    if found and policy == BurnedInTextPolicy.quarantine:
        return Redacted(None, reason="burned_in_text_found")
    kinds: set[str] = set()
    masked = 0
    measurement = False
    for _ in range(MASK_ROUNDS):
        if not found:
            break
        kinds |= {kind for line in found for kind in _line_kinds(line)}
        measurement |= any(line.text and is_measurement(line.text) for line in found)
        cut = mask_lines(cut, found)
        masked += len(found)
        # Only the masked places changed: read again around them (the rest was read already and had no text)
        found = find_near(cut, found)
    if any(line.text and identifying_kinds(line.text) for line in found):
        return Redacted(None, reason="burned_in_text_unredacted")
    calipers = count_caliper_marks(cut)
    note = Deidentification(
        scan_area=scan_area,
        text_policy=policy.value,
        text_lines_masked=masked,
        text_kinds=sorted(kinds),
        measurement_marks=measurement or calipers > 0,
        caliper_marks=calipers,
        ocr_engine=OCR_ENGINE,
    )
    return Redacted(cut, offset, note)


def _line_kinds(line: TextBox) -> set[str]:
    kinds = identifying_kinds(line.text or "")
    if line.text and is_measurement(line.text):
        kinds.add("measurement")
    return kinds or {"other"}


def find_near(image: Image.Image, lines: list[TextBox]) -> list[TextBox]:
    """Text lines found (and read) in a window around each of `lines`, in the image's coordinates."""
    reader = text_reader()
    found: dict[tuple[int, int, int, int], TextBox] = {}
    for line in lines:
        x1, y1, x2, y2 = line.box
        window = (
            max(0, x1 - VERIFY_MARGIN),
            max(0, y1 - VERIFY_MARGIN),
            min(image.width, x2 + VERIFY_MARGIN),
            min(image.height, y2 + VERIFY_MARGIN),
        )
        for near in reader.find(image.crop(window), read=True):
            a1, b1, a2, b2 = near.box
            box = (a1 + window[0], b1 + window[1], a2 + window[0], b2 + window[1])
            found[box] = TextBox(box, near.text, near.score)
    return list(found.values())


def mask_lines(image: Image.Image, lines: list[TextBox]) -> Image.Image:
    """The image with every line's (padded) box inpainted from its surroundings."""
    mask = np.zeros((image.height, image.width), dtype=np.uint8)
    for line in lines:
        x1, y1, x2, y2 = line.box
        mask[
            max(0, y1 - MASK_PADDING) : min(image.height, y2 + MASK_PADDING),
            max(0, x1 - MASK_PADDING) : min(image.width, x2 + MASK_PADDING),
        ] = 255
    pixels = np.asarray(image)
    filled = cv2.inpaint(np.ascontiguousarray(pixels), mask, INPAINT_RADIUS, cv2.INPAINT_TELEA)
    return Image.fromarray(filled, mode=image.mode)

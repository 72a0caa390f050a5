"""Where the ultrasound image is, found from the pixels when the source does not say (no DICOM region).

The scan area is the largest speckled component of the frame: speckle has a high local variance
everywhere inside the fan or rectangle, the display around it is flat (black, or a UI colour) and
its text and marks are thin. Colour-flow (Doppler) pixels count as scan too: a power-Doppler box is
flat colour, but it lies over the tissue. The component's convex hull is the scan area (a cyst or an anechoic
band inside it leaves a hole the hull closes); the image is cut to the hull's bounding box and the
pixels outside the hull are set to black, which removes corner labels and marks there without OCR.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

WORK_SIDE = 256  # the search runs on a copy this wide at most: the hull needs no finer detail
TEXTURE_THRESHOLD = 6.0  # local standard deviation (8-bit grey levels) above which a pixel is textured
TEXTURE_WINDOW = 5
# Text lines and thin marks are narrower than this (in work pixels) and vanish in the opening
THIN_STRUCTURE = 7
COLOUR_FLOW_CHROMA = 40.0  # max - min over RGB: grey B-mode has none, a Doppler overlay a lot
MIN_AREA_FRACTION = 0.15  # a component smaller than this share of the frame is not an ultrasound image
HULL_MARGIN = 2  # work pixels added around the hull so the fan's own edge is kept


@dataclass(frozen=True)
class ScanArea:
    """The cut (x1, y1, x2, y2) in the input's pixels and the hull mask inside the cut (True = scan)."""

    box: tuple[int, int, int, int]
    inside: np.ndarray  # bool, shape (y2 - y1, x2 - x1)

    @property
    def covers_whole_frame(self) -> bool:
        return bool(self.inside.all())


def find_scan_area(image: Image.Image, keep: list[tuple[float, float, float, float]] | None = None) -> ScanArea | None:
    """The scan area of `image`, or None when no speckled component is large enough.

    `keep` are boxes (source annotations) that must stay inside the cut: a lesion is tissue by definition.
    """
    gray = np.asarray(image.convert("L"), dtype=np.float32)
    height, width = gray.shape
    scale = min(1.0, WORK_SIDE / max(height, width))
    work_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(gray, work_size, interpolation=cv2.INTER_AREA)
    mean = cv2.blur(small, (TEXTURE_WINDOW, TEXTURE_WINDOW))
    variance = cv2.blur(small * small, (TEXTURE_WINDOW, TEXTURE_WINDOW)) - mean * mean
    scan = np.sqrt(np.maximum(variance, 0)) > TEXTURE_THRESHOLD
    if image.mode == "RGB":
        pixels = np.asarray(image, dtype=np.int16)
        chroma = (pixels.max(axis=2) - pixels.min(axis=2)).astype(np.float32)
        scan |= cv2.resize(chroma, work_size, interpolation=cv2.INTER_AREA) > COLOUR_FLOW_CHROMA
    textured = scan.astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (THIN_STRUCTURE, THIN_STRUCTURE))
    solid = cv2.morphologyEx(textured, cv2.MORPH_OPEN, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(solid, connectivity=8)
    if count < 2:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[largest, cv2.CC_STAT_AREA] < MIN_AREA_FRACTION * small.size:
        return None
    points = cv2.findNonZero((labels == largest).astype(np.uint8))
    hull = cv2.convexHull(points)
    hull_small = np.zeros_like(solid)
    cv2.fillConvexPoly(hull_small, hull, 1)
    hull_small = cv2.dilate(hull_small, np.ones((2 * HULL_MARGIN + 1, 2 * HULL_MARGIN + 1), np.uint8))
    inside_full = cv2.resize(hull_small, (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
    for x1, y1, x2, y2 in keep or []:
        inside_full[max(0, int(y1)) : int(np.ceil(y2)), max(0, int(x1)) : int(np.ceil(x2))] = True
    ys, xs = np.nonzero(inside_full)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return ScanArea(box=box, inside=inside_full[box[1] : box[3], box[0] : box[2]])


def cut_to_scan_area(image: Image.Image, area: ScanArea) -> Image.Image:
    """The image cut to the area's box, black outside the hull."""
    cut = np.asarray(image.crop(area.box)).copy()
    cut[~area.inside] = 0
    return Image.fromarray(cut, mode=image.mode)

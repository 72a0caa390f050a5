"""Masks and outlines → lesion boxes (original pixels), shared by the mask-based adapters."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

MIN_LESION_PIXELS = 16  # smaller components are annotation specks, not lesions


class MaskError(ValueError):
    """A mask that cannot be used; the message is the quarantine reason."""


def boxes_from_mask(mask: Image.Image | np.ndarray, image_size: tuple[int, int]) -> list[list[float]]:
    """One `[x1, y1, x2, y2]` per connected lesion (8-connectivity), ordered left to right.

    An empty mask gives no boxes (a normal case); a mask of another size than the image raises
    MaskError("mask_size_mismatch").
    """
    array = np.asarray(mask.convert("L") if isinstance(mask, Image.Image) else mask)
    if array.ndim == 3:
        array = array.max(axis=2)
    if (array.shape[1], array.shape[0]) != tuple(image_size):
        raise MaskError("mask_size_mismatch")
    lesion = array > (127 if array.max() > 1 else 0)  # 0/255 PNG or JPEG masks, or 0/1 arrays
    labels, _ = ndimage.label(lesion, np.ones((3, 3)))
    boxes = []
    for index, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None or (labels[found] == index).sum() < MIN_LESION_PIXELS:
            continue
        rows, cols = found
        boxes.append([float(cols.start), float(rows.start), float(cols.stop), float(rows.stop)])
    return sorted(boxes)


def box_from_polygon(points: Sequence[tuple[float, float]], image_size: tuple[int, int]) -> list[float]:
    """The bounding box of a polygon, clipped to the image; MaskError if it is degenerate."""
    if len(points) < 3:
        raise MaskError("degenerate_outline")
    xs, ys = zip(*points, strict=True)
    width, height = image_size
    box = [max(0.0, min(xs)), max(0.0, min(ys)), min(float(width), max(xs)), min(float(height), max(ys))]
    if box[2] <= box[0] or box[3] <= box[1]:
        raise MaskError("degenerate_outline")
    return [float(v) for v in box]

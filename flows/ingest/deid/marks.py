"""Caliper crosses: the '+' marks a sonographer places to measure a lesion.

Public breast sets are known to carry them, and a model learns that "calipers here" means "lesion
here" (a shortcut). They are not identifying, so they are not removed; their presence is recorded so a
release can report or exclude such images. Found with OpenCV morphology: thin bright strokes (they
vanish in a 3×3 opening, speckle grains do not) that have both a horizontal and a vertical arm.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

BRIGHT = 200  # marks are drawn near white (or in a saturated colour)
ARM = 7  # pixels of straight stroke each arm needs


def count_caliper_marks(image: Image.Image) -> int:
    """How many '+'-shaped thin bright marks the image shows."""
    pixels = np.asarray(image)
    if pixels.ndim == 3:
        chroma = pixels.max(axis=2).astype(np.int16) - pixels.min(axis=2)
        bright = (pixels.max(axis=2) >= BRIGHT) | (chroma > 100)
    else:
        bright = pixels >= BRIGHT
    bright = bright.astype(np.uint8)
    blobs = cv2.morphologyEx(bright, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    thin = bright & (1 - blobs)
    horizontal = cv2.morphologyEx(thin, cv2.MORPH_OPEN, np.ones((1, ARM), np.uint8))
    vertical = cv2.morphologyEx(thin, cv2.MORPH_OPEN, np.ones((ARM, 1), np.uint8))
    crossings = cv2.dilate(horizontal, np.ones((3, 3), np.uint8)) & cv2.dilate(vertical, np.ones((3, 3), np.uint8))
    count, _ = cv2.connectedComponents(crossings)
    return count - 1

"""The zoom crop (DESIGN §4): one function for the dataset's crop, the GRPO tool and evaluation.

It takes the stored model-frame image and a `bbox_2d` in that frame (possibly a model's sloppy
prediction) and returns the crop and the integer box that was cropped. Changing its behaviour is a
new dataset version, so `CROP_VERSION` goes into the dataset card.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image

from schemas.frames import model_size

CROP_VERSION = "crop-v1"
MIN_CROP_SIDE = 28  # one Qwen2.5-VL merged patch; smaller crops break the processor
MAX_CROP_ASPECT_RATIO = 100  # as DeepEyes / verl: a sliver carries no diagnostic content


class CropError(ValueError):
    """A box that cannot be turned into a usable crop."""


def crop_box(
    bbox_2d: Sequence[float], image_size: tuple[int, int], *, padding: float = 0.0
) -> tuple[int, int, int, int]:
    """The integer box `crop` cuts for `bbox_2d` on an image of `image_size` (W, H)."""
    if len(bbox_2d) != 4:
        raise CropError(f"bbox_2d {list(bbox_2d)} must have 4 numbers")
    coords = [float(v) for v in bbox_2d]
    if not all(math.isfinite(v) for v in coords):
        raise CropError(f"bbox_2d {list(bbox_2d)} has a non-finite coordinate")
    if padding < 0:
        raise CropError(f"padding must be >= 0, got {padding}")
    width, height = image_size
    x1, x2 = sorted((coords[0], coords[2]))
    y1, y2 = sorted((coords[1], coords[3]))
    if padding:
        pad_x, pad_y = (x2 - x1) * padding, (y2 - y1) * padding
        x1, x2, y1, y2 = x1 - pad_x, x2 + pad_x, y1 - pad_y, y2 + pad_y
    left, right = _clamped_span(x1, x2, width)
    top, bottom = _clamped_span(y1, y2, height)
    short, long_ = sorted((right - left, bottom - top))
    if long_ / short > MAX_CROP_ASPECT_RATIO:
        raise CropError(
            f"bbox_2d {list(bbox_2d)} gives a {right - left}x{bottom - top} crop: "
            f"aspect ratio above {MAX_CROP_ASPECT_RATIO}"
        )
    return left, top, right, bottom


def _clamped_span(lo: float, hi: float, limit: int) -> tuple[int, int]:
    """Integer [lo, hi) inside [0, limit], grown around its centre to at least MIN_CROP_SIDE."""
    lo, hi = min(max(lo, 0.0), limit), min(max(hi, 0.0), limit)
    start, end = math.floor(lo), math.ceil(hi)
    side = min(MIN_CROP_SIDE, limit)
    if end - start < side:
        centre = (lo + hi) / 2
        start = math.floor(centre - side / 2)
        start = min(max(start, 0), limit - side)  # shift inward at the image border
        end = start + side
    return start, end


def crop(image: Image.Image, bbox_2d: Sequence[float], *, padding: float = 0.0) -> tuple[Image.Image, list[int]]:
    """Zoom into `bbox_2d` (model frame): clamp, sort, grow to ≥ 28 px, reject aspect > 100, pad."""
    box = crop_box(bbox_2d, image.size, padding=padding)
    return image.crop(box), list(box)


def model_frame_image(image: Image.Image, *, min_pixels: int, max_pixels: int) -> Image.Image:
    """The image resized to the model frame (`smart_resize`): the processor's own resize is then the identity.

    Grayscale stays grayscale (B-mode is; a third of the bytes, and processors convert to RGB on load);
    every other mode becomes RGB.
    """
    size = model_size(image.width, image.height, min_pixels, max_pixels)
    frame = image if image.mode in ("L", "RGB") else image.convert("RGB")
    return frame if frame.size == size else frame.resize(size, Image.Resampling.BICUBIC)

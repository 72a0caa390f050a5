"""Coordinate frames (DESIGN §4): original pixels, Qwen2.5-VL model frame, Label Studio percent.

Every stored box is `[x1, y1, x2, y2]` in absolute pixels of the ingested (original) image with
`0 <= x1 < x2 <= W`. The model frame is the image after `smart_resize`; `bbox_2d` in a trajectory
is in that frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Box = list[float]

# Qwen2.5-VL: patch 14 × spatial merge 2. The pixel budget defaults are the Qwen2.5-VL-7B
# preprocessor_config.json values; a dataset version may record others.
PATCH_FACTOR = 28
DEFAULT_MIN_PIXELS = 4 * 28 * 28
DEFAULT_MAX_PIXELS = 16384 * 28 * 28
MAX_ASPECT_RATIO = 200  # smart_resize refuses anything more elongated


def smart_resize(
    height: int,
    width: int,
    factor: int = PATCH_FACTOR,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[int, int]:
    """(H', W') the model sees; the same maths as transformers' qwen2_vl `smart_resize` (5.23)."""
    aspect = max(height, width) / min(height, width)
    if aspect > MAX_ASPECT_RATIO:
        raise ValueError(f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, got {aspect}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def model_size(
    width: int, height: int, min_pixels: int = DEFAULT_MIN_PIXELS, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[int, int]:
    """(W', H') of the model frame for an original image of (W, H): width first, like PIL."""
    h2, w2 = smart_resize(height, width, PATCH_FACTOR, min_pixels, max_pixels)
    return w2, h2


def validate_box(box: Sequence[float], width: int, height: int) -> Box:
    """The box as a list if `0 <= x1 < x2 <= W` and `0 <= y1 < y2 <= H`, else ValueError naming both."""
    if len(box) != 4:
        raise ValueError(f"box {list(box)} must have 4 numbers [x1, y1, x2, y2] (image {width}x{height})")
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ValueError(f"box {list(box)} has a non-finite coordinate (image {width}x{height})")
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"box {list(box)} is empty or inverted: needs x1 < x2 and y1 < y2 (image {width}x{height})")
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise ValueError(f"box {list(box)} lies outside the image {width}x{height}")
    return [x1, y1, x2, y2]


def scale_box(box: Sequence[float], from_size: tuple[int, int], to_size: tuple[int, int]) -> Box:
    """Scale a box between two frames of the same image, sizes given as (W, H)."""
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    x1, y1, x2, y2 = box
    return [x1 * sx, y1 * sy, x2 * sx, y2 * sy]


def to_model_box(box: Sequence[float], orig_size: tuple[int, int], model_frame: tuple[int, int]) -> list[int]:
    """Original-pixel box → integer `bbox_2d` in the model frame, inside it and never empty."""
    w, h = orig_size
    validate_box(box, w, h)
    scaled = scale_box(box, orig_size, model_frame)
    x1, y1, x2, y2 = (round(v) for v in scaled)
    # rounding can collapse a box thinner than one model pixel: keep the pixel it starts in
    # (within one model pixel of the original edges, and inside the frame since x1 < W)
    if x2 <= x1:
        x1 = math.floor(scaled[0])
        x2 = x1 + 1
    if y2 <= y1:
        y1 = math.floor(scaled[1])
        y2 = y1 + 1
    return [x1, y1, x2, y2]


def to_original_box(bbox_2d: Sequence[float], orig_size: tuple[int, int], model_frame: tuple[int, int]) -> Box:
    """Model-frame box → original pixels (no clamping: validate or crop decides what to do)."""
    return scale_box(bbox_2d, model_frame, orig_size)


def percent_to_pixels(
    x: float, y: float, width: float, height: float, original_width: int, original_height: int
) -> Box:
    """Label Studio rectangle (percent of the image, top-left + size) → original-pixel box."""
    sx, sy = original_width / 100.0, original_height / 100.0
    return [x * sx, y * sy, (x + width) * sx, (y + height) * sy]


def pixels_to_percent(box: Sequence[float], original_width: int, original_height: int) -> dict[str, float]:
    """Original-pixel box → Label Studio rectangle value `{x, y, width, height}` in percent."""
    x1, y1, x2, y2 = validate_box(box, original_width, original_height)
    return {
        "x": 100.0 * x1 / original_width,
        "y": 100.0 * y1 / original_height,
        "width": 100.0 * (x2 - x1) / original_width,
        "height": 100.0 * (y2 - y1) / original_height,
    }


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two `[x1, y1, x2, y2]` boxes (0 when either is empty)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0

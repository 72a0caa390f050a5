"""Defensive image decoding: every way a file can be bad ends in a snake_case reason, never a crash.

Decoded images come out in one of two declared modes: "L" (grayscale) or "RGB". EXIF orientation is
applied; 16-bit grayscale is windowed to 8 bits (1st–99th percentile); alpha is composited on black;
palette and CMYK are converted.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = 64_000_000  # above this a header is lying or the image is not an ultrasound frame
MIN_SIDE = 28  # one Qwen2.5-VL merged patch
MIN_PIXEL_STD = 2.0  # below this the image is (near-)constant: blank, black or a test pattern
MAX_FILE_BYTES = 512 * 1024 * 1024


class DecodeError(Exception):
    """The file cannot become an image; `reason` is the quarantine reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def to_declared_mode(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to "L" or "RGB" (windowing deep grayscale, flattening alpha)."""
    if image.mode in ("L", "RGB"):
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return window_to_8bit(np.asarray(image, dtype=np.float64))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("1", "P"):
        converted = image.convert("RGB")
        return converted.convert("L") if _is_gray(converted) else converted
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def window_to_8bit(pixels: np.ndarray) -> Image.Image:
    """Deep grayscale → 8 bits by a 1st–99th percentile window (robust to a few hot pixels)."""
    low, high = np.percentile(pixels, (1, 99))
    if high <= low:
        high = low + 1
    scaled = np.clip((pixels - low) / (high - low) * 255.0, 0, 255)
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def _is_gray(image: Image.Image) -> bool:
    array = np.asarray(image)
    return bool(np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 1], array[..., 2]))


def check_degenerate(image: Image.Image) -> str | None:
    """A reason if the decoded image cannot carry a lesion: too small or (near-)constant."""
    if min(image.size) < MIN_SIDE:
        return "image_too_small"
    gray = np.asarray(image.convert("L"))[::2, ::2]  # every 4th pixel is plenty to tell a blank frame
    if float(gray.std(dtype=np.float64)) < MIN_PIXEL_STD:
        return "near_constant_image"
    return None


def decode_image_file(path: Path) -> Image.Image:
    """Open, verify and fully decode an image file; DecodeError(reason) on any problem."""
    try:
        size = path.stat().st_size
    except OSError:
        raise DecodeError("file_unreadable") from None
    if size == 0:
        raise DecodeError("empty_file")
    if size > MAX_FILE_BYTES:
        raise DecodeError("file_too_large")
    return _decode(lambda: path)


def decode_image_bytes(data: bytes) -> Image.Image:
    """Encoded image bytes (a dataset cell, an upload) → an "L"/"RGB" image, as `decode_image_file`."""
    if not data:
        raise DecodeError("empty_file")
    if len(data) > MAX_FILE_BYTES:
        raise DecodeError("file_too_large")
    return _decode(lambda: io.BytesIO(data))


def _decode(source: Callable[[], Path | IO[bytes]]) -> Image.Image:
    """Verify, then decode (PIL cannot decode after verify); every failure becomes a reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source()) as probe:
                if probe.width * probe.height > MAX_IMAGE_PIXELS:
                    raise DecodeError("decompression_bomb")
                probe.verify()  # structure and checksums, without decoding all pixels
            with Image.open(source()) as image:
                image.load()
                oriented = ImageOps.exif_transpose(image)
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DecodeError("decompression_bomb") from None
    except UnidentifiedImageError:
        raise DecodeError("not_an_image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        log.debug("decode failed: %s", type(err).__name__)  # the message may quote the file name
        raise DecodeError("corrupt_image") from None
    except Exception as err:
        log.warning("decode failed with %s", type(err).__name__)  # the class only: the message may quote the file
        raise DecodeError("decode_failed") from None
    try:
        return to_declared_mode(oriented)
    except Exception as err:
        log.warning("mode conversion failed with %s", type(err).__name__)
        raise DecodeError("decode_failed") from None

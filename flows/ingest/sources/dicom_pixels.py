"""DICOM pixels → a PIL image: one frame decoded by pydicom's decoders, then windowed (monochrome), palette
looked up or colour converted to 8-bit "L" or "RGB". A frame that cannot be decoded or converted raises
`RejectedError` with the quarantine reason; pydicom's messages (they quote tag values) are never logged."""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, convert_color_space, get_decoder

from flows.ingest.decode import window_to_8bit

log = logging.getLogger(__name__)


class RejectedError(Exception):
    """The file or frame cannot become an item; `reason` is the quarantine reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_frame(dataset: Dataset, index: int) -> Image.Image:
    """One frame as a PIL image in mode "L" or "RGB"."""
    decoder = get_decoder(dataset.file_meta.TransferSyntaxUID)
    try:
        # as_rgb (the default) turns YBR_FULL / YBR_FULL_422 into RGB for every transfer syntax and
        # reports it in `changes`, so the colour space is taken from there, never converted twice.
        pixels, changes = decoder.as_array(dataset, index=index)
    except Exception as err:
        log.debug("dicom frame not decoded: %s", type(err).__name__)
        raise RejectedError("dicom_decode_failed") from None
    photometric = str(changes.get("photometric_interpretation", dataset.get("PhotometricInterpretation", "")))
    bits_stored = int(changes.get("bits_stored", dataset.get("BitsStored", 8)))
    try:
        return _to_image(pixels, photometric, bits_stored, dataset)
    except RejectedError:
        raise
    except Exception as err:  # a LUT that does not fit its pixels, an odd array shape
        log.debug("dicom frame not converted: %s", type(err).__name__)
        raise RejectedError("dicom_decode_failed") from None


def _to_image(pixels: np.ndarray, photometric: str, bits_stored: int, dataset: Dataset) -> Image.Image:
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        gray = pixels if pixels.dtype == np.uint8 else np.asarray(window_to_8bit(pixels.astype(np.float64)))
        if photometric == "MONOCHROME1":  # 0 is white; inverting after the window equals inverting before
            gray = 255 - gray
        return Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8), mode="L")
    if photometric == "PALETTE COLOR":
        return Image.fromarray(_lut_to_8bit(apply_color_lut(pixels, dataset)[..., :3]), mode="RGB")
    if photometric in ("YBR_FULL", "YBR_FULL_422"):  # only if a decoder left it in YCbCr
        pixels = convert_color_space(pixels, photometric, "RGB")
        photometric = "RGB"
    if photometric == "RGB":
        if pixels.dtype != np.uint8:
            pixels = np.clip(pixels.astype(np.float64) * 255.0 / (2**bits_stored - 1), 0, 255).round()
        return Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), mode="RGB")
    raise RejectedError("unsupported_photometric_interpretation")


def _lut_to_8bit(rgb: np.ndarray) -> np.ndarray:
    """Palette output is 8 or 16 bits per entry; some 16-bit LUTs hold 8-bit values, so scale only if needed."""
    if rgb.dtype == np.uint8 or int(rgb.max(initial=0)) <= 255:
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    return np.ascontiguousarray(np.round(rgb.astype(np.float64) / 257.0), dtype=np.uint8)

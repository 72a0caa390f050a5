"""DICOM pixels → a PIL image: one frame decoded by pydicom's decoders, then windowed (monochrome), palette
looked up or colour converted to 8-bit "L" or "RGB". A frame that cannot be decoded or converted raises
`RejectedError` with the quarantine reason; pydicom's messages (they quote tag values) are never logged.

Before any pixel is decoded, `pixel_budget` sizes the pixel data from the header alone and refuses a frame
above `MAX_IMAGE_PIXELS` (the limit every other format has) or native pixel data above
`MAX_DICOM_TOTAL_PIXELS`, and `frames_in_pixel_data` counts the frames the pixel data really holds, so a
header cannot make the adapter decode, or count, frames that are not there."""

from __future__ import annotations

import logging
from io import BytesIO

import numpy as np
from PIL import Image
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import parse_basic_offsets, parse_fragments
from pydicom.pixels import apply_color_lut, convert_color_space, get_decoder
from pydicom.uid import UID

from flows.ingest.decode import MAX_IMAGE_PIXELS, window_to_8bit

log = logging.getLogger(__name__)


class RejectedError(Exception):
    """The file or frame cannot become an item; `reason` is the quarantine reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Native (uncompressed, deflated or big endian) pixel data is held whole in memory once its value is read,
# and indexing a frame of it goes through that whole buffer; encapsulated pixel data is decoded one frame at
# a time (pydicom's `index=`), so only its frame size matters. Four MAX_IMAGE_PIXELS frames' worth (about
# 256 million pixels: a 300-frame 1024 × 768 cine loop, up to 768 MB as RGB) bounds what one file may hold;
# above it a header is lying or the file is not an ultrasound loop this pipeline can afford to read.
MAX_DICOM_TOTAL_PIXELS = 4 * MAX_IMAGE_PIXELS
_UNDEFINED_LENGTH = 0xFFFFFFFF


def pixel_budget(dataset: Dataset, transfer_syntax: str, frames_in_header: int) -> None:
    """RejectedError("decompression_bomb") when the header asks for more pixels than may be decoded or held.

    Reads the header and the pixel data element's length only: no pixel is decoded, no deferred value read."""
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    if rows < 1 or columns < 1:
        raise RejectedError("dicom_decode_failed")
    frame_pixels = rows * columns
    if frame_pixels > MAX_IMAGE_PIXELS:
        raise RejectedError("decompression_bomb")
    if UID(transfer_syntax).is_encapsulated:
        return  # decoded frame by frame: the frame cap above is the bound
    # Native: the whole array is in memory; the header count and what the element's length could hold both count.
    frames = max(frames_in_header, _native_frames(dataset, frame_pixels))
    if frame_pixels * frames > MAX_DICOM_TOTAL_PIXELS:
        raise RejectedError("decompression_bomb")


def frames_in_pixel_data(dataset: Dataset, transfer_syntax: str, frames_in_header: int) -> int:
    """How many frames the pixel data holds, whatever NumberOfFrames says.

    Native: the element's length over one frame's length (a trailing padding byte makes no frame).
    Encapsulated: the Extended Offset Table's entries, else the Basic Offset Table's, else the fragments,
    since a fragment never holds data of two frames (PS3.5 A.4); with more fragments than the header's
    frames and no offset table a frame may span several fragments, so the header's count is the answer."""
    if not UID(transfer_syntax).is_encapsulated:
        return _native_frames(dataset, int(dataset.Rows) * int(dataset.Columns))
    extended = dataset.get("ExtendedOffsetTable")
    if extended is not None:
        return len(extended) // 8  # one 64-bit offset per frame
    buffer = BytesIO(dataset.PixelData)
    offsets = parse_basic_offsets(buffer)
    if offsets:
        return len(offsets)
    fragments, _ = parse_fragments(buffer)
    return min(fragments, frames_in_header)


def _native_frames(dataset: Dataset, frame_pixels: int) -> int:
    """Whole frames in native pixel data, from the element's length (a deferred value is not read)."""
    element = dataset.get_item("PixelData", keep_deferred=True)
    if isinstance(element, RawDataElement):
        length = element.length if element.value is None else len(element.value)
    else:
        length = len(element.value or b"")
    if length == _UNDEFINED_LENGTH:
        raise RejectedError("dicom_decode_failed")  # encapsulated data under a native transfer syntax
    frame_bits = frame_pixels * int(dataset.get("SamplesPerPixel") or 1) * int(dataset.BitsAllocated)
    if str(dataset.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
        frame_bits = frame_bits * 2 // 3  # two luma samples share one Cb and one Cr (PS3.3 C.7.6.3.1.2)
    if frame_bits < 1:
        raise RejectedError("dicom_decode_failed")
    return length * 8 // frame_bits


def decode_frame(dataset: Dataset, index: int) -> Image.Image:
    """One frame as a PIL image in mode "L" or "RGB"."""
    if int(dataset.Rows) * int(dataset.Columns) > MAX_IMAGE_PIXELS:  # `pixel_budget` ran first; this is a backstop
        raise RejectedError("decompression_bomb")
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

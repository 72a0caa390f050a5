"""Synthetic DICOM files for the DICOM adapter tests, built with pydicom (no sample data to download).

Every helper builds a small ultrasound-like dataset whose pixels the tests know exactly, so a test can
compare what the adapter decodes with what was written.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite
from pydicom.pixels import convert_color_space
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

ROWS, COLUMNS = 64, 96

# Ten identifying tags with distinctive values: none may be found in what the adapter hands over.
PHI_TAGS: dict[str, str] = {
    "PatientName": "ZZSMITH^JOHN",
    "PatientID": "ZZ-ID-778899",
    "PatientBirthDate": "19450203",
    "InstitutionName": "ZZ GENERAL HOSPITAL",
    "ReferringPhysicianName": "ZZDOCTOR^ALICE",
    "OperatorsName": "ZZSONO^BOB",
    "StudyDescription": "ZZ LEFT BREAST LUMP FOLLOW UP",
    "AccessionNumber": "ZZACC4242",
    "InstitutionAddress": "ZZ 12 ELM STREET SPRINGFIELD",
    "OtherPatientIDs": "ZZ-OTHER-556677",
}


def gray_pattern(rows: int = ROWS, columns: int = COLUMNS, offset: int = 0) -> np.ndarray:
    """A uint8 diagonal ramp (far from constant); `offset` makes frames of a cine loop differ."""
    y, x = np.mgrid[0:rows, 0:columns]
    return ((x * 2 + y + offset) % 256).astype(np.uint8)


def color_pattern(rows: int = ROWS, columns: int = COLUMNS) -> np.ndarray:
    """A smooth uint8 RGB image: red ramps left to right, blue top to bottom (smooth so JPEG keeps it)."""
    y, x = np.mgrid[0:rows, 0:columns]
    rgb = np.zeros((rows, columns, 3), dtype=np.uint8)
    rgb[..., 0] = (x * 255 // (columns - 1)).astype(np.uint8)
    rgb[..., 1] = 120
    rgb[..., 2] = (y * 255 // (rows - 1)).astype(np.uint8)
    return rgb


def ultrasound_dataset(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    body_part: str | None = "BREAST",
    **tags: Any,
) -> Dataset:
    """An uncompressed US dataset holding `pixels` ((frames,) rows, columns(, 3)), plus any extra tags."""
    color = photometric in ("RGB", "YBR_FULL", "YBR_FULL_422")
    multi_frame = pixels.ndim == (4 if color else 3)
    bits_allocated = pixels.dtype.itemsize * 8
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage if multi_frame else UltrasoundImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns = pixels.shape[1:3] if multi_frame else pixels.shape[:2]
    if multi_frame:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel = 3 if color else 1
    if color:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored or bits_allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if photometric == "YBR_FULL_422":
        ds.PixelData = _ybr_full_422_bytes(pixels)
    elif photometric == "YBR_FULL":
        ds.PixelData = convert_color_space(pixels, "RGB", "YBR_FULL").tobytes()
    else:
        ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW" if bits_allocated > 8 else "OB"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scanners write invalid values (a lower-case code string): so may tests
        if body_part is not None:
            ds.BodyPartExamined = body_part
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
    return ds


def _ybr_full_422_bytes(rgb: np.ndarray) -> bytes:
    """Native YBR_FULL_422 from RGB: per pixel pair Y0 Y1 Cb Cr, chroma averaged over the pair."""
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL").astype(np.uint16)
    luma = ybr[..., 0].reshape(*ybr.shape[:-2], -1, 2)
    chroma = (ybr[..., 0::2, 1:] + ybr[..., 1::2, 1:] + 1) // 2
    return np.concatenate([luma, chroma], axis=-1).astype(np.uint8).tobytes()


def palette_dataset(indices: np.ndarray, lut: np.ndarray) -> Dataset:
    """PALETTE COLOR: uint8 `indices` into `lut` (256 × 3, uint16 entries of 16 bits)."""
    ds = ultrasound_dataset(indices, photometric="PALETTE COLOR")
    for channel, colour in enumerate(("Red", "Green", "Blue")):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [len(lut), 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", lut[:, channel].astype("<u2").tobytes())
        ds[f"{colour}PaletteColorLookupTableData"].VR = "OW"
    return ds


def jpeg_baseline_dataset(rgb: np.ndarray) -> Dataset:
    """JPEG Baseline (the usual compressed ultrasound syntax), encoded by Pillow as YCbCr 4:2:2."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=95, subsampling=1)  # 1 = 4:2:2
    ds = ultrasound_dataset(rgb, photometric="RGB")
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    return ds


def ultrasound_region(
    box: tuple[int, int, int, int], *, spatial_format: int = 1, delta_cm: tuple[float, float] = (0.01, 0.02)
) -> Dataset:
    """One item of SequenceOfUltrasoundRegions; `box` is (x0, y0, x1, y1) with inclusive maxima, as in DICOM."""
    region = Dataset()
    region.RegionSpatialFormat = spatial_format
    region.RegionDataType = 1  # tissue
    region.RegionFlags = 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = box[0], box[1]
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = box[2], box[3]
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
    region.PhysicalDeltaX, region.PhysicalDeltaY = delta_cm
    return region


def with_regions(ds: Dataset, *regions: Dataset) -> Dataset:
    ds.SequenceOfUltrasoundRegions = Sequence(list(regions))
    return ds


def write(ds: Dataset, path: Path, *, preamble: bool = True) -> Path:
    """Write `ds` as a Part 10 file, or (preamble=False) as a bare dataset like old exports."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:
        bare = ds.copy()
        bare.file_meta = FileMetaDataset()
        bare.preamble = None
        dcmwrite(path, bare, implicit_vr=True, little_endian=True)
    return path

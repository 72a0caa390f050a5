"""DICOM adapter: photometric interpretations, transfer syntaxes, cine frames, regions, reasons, PHI."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import (
    MPEG2MPML,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEG2000Lossless,
    MediaStorageDirectoryStorage,
    RLELossless,
)

from flows.ingest.sources.base import SourceItem
from flows.ingest.sources.dicom import REASONS, iter_dicom_items
from tests.dicom_factory import (
    PHI_TAGS,
    color_pattern,
    gray_pattern,
    jpeg_baseline_dataset,
    palette_dataset,
    ultrasound_dataset,
    ultrasound_region,
    with_regions,
    write,
)


def _items(root: Path, **kwargs) -> list[SourceItem]:
    return list(iter_dicom_items(root, **kwargs))


def _only(root: Path, **kwargs) -> SourceItem:
    (item,) = _items(root, **kwargs)
    return item


def _pixels(item: SourceItem) -> np.ndarray:
    assert item.error is None and item.image is not None, item.error
    return np.asarray(item.image).astype(int)


# --------------------------------------------------------------------------- photometric interpretations
def test_monochrome2_decodes_exactly(tmp_path):
    item = _only(write(ultrasound_dataset(gray_pattern()), tmp_path / "a.dcm"))
    assert item.image.mode == "L" and item.image.size == (96, 64)
    assert np.array_equal(_pixels(item), gray_pattern())
    assert item.source == "dicom" and item.source_ref == "a.dcm" and item.organ == "breast"


def test_monochrome1_is_inverted(tmp_path):
    item = _only(write(ultrasound_dataset(gray_pattern(), photometric="MONOCHROME1"), tmp_path / "a.dcm"))
    assert item.image.mode == "L"
    assert np.array_equal(_pixels(item), 255 - gray_pattern().astype(int))


def test_16_bit_grayscale_is_windowed_to_8_bits_keeping_the_order(tmp_path):
    deep = gray_pattern().astype(np.uint16) * 16  # 12 bits stored
    item = _only(write(ultrasound_dataset(deep, bits_stored=12), tmp_path / "a.dcm"))
    out = _pixels(item)
    assert item.image.mode == "L" and out.min() == 0 and out.max() == 255
    order = np.argsort(deep.ravel(), kind="stable")
    assert np.all(np.diff(out.ravel()[order]) >= 0)  # a monotone window, not a wrap-around cast


def test_rgb_decodes_exactly(tmp_path):
    item = _only(write(ultrasound_dataset(color_pattern(), photometric="RGB"), tmp_path / "a.dcm"))
    assert item.image.mode == "RGB"
    assert np.array_equal(_pixels(item), color_pattern())


@pytest.mark.parametrize(("photometric", "tolerance"), [("YBR_FULL", 2), ("YBR_FULL_422", 6)])
def test_ybr_is_converted_to_rgb_once(tmp_path, photometric, tolerance):
    item = _only(write(ultrasound_dataset(color_pattern(), photometric=photometric), tmp_path / "a.dcm"))
    assert item.image.mode == "RGB"
    assert np.abs(_pixels(item) - color_pattern()).max() <= tolerance  # twice converted would be far off
    assert item.metadata["photometric_interpretation"] == photometric


def test_palette_color_goes_through_its_lut(tmp_path):
    indices = gray_pattern()
    ramp = np.arange(256)
    lut = np.stack([ramp * 257, (255 - ramp) * 257, np.full(256, 40 * 257)], axis=1)  # 16-bit entries
    item = _only(write(palette_dataset(indices, lut), tmp_path / "a.dcm"))
    expected = np.stack([indices, 255 - indices.astype(int), np.full(indices.shape, 40)], axis=-1)
    assert item.image.mode == "RGB"
    assert np.array_equal(_pixels(item), expected)


# --------------------------------------------------------------------------- transfer syntaxes
@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "RGB"])
def test_lossless_compressed_syntaxes_decode_exactly(tmp_path, syntax, photometric):
    pixels = gray_pattern() if photometric == "MONOCHROME2" else color_pattern()
    ds = ultrasound_dataset(pixels, photometric=photometric)
    ds.compress(syntax, pixels)
    item = _only(write(ds, tmp_path / "a.dcm"))
    assert np.array_equal(_pixels(item), pixels)
    assert item.metadata["transfer_syntax_uid"] == syntax


def test_jpeg_baseline_ybr_full_422_decodes_close_to_the_source(tmp_path):
    item = _only(write(jpeg_baseline_dataset(color_pattern()), tmp_path / "a.dcm"))
    diff = np.abs(_pixels(item) - color_pattern())
    assert item.image.mode == "RGB" and diff.mean() < 2 and diff.max() <= 12


@pytest.mark.parametrize("syntax", [DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian])
def test_other_native_syntaxes_decode(tmp_path, syntax):
    ds = ultrasound_dataset(gray_pattern().astype(np.uint16) * 16, bits_stored=12)
    ds.file_meta.TransferSyntaxUID = syntax
    item = _only(write(ds, tmp_path / "a.dcm"))
    assert item.metadata["transfer_syntax_uid"] == syntax
    assert np.corrcoef(_pixels(item).ravel(), gray_pattern().ravel())[0, 1] > 0.99


def test_a_dcm_file_without_preamble_is_read(tmp_path):
    item = _only(write(ultrasound_dataset(gray_pattern()), tmp_path / "old.dcm", preamble=False))
    assert np.array_equal(_pixels(item), gray_pattern())


def test_a_syntax_without_decoder_is_unsupported(tmp_path):
    ds = ultrasound_dataset(gray_pattern())
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(64)])
    assert _only(write(ds, tmp_path / "a.dcm")).error == "unsupported_transfer_syntax"


def test_corrupt_compressed_pixels_are_a_decode_failure(tmp_path):
    ds = ultrasound_dataset(gray_pattern())
    ds.compress(RLELossless, gray_pattern())
    ds.PixelData = encapsulate([b"\x01\x00\x00\x00" + bytes(60) + b"\xff" * 8])
    item = _only(write(ds, tmp_path / "a.dcm"))
    assert item.error == "dicom_decode_failed" and item.image is None


# --------------------------------------------------------------------------- cine loops
def _cine(tmp_path: Path, frames: int = 7) -> Path:
    stack = np.stack([gray_pattern(offset=40 * k) for k in range(frames)])
    return write(ultrasound_dataset(stack), tmp_path / "loops" / "cine.dcm")


@pytest.mark.parametrize(
    ("mode", "expected"), [("middle", [3]), ("first", [0]), ("all", list(range(7))), ("stride", [0, 3, 6])]
)
def test_cine_frames_and_their_refs(tmp_path, mode, expected):
    _cine(tmp_path)
    items = _items(tmp_path, frames=mode, frame_stride=3)
    assert [item.source_ref for item in items] == [f"loops/cine.dcm#frame={k}" for k in expected]
    for item, k in zip(items, expected, strict=True):
        assert np.array_equal(_pixels(item), gray_pattern(offset=40 * k))
        assert item.metadata["frame_index"] == k and item.metadata["number_of_frames"] == 7


def test_a_blank_cine_frame_is_quarantined(tmp_path):
    stack = np.stack([np.zeros_like(gray_pattern()), gray_pattern()])
    write(ultrasound_dataset(stack), tmp_path / "cine.dcm")
    items = _items(tmp_path, frames="all")
    assert [item.error for item in items] == ["near_constant_image", None]


# --------------------------------------------------------------------------- ultrasound regions
def test_largest_2d_region_becomes_us_region_and_gives_pixel_spacing(tmp_path):
    ds = with_regions(
        ultrasound_dataset(gray_pattern(), BurnedInAnnotation="YES"),
        ultrasound_region((0, 0, 20, 10)),
        ultrasound_region((4, 8, 80, 59), delta_cm=(0.012, 0.025)),
        ultrasound_region((0, 0, 95, 63), spatial_format=3),  # a Doppler spectrum: larger, but not 2D
    )
    item = _only(write(ds, tmp_path / "a.dcm"))
    assert item.us_region == [4, 8, 81, 60]  # DICOM maxima are inclusive
    assert item.metadata["pixel_spacing_mm"] == {"x": 0.12, "y": 0.25}


def test_a_region_past_the_image_is_clipped(tmp_path):
    ds = with_regions(ultrasound_dataset(gray_pattern()), ultrasound_region((10, 5, 500, 400)))
    assert _only(write(ds, tmp_path / "a.dcm")).us_region == [10, 5, 96, 64]


def test_pixel_spacing_falls_back_to_pixel_spacing_tag(tmp_path):
    item = _only(write(ultrasound_dataset(gray_pattern(), PixelSpacing=[0.3, 0.2]), tmp_path / "a.dcm"))
    assert item.us_region is None
    assert item.metadata["pixel_spacing_mm"] == {"x": 0.2, "y": 0.3}


def test_burned_in_text_without_region_is_quarantined_unless_allowed(tmp_path):
    path = write(ultrasound_dataset(gray_pattern(), BurnedInAnnotation="YES"), tmp_path / "a.dcm")
    item = _only(path)
    assert item.error == "burned_in_text_without_region" and item.image is None
    allowed = _only(path, require_us_region_when_burned_in=False)
    assert allowed.error is None and allowed.us_region is None


# --------------------------------------------------------------------------- reasons
def test_dicom_without_pixel_data(tmp_path):
    ds = ultrasound_dataset(gray_pattern())
    del ds.PixelData
    assert _only(write(ds, tmp_path / "report.dcm")).error == "dicom_without_pixel_data"


def test_non_dicom_files(tmp_path):
    (tmp_path / "fake.dcm").write_text("This is a README that someone named .dcm\n" * 5)
    (tmp_path / "broken").write_bytes(bytes(128) + b"DICM" + b"\xff" * 7)  # preamble, then garbage
    (tmp_path / "README.txt").write_text("export notes")
    (tmp_path / "thumb.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))
    items = _items(tmp_path)
    assert [(item.source_ref, item.error) for item in items] == [("broken", "not_dicom"), ("fake.dcm", "not_dicom")]
    assert all(item.image is None for item in items)


def test_a_dicom_file_without_extension_is_found(tmp_path):
    write(ultrasound_dataset(gray_pattern()), tmp_path / "DICOM" / "IMG0001")
    assert _only(tmp_path).source_ref == "DICOM/IMG0001"


@pytest.mark.parametrize(("body_part", "organ"), [("Breast", "breast"), ("ABDOMEN", "liver"), ("NECK", "thyroid")])
def test_organ_from_body_part_examined(tmp_path, body_part, organ):
    path = write(ultrasound_dataset(gray_pattern(), body_part=body_part), tmp_path / "a.dcm")
    assert _only(path).organ == organ


@pytest.mark.parametrize("body_part", ["HEART", None])
def test_unknown_organ_is_a_reason_and_the_argument_wins(tmp_path, body_part):
    path = write(ultrasound_dataset(gray_pattern(), body_part=body_part), tmp_path / "a.dcm")
    assert _only(path).error == "organ_unknown"
    assert _only(path, organ="liver").organ == "liver"


def test_every_reason_is_declared():
    assert len(set(REASONS)) == len(REASONS) and all(r == r.lower() and " " not in r for r in REASONS)


def test_bad_arguments_fail_at_the_call():
    with pytest.raises(ValueError, match="organ"):
        iter_dicom_items(Path("."), organ="heart")
    with pytest.raises(ValueError, match="frames"):
        iter_dicom_items(Path("."), frames="last")


# --------------------------------------------------------------------------- PHI
def test_no_identifying_tag_reaches_the_item(tmp_path):
    ds = with_regions(
        ultrasound_dataset(gray_pattern(), BurnedInAnnotation="YES", **PHI_TAGS), ultrasound_region((0, 10, 95, 63))
    )
    write(ds, tmp_path / "ZZSMITH JOHN" / "exam.dcm")
    item = _only(tmp_path)
    text = repr(item.metadata)
    leaked = [value for value in PHI_TAGS.values() if value in text or value.split("^")[0] in text]
    assert leaked == []
    assert item.source_ref == "ZZSMITH JOHN/exam.dcm"  # relative only: ingest hashes it
    assert item.patient_id == "ZZ-ID-778899"  # hashed with a salt by ingest, not here
    assert item.metadata == {
        "modality": "US",
        "body_part_examined": "BREAST",
        "number_of_frames": 1,
        "frame_index": 0,
        "photometric_interpretation": "MONOCHROME2",
        "transfer_syntax_uid": "1.2.840.10008.1.2.1",
        "pixel_spacing_mm": {"x": 0.1, "y": 0.2},
    }


def test_pydicom_says_nothing_while_the_adapter_reads(tmp_path, caplog):
    # pydicom's read-time validation messages can quote tag values; these two values make it talk.
    tags = {**PHI_TAGS, "PatientID": "ZZ" + "9" * 70, "PixelSpacing": [9.25, 0.2]}  # LO is at most 64 long
    path = write(ultrasound_dataset(gray_pattern(), **tags), tmp_path / "ZZSMITH" / "a.dcm")
    path.write_bytes(path.read_bytes().replace(b"9.25", b"nan "))  # an invalid DS, quoted when read
    (tmp_path / "ZZSMITH" / "b.dcm").write_text("not dicom")
    caplog.clear()  # building the file above may log; only the adapter is under test
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = _items(tmp_path)
    assert [item.error for item in items] == [None, "not_dicom"]
    assert items[0].metadata["pixel_spacing_mm"] is None  # an invalid spacing is dropped, the image kept
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in caplog.records if r.name.startswith(("pydicom", "pylibjpeg"))] == []
    messages = [record.getMessage() for record in caplog.records]
    assert messages  # the adapter logs counts, so the check below is not vacuous
    assert not [m for m in messages if "ZZ" in m or ".dcm" in m]


def test_a_body_part_that_is_not_a_code_string_is_dropped(tmp_path):
    path = write(ultrasound_dataset(gray_pattern(), body_part="zz secret part!"), tmp_path / "a.dcm")
    item = _only(path, organ="breast")
    assert item.error is None and item.metadata["body_part_examined"] is None


# --------------------------------------------------------------------------- walking
@pytest.mark.timeout(60)
def test_a_symlink_loop_does_not_hang_and_files_are_read_once(tmp_path):
    write(ultrasound_dataset(gray_pattern()), tmp_path / "sub" / "a.dcm")
    os.symlink(tmp_path, tmp_path / "sub" / "loop")
    assert [item.source_ref for item in _items(tmp_path)] == ["sub/a.dcm"]


def test_a_single_file_root(tmp_path):
    path = write(ultrasound_dataset(gray_pattern()), tmp_path / "deep" / "one.dcm")
    assert _only(path).source_ref == "one.dcm"


def test_a_dicomdir_is_skipped_and_a_dangling_link_is_unreadable(tmp_path):
    index = ultrasound_dataset(gray_pattern())
    del index.PixelData
    index.SOPClassUID = index.file_meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    write(index, tmp_path / "DICOMDIR")
    os.symlink(tmp_path / "missing.dcm", tmp_path / "gone.dcm")
    assert [(item.source_ref, item.error) for item in _items(tmp_path)] == [("gone.dcm", "file_unreadable")]

"""DICOM adapter limits (issue 19): pixel caps before decoding, the frame cap, frames counted in the pixel data,
allow-listed header values kept only when they are defined terms, and pydicom's ultrasound examples unchanged."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels.decoders.base import Decoder
from pydicom.uid import DeflatedExplicitVRLittleEndian, RLELossless

import flows.ingest.sources.dicom as dicom
import flows.ingest.sources.dicom_pixels as dicom_pixels
from flows.ingest.decode import MAX_IMAGE_PIXELS
from flows.ingest.sources.base import SourceItem
from flows.ingest.sources.dicom import MAX_FRAMES_PER_FILE, REASONS, iter_dicom_items
from flows.ingest.sources.dicom_pixels import RejectedError, decode_frame
from tests.dicom_factory import gray_pattern, ultrasound_dataset, write


def _items(root: Path, **kwargs) -> list[SourceItem]:
    return list(iter_dicom_items(root, **kwargs))


@pytest.fixture
def decode_calls(monkeypatch) -> list[str]:
    """Every pixel decode the adapter or pydicom attempts, recorded (the calls still go through)."""
    calls: list[str] = []
    adapter_decode, pydicom_as_array = dicom.decode_frame, Decoder.as_array

    def spy_decode_frame(*args, **kwargs):
        calls.append("decode_frame")
        return adapter_decode(*args, **kwargs)

    def spy_as_array(self, *args, **kwargs):
        calls.append("Decoder.as_array")
        return pydicom_as_array(self, *args, **kwargs)

    monkeypatch.setattr(dicom, "decode_frame", spy_decode_frame)
    monkeypatch.setattr(Decoder, "as_array", spy_as_array)
    return calls


def _cine(frames: int, rows: int = 64, columns: int = 96) -> np.ndarray:
    return np.stack([gray_pattern(rows, columns, offset=5 * k) for k in range(frames)])


def _ledger_consistent(items: list[SourceItem]) -> None:
    """The ledger keys items by `item_key`: every item must be its own row, counted once."""
    keys = [item.item_key for item in items]
    assert len(keys) == len(set(keys))


# --------------------------------------------------------------------------- pixel caps
def test_a_deflated_8192_square_file_is_a_bomb_refused_before_decoding(tmp_path, decode_calls):
    ds = ultrasound_dataset(np.zeros((8192, 8192), dtype=np.uint8))  # 67 MP: one frame above MAX_IMAGE_PIXELS
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = write(ds, tmp_path / "bomb.dcm")
    del ds
    assert MAX_IMAGE_PIXELS < 8192 * 8192 and path.stat().st_size < 1_000_000  # small on disk
    (item,) = _items(tmp_path)
    assert item.error == "decompression_bomb" and item.image is None
    assert decode_calls == []  # refused from Rows × Columns: not one pixel decoded


def test_a_frame_above_the_cap_is_refused_from_the_header_under_any_transfer_syntax(tmp_path, decode_calls):
    ds = ultrasound_dataset(gray_pattern())
    ds.compress(RLELossless, gray_pattern())
    ds.Rows, ds.Columns = 8192, 8192  # the header lies; the encapsulated data is 64 × 96
    (item,) = _items(write(ds, tmp_path / "a.dcm"))
    assert item.error == "decompression_bomb" and decode_calls == []


def test_decode_frame_refuses_an_oversized_frame_itself(decode_calls):
    ds = ultrasound_dataset(gray_pattern())
    ds.Rows = ds.Columns = 8001  # 64.016 MP
    with pytest.raises(RejectedError) as rejected:
        decode_frame(ds, 0)
    assert rejected.value.reason == "decompression_bomb"
    assert decode_calls == []


def test_native_pixel_data_above_the_total_cap_is_a_bomb(tmp_path, monkeypatch, decode_calls):
    monkeypatch.setattr(dicom_pixels, "MAX_DICOM_TOTAL_PIXELS", 4 * 64 * 96)
    native = write(ultrasound_dataset(_cine(5)), tmp_path / "native" / "cine.dcm")
    assert [item.error for item in _items(native)] == ["decompression_bomb"]
    assert decode_calls == []
    # encapsulated frames are decoded one at a time: the total cap does not apply to them
    ds = ultrasound_dataset(_cine(5))
    ds.compress(RLELossless, _cine(5))
    encapsulated = write(ds, tmp_path / "rle" / "cine.dcm")
    assert [item.error for item in _items(encapsulated, frames="all")] == [None] * 5


def test_a_deflated_dataset_inflating_past_the_cap_is_not_read(tmp_path, monkeypatch):
    ds = ultrasound_dataset(_cine(3, 256, 256))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = write(ds, tmp_path / "a.dcm")
    read: list[Path] = []
    real_dcmread = dicom.dcmread
    monkeypatch.setattr(dicom, "dcmread", lambda *a, **k: read.append(a[0]) or real_dcmread(*a, **k))
    assert [item.error for item in _items(path, frames="all")] == [None] * 3
    assert len(read) == 1
    monkeypatch.setattr(dicom, "MAX_INFLATED_BYTES", 100_000)  # the pixel data alone is 196 608 bytes
    assert [item.error for item in _items(path, frames="all")] == ["decompression_bomb"]
    assert len(read) == 1  # refused before pydicom inflated it


# --------------------------------------------------------------------------- frames
@pytest.mark.parametrize("compressed", [False, True])
def test_a_header_claiming_400_frames_over_3_is_quarantined_once(tmp_path, decode_calls, compressed):
    ds = ultrasound_dataset(_cine(3))
    if compressed:
        ds.compress(RLELossless, _cine(3))
    ds.NumberOfFrames = 400
    write(ds, tmp_path / "cine.dcm")
    for frames in ("all", "middle", "stride"):
        items = _items(tmp_path, frames=frames)
        assert [(item.source_ref, item.error) for item in items] == [("cine.dcm", "frame_count_mismatch")]
        _ledger_consistent(items)
    assert decode_calls == []


def test_pixel_data_holding_more_frames_than_the_header_is_quarantined(tmp_path):
    ds = ultrasound_dataset(_cine(5))
    ds.NumberOfFrames = 3
    (item,) = _items(write(ds, tmp_path / "cine.dcm"), frames="all")
    assert item.error == "frame_count_mismatch"


def test_a_matching_count_and_an_odd_padding_byte_are_not_a_mismatch(tmp_path):
    pixels = _cine(3, 33, 35)  # 3465 bytes: written with a padding byte
    items = _items(write(ultrasound_dataset(pixels), tmp_path / "cine.dcm"), frames="all")
    assert [item.error for item in items] == [None, None, None]


@pytest.mark.parametrize("frames", ["all", "stride"])
def test_a_200_frame_file_contributes_at_most_the_cap(tmp_path, frames):
    assert MAX_FRAMES_PER_FILE < 200
    write(ultrasound_dataset(_cine(200)), tmp_path / "cine.dcm")
    items = _items(tmp_path, frames=frames, frame_stride=1)
    indices = [item.metadata["frame_index"] for item in items]
    assert len(items) == MAX_FRAMES_PER_FILE and all(item.error is None for item in items)
    assert indices == sorted(set(indices)) and indices[0] == 0 and indices[-1] == 199  # spread over the loop
    assert max(np.diff(indices)) - min(np.diff(indices)) <= 1  # evenly
    assert [item.source_ref for item in items] == [f"cine.dcm#frame={k}" for k in indices]
    for item in (items[0], items[len(items) // 2], items[-1]):
        k = item.metadata["frame_index"]
        assert np.array_equal(np.asarray(item.image), gray_pattern(offset=5 * k))
    _ledger_consistent(items)
    rerun = _items(tmp_path, frames=frames, frame_stride=1)
    assert [item.source_ref for item in rerun] == [item.source_ref for item in items]  # same frames, same keys


def test_a_stride_under_the_cap_is_unchanged(tmp_path):
    write(ultrasound_dataset(_cine(200)), tmp_path / "cine.dcm")
    items = _items(tmp_path, frames="stride", frame_stride=5)
    assert [item.metadata["frame_index"] for item in items] == list(range(0, 200, 5))


# --------------------------------------------------------------------------- allow-listed values
def test_free_text_in_coded_tags_is_stored_nowhere(tmp_path):
    ds = ultrasound_dataset(gray_pattern(), body_part=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.BodyPartExamined = "JOHN SMITH 1961"  # shaped like a code string, but a name
        ds.Modality = "<b>x</b>"
    (item,) = _items(write(ds, tmp_path / "a.dcm"), organ="breast")
    assert item.error is None
    assert item.metadata["body_part_examined"] is None and item.metadata["modality"] is None
    text = repr(item.metadata).upper()
    assert "JOHN" not in text and "SMITH" not in text and "1961" not in text and "<B>" not in text


@pytest.mark.parametrize(
    ("tag", "value", "key"),
    [
        ("Modality", "ZZNAME", "modality"),  # a valid code string, not a modality
        ("BodyPartExamined", "SMITH_JOHN", "body_part_examined"),
        ("BodyPartExamined", "A" * 17, "body_part_examined"),  # longer than a CS
    ],
)
def test_code_strings_outside_the_defined_terms_are_dropped(tmp_path, tag, value, key):
    ds = ultrasound_dataset(gray_pattern())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        setattr(ds, tag, value)
    (item,) = _items(write(ds, tmp_path / "a.dcm"), organ="breast")
    assert item.error is None and item.metadata[key] is None
    assert value not in repr(item.metadata)


@pytest.mark.parametrize(("body_part", "stored"), [("BREAST", "BREAST"), ("thyroid", "THYROID"), ("CHEST", "CHEST")])
def test_defined_terms_are_kept(tmp_path, body_part, stored):
    path = write(ultrasound_dataset(gray_pattern(), body_part=body_part), tmp_path / "a.dcm")
    (item,) = _items(path, organ="breast")
    assert item.metadata["body_part_examined"] == stored and item.metadata["modality"] == "US"


def test_the_new_reasons_are_declared():
    assert {"decompression_bomb", "frame_count_mismatch"} <= set(REASONS)


# --------------------------------------------------------------------------- pydicom's ultrasound examples
# The ultrasound files that ship inside the installed pydicom (US1_J2KR.dcm and the other US1_* files are
# downloaded on demand, and this machine is offline). Items as before these limits: (frames="all", "middle").
PYDICOM_ULTRASOUND = {
    "examples_ybr_color.dcm": (30, 1),  # 30-frame JPEG Baseline cine, YBR_FULL_422
    "examples_rgb_color.dcm": (1, 1),
    "examples_palette.dcm": (1, 1),
    "examples_jpeg2k.dcm": (1, 1),
    "ExplVR_BigEnd.dcm": (1, 1),
}


@pytest.mark.parametrize("name", sorted(PYDICOM_ULTRASOUND))
def test_pydicom_ultrasound_examples_ingest_as_before(name):
    path = Path(get_testdata_file(name))
    for frames, expected in zip(("all", "middle"), PYDICOM_ULTRASOUND[name], strict=True):
        items = _items(path, organ="breast", frames=frames)
        assert len(items) == expected
        assert [item.error for item in items] == [None] * expected
        assert all(item.metadata["modality"] == "US" for item in items)
        _ledger_consistent(items)

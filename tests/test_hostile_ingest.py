"""Hostile and careless input (issue 20): every file the source holds is accounted for, nothing outside the
source is opened, one bad file never stops ingest, and the ledger's invariant can fail."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from flows.catalog import Catalog
from flows.catalog.ledger import LedgerMismatchError
from flows.ingest import core
from flows.ingest.core import IngestOptions, register_items
from flows.ingest.image_store import ImageStore
from flows.ingest.sources.dicom import iter_dicom_items
from flows.ingest.sources.folder import iter_folder_items
from flows.ingest.sources.manifest import iter_manifest_items
from flows.ingest.sources.phantom_burned_in import write_dicom_without_region

SALT = b"hostile-salt-0123456789"


def _speckle(seed: int, size=(96, 72)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.gamma(2.0, 40.0, size[::-1]).clip(0, 255).astype(np.uint8))


@pytest.fixture
def catalog(tmp_path):
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    yield catalog
    catalog.close()


def _ingest(items, catalog, tmp_path):
    return register_items(items, catalog, ImageStore(str(tmp_path / "store")), SALT, IngestOptions())


def test_a_hostile_folder_is_accounted_for_file_by_file(tmp_path, catalog):
    source, outside = tmp_path / "source", tmp_path / "outside"
    source.mkdir()
    outside.mkdir()
    _speckle(1).save(source / "good.png")
    _speckle(2).save(source / "good.jpe", format="JPEG")  # an extension the folder adapter did not list
    _speckle(3).save(source / "sub.tif")
    _speckle(4).save(outside / "secret.png")
    (source / "link.png").symlink_to(outside / "secret.png")  # a link out of the source
    (source / "linked-folder").symlink_to(outside, target_is_directory=True)
    write_dicom_without_region(_speckle(5), source / "scan.dcm")  # DICOM belongs to the dicom source
    (source / "notes.txt").write_text("not an image")
    (source / "truncated.png").write_bytes((source / "good.png").read_bytes()[:60])
    placed = sum(1 for _ in source.iterdir())

    summary = _ingest(iter_folder_items(source, organ="breast", layout="plain"), catalog, tmp_path)

    assert summary.seen == placed == catalog.status()["stages"]["ingest"]["in"]
    assert summary.out == 3  # good.png, good.jpe, sub.tif
    assert summary.quarantined == {
        "outside_source": 2,
        "dicom_in_image_folder": 1,
        "unsupported_format": 1,
        "corrupt_image": 1,
    }
    secret = np.asarray(_speckle(4))
    stored = [np.asarray(Image.open(p)) for p in (tmp_path / "store").rglob("*.png")]
    assert not any(s.shape == secret.shape and (s == secret).all() for s in stored)


def test_manifest_paths_that_leave_the_source_are_quarantined_not_opened(tmp_path, catalog):
    source = tmp_path / "source"
    source.mkdir()
    _speckle(1).save(source / "in.png")
    _speckle(2).save(tmp_path / "outside.png")
    rows = [{"path": "in.png"}, {"path": "../outside.png"}, {"path": str(tmp_path / "outside.png")}]
    (source / "m.jsonl").write_text("".join(json.dumps({**r, "organ": "breast"}) + "\n" for r in rows))
    summary = _ingest(iter_manifest_items(source / "m.jsonl"), catalog, tmp_path)
    assert (summary.seen, summary.out, summary.quarantined) == (3, 1, {"outside_source": 2})


def test_an_exception_inside_one_item_quarantines_only_that_item(tmp_path, catalog, monkeypatch):
    """A decoder crasher of a kind nobody listed (fuzzing found TypeError in PIL plugins) stops nothing."""
    (tmp_path / "src").mkdir()
    for n in range(3):
        _speckle(n).save(tmp_path / "src" / f"{n}.png")
    real = core.decode_image_file

    def crash_on_one(path):
        if path.name == "1.png":
            raise TypeError("'NoneType' object is not subscriptable")
        return real(path)

    monkeypatch.setattr(core, "decode_image_file", crash_on_one)
    summary = _ingest(iter_folder_items(tmp_path / "src", organ="breast", layout="plain"), catalog, tmp_path)
    assert (summary.out, summary.quarantined) == (2, {"decode_failed": 1})


def test_the_ledger_check_fails_when_an_item_goes_missing(tmp_path, catalog, monkeypatch):
    """The invariant can fail: items are counted as the source enumerates them, independently of the ledger."""
    (tmp_path / "src").mkdir()
    for n in range(3):
        _speckle(n).save(tmp_path / "src" / f"{n}.png")
    real_flush = core._flush
    monkeypatch.setattr(core, "_flush", lambda catalog, batch: real_flush(catalog, batch[:-1]))  # loses one
    with pytest.raises(LedgerMismatchError, match="enumerated 3"):
        _ingest(iter_folder_items(tmp_path / "src", organ="breast", layout="plain"), catalog, tmp_path)


def test_a_truncated_dicom_is_quarantined(tmp_path, catalog):
    write_dicom_without_region(_speckle(7), tmp_path / "whole.dcm")
    data = (tmp_path / "whole.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) // 2])
    summary = _ingest(iter_dicom_items(tmp_path, organ="breast"), catalog, tmp_path)
    assert summary.seen == 2 and summary.out == 1 and sum(summary.quarantined.values()) == 1


def test_a_dicom_far_past_the_pixel_cap_is_quarantined_beside_good_ones(tmp_path, catalog):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from tests.dicom_factory import ultrasound_dataset, write

    bomb = ultrasound_dataset(np.zeros((8192, 8192), dtype=np.uint8))  # 67 MP in a file of a few hundred KB
    bomb.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    write(bomb, tmp_path / "src" / "bomb.dcm")
    del bomb
    write_dicom_without_region(_speckle(8, (160, 120)), tmp_path / "src" / "good.dcm")
    summary = _ingest(iter_dicom_items(tmp_path / "src", organ="breast"), catalog, tmp_path)
    assert (summary.seen, summary.out, summary.quarantined) == (2, 1, {"decompression_bomb": 1})


@pytest.mark.integration
def test_the_ingest_flow_completes_on_every_hostile_source(tmp_path, monkeypatch, prefect_api):
    """The stage as a deployment or the CLI runs it: each hostile source completes (exit 0), every entry counted."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from flows.stages.ingest import IngestParams, ingest_flow
    from tests.dicom_factory import ultrasound_dataset, write

    monkeypatch.setenv("LOOKCLOSER_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("LOOKCLOSER_PATIENT_KEY_SALT", "hostile flow salt, 16+ bytes")
    folder, dicom, outside = tmp_path / "folder", tmp_path / "dicom", tmp_path / "outside"
    for path in (folder, dicom, outside):
        path.mkdir()
    _speckle(1).save(folder / "good.png")
    _speckle(4).save(outside / "secret.png")
    (folder / "link.png").symlink_to(outside / "secret.png")
    (folder / "odd.jpe").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.txt").write_text("x")
    (folder / "m.jsonl").write_text(
        "".join(json.dumps({"path": p, "organ": "breast"}) + "\n" for p in ("good.png", "../outside/secret.png"))
    )
    bomb = ultrasound_dataset(np.zeros((8192, 8192), dtype=np.uint8))
    bomb.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    write(bomb, dicom / "bomb.dcm")
    del bomb
    write_dicom_without_region(_speckle(5), dicom / "good.dcm")

    runs = [
        (IngestParams(kind="folder", path=str(folder), organ="breast", adapter_options={"layout": "plain"}), 5, 1),
        (IngestParams(kind="manifest", path=str(folder / "m.jsonl"), organ="breast"), 2, 0),  # good.png: known
        (IngestParams(kind="dicom", path=str(dicom), organ="breast"), 2, 1),
    ]
    for params, placed, new in runs:
        summary = ingest_flow(params)
        assert (summary.seen, summary.out) == (placed, new), summary.quarantined

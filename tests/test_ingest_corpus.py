"""A corpus of bad and awkward inputs through the real ingest flow (CLI → Prefect → adapters → catalog).

Each input ends with its own quarantine reason, or ingests correctly; nothing crashes the flow;
everything else ingests; and no planted patient data reaches the catalog, the image store, the
logs or the Prefect artifacts.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from sqlalchemy import select
from sqlalchemy.orm import Session

from flows.catalog import Catalog
from flows.catalog.tables import StageItemRow
from flows.cli.main import main
from flows.ingest.core import ref_id
from flows.runtime.settings import load_settings
from tests.bad_files import png_bytes, speckle, write_corpus
from tests.dicom_factory import PHI_TAGS, ultrasound_dataset, ultrasound_region, with_regions, write

NON_UTF8_NAME = os.fsdecode(b"caf\xe9.png")  # what os.walk yields for a Latin-1 file name
PHI_NAME = "ZZDOE^JANE 19450203.png"
PHI_FOLDER = "ZZ-MRN-445566"
PLANTED = [*PHI_TAGS.values(), "ZZDOE", "ZZ-MRN-445566", "JANE 19450203"]
HEADER_ROWS = 16


@dataclass(frozen=True)
class Case:
    source: str
    ref: str
    reason: str | None  # None: ingests


CASES = {
    "corrupt png": Case("folder", "plain/corrupt.png", "corrupt_image"),
    "truncated jpeg": Case("folder", "plain/truncated.jpg", "corrupt_image"),
    "zero-byte file": Case("folder", "plain/zero.png", "empty_file"),
    "text with png name": Case("folder", "plain/text.png", "not_an_image"),
    "1x1 image": Case("folder", "plain/one_pixel.png", "image_too_small"),
    "30000x30000 header": Case("folder", "plain/huge_header.png", "decompression_bomb"),
    "blank image": Case("folder", "plain/blank.png", "near_constant_image"),
    "16-bit grayscale": Case("folder", "plain/deep16.png", None),
    "CMYK jpeg": Case("folder", "plain/cmyk.jpg", None),
    "RGBA": Case("folder", "plain/rgba.png", None),
    "palette": Case("folder", "plain/palette.png", None),
    "EXIF-rotated": Case("folder", "plain/exif_rotated.jpg", None),
    "non-UTF-8 file name": Case("folder", "plain/" + NON_UTF8_NAME, None),
    "file name with a patient name": Case("folder", "plain/" + PHI_NAME, None),
    "folder name with a record number": Case("folder", f"plain/{PHI_FOLDER}/scan.png", None),
    "same file, first name": Case("folder", "plain/good.png", None),
    "same file, second name": Case("folder", "plain/good_copy.png", "exact_duplicate"),
    "empty mask": Case("folder", "busi/benign/benign (1).png", None),
    "mask of another size": Case("folder", "busi/benign/benign (2).png", "mask_size_mismatch"),
    "mask with three lesions": Case("folder", "busi/benign/benign (3).png", None),
    "DICOM without pixel data": Case("dicom", "dicom/no_pixels.dcm", "dicom_without_pixel_data"),
    "DICOM multi-frame": Case("dicom", "dicom/cine.dcm#frame=1", None),
    "DICOM with PHI in ten tags": Case("dicom", "dicom/phi.dcm", None),
    "symlink loop": Case("folder", "plain/loop", "not_a_regular_file"),  # a folder link: accounted, not followed
    # manifest rows are named by image path and content ({sha}: the file's hash), a missing file by its row
    "manifest row, missing file": Case("manifest", "manifest.csv/manifest.csv:row=1", "image_missing"),
    "manifest row, box outside image": Case(
        "manifest", "manifest.csv/manifest.csv:manifest_images/m2.png#{sha}", "invalid_source_annotation"
    ),
    "manifest row, unknown organ": Case(
        "manifest", "manifest.csv/manifest.csv:manifest_images/m3.png#{sha}", "unknown_organ"
    ),
    "manifest row, unknown attribute value": Case(
        "manifest", "manifest.csv/manifest.csv:manifest_images/m4.png#{sha}", "attribute_not_in_vocabulary"
    ),
    "manifest row, good": Case("manifest", "manifest.csv/manifest.csv:manifest_images/m5.png#{sha}", None),
}


def _png(path: Path, seed: int, size: tuple[int, int] = (96, 64)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(Image.fromarray(speckle(*size, seed=seed))))


def _mask(path: Path, boxes: list[tuple[int, int, int, int]], size: tuple[int, int] = (96, 64)) -> None:
    mask = Image.new("L", size, 0)
    for box in boxes:
        ImageDraw.Draw(mask).rectangle(box, fill=255)
    mask.save(path)


def build_corpus(root: Path) -> None:
    plain = root / "plain"
    write_corpus(plain)
    _png(plain / "good.png", seed=20)
    (plain / "good_copy.png").write_bytes((plain / "good.png").read_bytes())
    with open(os.fsencode(plain) + b"/caf\xe9.png", "wb") as fh:  # a Latin-1 name, not valid UTF-8
        fh.write(png_bytes(Image.fromarray(speckle(seed=21))))
    _png(plain / PHI_NAME, seed=22)
    _png(plain / PHI_FOLDER / "scan.png", seed=23)
    (plain / "loop").symlink_to(plain, target_is_directory=True)

    busi = root / "busi" / "benign"
    for n, seed in ((1, 30), (2, 31), (3, 32)):
        _png(busi / f"benign ({n}).png", seed=seed)
    _mask(busi / "benign (1)_mask.png", [])
    _mask(busi / "benign (2)_mask.png", [(5, 5, 20, 20)], size=(50, 50))
    _mask(busi / "benign (3)_mask.png", [(2, 2, 12, 12), (40, 10, 55, 30), (70, 40, 90, 60)])

    dicom = root / "dicom"
    no_pixels = ultrasound_dataset(speckle(seed=40))
    del no_pixels.PixelData
    write(no_pixels, dicom / "no_pixels.dcm")
    frames = np.stack([speckle(seed=41 + k) for k in range(3)])
    write(ultrasound_dataset(frames), dicom / "cine.dcm")
    burned = speckle(seed=45)
    header = Image.fromarray(burned)
    ImageDraw.Draw(header).text((2, 2), "ZZSMITH JOHN 19450203", fill=255)
    burned = np.asarray(header)
    phi = ultrasound_dataset(burned, **PHI_TAGS, BurnedInAnnotation="YES")
    write(with_regions(phi, ultrasound_region((0, HEADER_ROWS, 95, 63))), dicom / "phi.dcm")

    images = root / "manifest_images"
    for k in range(2, 6):
        _png(images / f"m{k}.png", seed=50 + k)
    rows = [
        {"path": "manifest_images/missing.png", "organ": "liver"},
        {"path": "manifest_images/m2.png", "organ": "liver", "boxes": json.dumps([[10, 10, 200, 40]])},
        {"path": "manifest_images/m3.png", "organ": "kidney"},
        {"path": "manifest_images/m4.png", "organ": "liver", "attributes": json.dumps({"boundary": "purple"})},
        {
            "path": "manifest_images/m5.png",
            "organ": "liver",
            "patient_id": "ZZ-ID-778899",
            "boxes": json.dumps([[10, 10, 40, 40]]),
            "attributes": json.dumps({"boundary": "ill-defined"}),
        },
    ]
    columns = ["path", "organ", "patient_id", "boxes", "attributes"]
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join('"' + str(row.get(c, "")).replace('"', '""') + '"' for c in columns))
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, prefect_api):
    """Build the corpus, ingest it through the CLI, and capture everything the runs printed or logged."""
    root = tmp_path_factory.mktemp("corpus")
    build_corpus(root)
    workspace = root / "ws"
    log_buffer = io.StringIO()
    handler = logging.StreamHandler(log_buffer)
    loggers = [logging.getLogger(), logging.getLogger("prefect")]
    for logger in loggers:
        logger.addHandler(handler)
    output = io.StringIO()
    with pytest.MonkeyPatch.context() as env, contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        env.setenv("LOOKCLOSER_WORKSPACE", str(workspace))
        for name in ("CATALOG_URL", "IMAGE_STORE_URL", "PATIENT_KEY_SALT"):
            env.delenv(f"LOOKCLOSER_{name}", raising=False)
        codes = [
            main(["-v", "ingest", "folder", str(root / "plain"), "--organ", "liver", "--option", "layout=plain"]),
            main(["-v", "ingest", "folder", str(root / "busi"), "--option", "layout=busi"]),
            main(["-v", "ingest", "dicom", str(root / "dicom")]),
            main(["-v", "ingest", "manifest", str(root / "manifest.csv")]),
        ]
        settings = load_settings()
        catalog = Catalog(settings.resolved_catalog_url)
        with Session(catalog.engine) as session:
            ledger = {row.item_key: row for row in session.scalars(select(StageItemRow))}
        for logger in loggers:
            logger.removeHandler(handler)
        yield {
            "codes": codes,
            "catalog": catalog,
            "salt": settings.salt(),
            "ledger": ledger,
            "workspace": workspace,
            "root": root,
            "text": output.getvalue() + log_buffer.getvalue(),
        }
        catalog.close()


def test_every_run_finishes(ingested):
    assert ingested["codes"] == [0, 0, 0, 0], ingested["text"][-3000:]


def _ref(case: Case, root: Path) -> str:
    """The case's ref, with `{sha}` replaced by the hash of the file it names (manifest rows)."""
    if "{sha}" not in case.ref:
        return case.ref
    relative = case.ref.split(":", 1)[1].split("#", 1)[0]
    return case.ref.replace("{sha}", hashlib.sha256((root / relative).read_bytes()).hexdigest()[:16])


@pytest.mark.parametrize("name", list(CASES))
def test_input_ends_with_its_reason_or_ingests(ingested, name):
    case = CASES[name]
    ref = _ref(case, ingested["root"])
    row = ingested["ledger"].get(f"{case.source}:{ref_id(ingested['salt'], case.source, ref)}")
    assert row is not None, f"{name}: no ledger entry"
    assert (row.outcome, row.reason) == (("out", None) if case.reason is None else ("quarantined", case.reason))


def test_nothing_else_is_in_the_ledger_and_in_equals_out_plus_quarantined(ingested):
    assert len(ingested["ledger"]) == len(CASES)  # one entry per case: nothing dropped, nothing counted twice
    counts = ingested["catalog"].status()["stages"]["ingest"]
    assert counts["in"] == counts["out"] + sum(counts["quarantined"].values()) == len(CASES)
    assert counts["out"] == sum(case.reason is None for case in CASES.values())


def test_three_lesion_mask_gives_three_boxes_and_the_duplicate_shares_its_image(ingested):
    catalog, ledger, salt = ingested["catalog"], ingested["ledger"], ingested["salt"]
    three = ledger[f"folder:{ref_id(salt, 'folder', 'busi/benign/benign (3).png')}"].record_key
    assert [a.box for a in catalog.source_annotations(three)] == [[2, 2, 13, 13], [40, 10, 56, 31], [70, 40, 91, 61]]
    duplicate = ledger[f"folder:{ref_id(salt, 'folder', 'plain/good_copy.png')}"].record_key
    assert len(catalog.image_refs(duplicate)) == 2


def test_dicom_burned_in_header_is_cut_away(ingested):
    catalog, ledger, salt = ingested["catalog"], ingested["ledger"], ingested["salt"]
    image = catalog.get_image(ledger[f"dicom:{ref_id(salt, 'dicom', 'dicom/phi.dcm')}"].record_key)
    assert (image.width, image.height) == (96, 64 - HEADER_ROWS)


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_no_planted_patient_data_leaves_ingest(ingested, prefect_api):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        artifacts = "\n".join(str(a.data) for a in client.read_artifacts())
    assert "Ingest" in artifacts  # the artifacts were read
    haystacks = {"logs and output": ingested["text"].encode(), "artifacts": artifacts.encode()}
    for path in _files_under(ingested["workspace"]):  # catalog (and its WAL), image store, salt
        haystacks[str(path.relative_to(ingested["workspace"]))] = path.read_bytes()
    assert any(name.startswith("catalog.sqlite") for name in haystacks)
    for planted in PLANTED:
        for where, data in haystacks.items():
            assert planted.encode() not in data, f"{planted!r} found in {where}"


def test_rerunning_the_same_sources_adds_and_rewrites_nothing(ingested, monkeypatch, capsys):
    catalog = ingested["catalog"]
    before = (catalog.table_counts(), catalog.status(), [i.model_dump() for i in catalog.iter_images()])
    monkeypatch.setenv("LOOKCLOSER_WORKSPACE", str(ingested["workspace"]))
    root = ingested["root"]
    assert main(["ingest", "folder", str(root / "plain"), "--organ", "liver", "--option", "layout=plain"]) == 0
    assert main(["ingest", "dicom", str(root / "dicom")]) == 0
    assert "0 new" in capsys.readouterr().out
    assert (catalog.table_counts(), catalog.status(), [i.model_dump() for i in catalog.iter_images()]) == before


def test_two_sources_with_the_same_relative_names_are_both_ingested(ingested, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("LOOKCLOSER_WORKSPACE", str(ingested["workspace"]))
    for site, seed in (("site-a", 71), ("site-b", 72)):
        _png(tmp_path / site / "scan.png", seed=seed)
        assert main(["ingest", "folder", str(tmp_path / site), "--organ", "liver", "--option", "layout=plain"]) == 0
        assert "1 new" in capsys.readouterr().out  # not skipped as "already ingested"
    _png(tmp_path / "elsewhere" / "site-a" / "scan.png", seed=73)  # same scope and name, other content
    assert (
        main(
            [
                "ingest",
                "folder",
                str(tmp_path / "elsewhere" / "site-a"),
                "--organ",
                "liver",
                "--option",
                "layout=plain",
                "--source-name",
                "site-a-2026",
            ]
        )
        == 0
    )
    assert "1 new" in capsys.readouterr().out

"""The release gate: real rows pass; a corrupted row of each kind fails the suite and is named."""

from __future__ import annotations

import pytest

from flows.catalog import Catalog
from flows.ingest.image_store import ImageStore
from flows.release.rows import FrameSettings, iter_rows
from flows.release.validation import (
    add_split_facts,
    check_one_image_per_placeholder,
    check_tone_matches_c,
    check_trajectory_matches_columns,
    row_facts,
    validate_rows,
)
from flows.runtime.settings import load_settings
from flows.stages.synthesize import SynthesizeParams, run_synthesis
from tests.teacher_fixtures import phantom_consensus

FRAMES = FrameSettings(min_pixels=56 * 56, max_pixels=256 * 256)


@pytest.fixture(scope="module")
def release_rows(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("gate") / "ws"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LOOKCLOSER_WORKSPACE", str(workspace))
        for name in ("CATALOG_URL", "IMAGE_STORE_URL"):
            env.delenv(f"LOOKCLOSER_{name}", raising=False)
        settings = load_settings()
        catalog = Catalog(settings.resolved_catalog_url)
        store = ImageStore(settings.resolved_image_store_url)
        phantom_consensus(catalog, store, workspace / "src", count=6)
        run_synthesis(SynthesizeParams(progress=False), settings)
        samples = [o.sample for o in iter_rows(catalog, store, FRAMES) if o.sample is not None]
        rows = [row_facts(s, catalog.get_image(s.id.split(":")[0])) for s in samples]
        add_split_facts(rows)
        catalog.close()
        yield samples, rows, workspace


def test_real_rows_pass_the_suite_and_data_docs_are_written(release_rows):
    _, rows, workspace = release_rows
    report = validate_rows(rows, docs_dir=workspace / "docs")
    assert report.success, report.summary()
    assert report.docs_index is not None and report.docs_index.exists()


CORRUPTIONS = {
    "id_duplicate": ("id", lambda rows: rows[1].update(id=rows[0]["id"])),
    "organ_unknown": ("organ", lambda rows: rows[1].update(organ="spleen")),
    "c_not_binary": ("confidence", lambda rows: rows[1].update(confidence=2)),
    "label_outside_vocabulary": (
        "check_label_in_vocabulary",
        lambda rows: rows[1].update(check_label_in_vocabulary=False),
    ),
    "bbox_outside_frame": ("check_bbox_in_model_frame", lambda rows: rows[1].update(check_bbox_in_model_frame=False)),
    "crop_too_small": ("crop_min_side", lambda rows: rows[1].update(crop_min_side=12)),
    "trajectory_mismatch": (
        "check_trajectory_matches_columns",
        lambda rows: rows[1].update(check_trajectory_matches_columns=False),
    ),
    "tone_mismatch": ("check_tone_matches_c", lambda rows: rows[1].update(check_tone_matches_c=False)),
    "placeholders": (
        "check_one_image_per_placeholder",
        lambda rows: rows[1].update(check_one_image_per_placeholder=False),
    ),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_a_corrupted_row_fails_the_suite_and_is_named(release_rows, kind):
    _, rows, _ = release_rows
    column, corrupt = CORRUPTIONS[kind]
    broken = [dict(row) for row in rows]
    corrupt(broken)
    report = validate_rows(broken)
    assert not report.success
    failed = {f["column"]: f["rows"] for f in report.failures}
    assert column in failed and broken[1]["id"] in failed[column], report.summary()


def test_a_patient_in_two_splits_is_caught_on_every_row_of_that_patient(release_rows):
    _, rows, _ = release_rows
    broken = [dict(row) for row in rows]
    patient = broken[0]["patient_key"]
    victim = next(r for r in broken if r["patient_key"] != patient and r["organ"] != "thyroid")
    victim["patient_key"] = patient
    victim["split"] = "test" if broken[0]["split"] == "train" else "train"
    add_split_facts(broken)
    report = validate_rows(broken)
    failed = {f["column"]: f["rows"] for f in report.failures}
    assert victim["id"] in failed["check_patient_in_one_split"]


def test_row_facts_detect_real_corruptions(release_rows):
    samples, _, _ = release_rows
    sample = samples[0]
    moved = sample.model_copy(update={"bbox": [b + 1 for b in sample.bbox]})
    assert check_trajectory_matches_columns(sample) and not check_trajectory_matches_columns(moved)
    flipped = sample.model_copy(update={"confidence": 1 - sample.confidence})
    assert check_tone_matches_c(sample, "teacher-v1") and not check_tone_matches_c(flipped, "teacher-v1")
    one_image = sample.model_copy(update={"images": [sample.images[0], sample.images[0], sample.images[0]]})
    assert check_one_image_per_placeholder(sample) and not check_one_image_per_placeholder(one_image)


def test_a_patient_with_a_cross_domain_test_image_is_not_a_leak():
    """Thyroid is test-only by design: a patient's liver rows in train and thyroid rows in test pass."""
    base = {"check_label_in_vocabulary": True}
    rows = [
        {**base, "id": "a:shape", "organ": "liver", "split": "train", "patient_key": "p1", "dup_group": "g1"},
        {**base, "id": "b:shape", "organ": "thyroid", "split": "test", "patient_key": "p1", "dup_group": "g2"},
        {**base, "id": "c:shape", "organ": "liver", "split": "test", "patient_key": "p2", "dup_group": "g3"},
        {**base, "id": "d:shape", "organ": "breast", "split": "train", "patient_key": "p2", "dup_group": "g4"},
    ]
    add_split_facts(rows)
    facts = {row["id"]: row["check_patient_in_one_split"] for row in rows}
    assert facts == {"a:shape": True, "b:shape": True, "c:shape": False, "d:shape": False}

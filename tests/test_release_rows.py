"""Published rows from the catalog: every record becomes a row or a reason; rows agree with the catalog."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from flows.catalog import Catalog
from flows.ingest.image_store import ImageStore
from flows.release.rows import FrameSettings, iter_rows
from flows.runtime.settings import load_settings
from flows.stages.synthesize import SynthesizeParams, run_synthesis
from schemas.crop import crop, model_frame_image
from schemas.frames import model_size, to_model_box
from schemas.trajectory import parse_trajectory
from schemas.vocabulary import load_vocabulary
from tests.teacher_fixtures import phantom_consensus

FRAMES = FrameSettings(min_pixels=56 * 56, max_pixels=320 * 320, crop_padding=0.1)


@pytest.fixture
def synthesized(workspace):
    settings = load_settings()
    catalog = Catalog(settings.resolved_catalog_url)
    store = ImageStore(settings.resolved_image_store_url)
    records = phantom_consensus(catalog, store, workspace / "src", count=6)
    run_synthesis(SynthesizeParams(progress=False), settings)
    yield catalog, store, records
    catalog.close()


def test_every_row_matches_its_record_and_its_crop_is_a_fresh_crop(synthesized):
    catalog, store, records = synthesized
    outcomes = list(iter_rows(catalog, store, FRAMES))
    assert len(outcomes) == records and all(o.sample is not None for o in outcomes)
    by_id = {r.record_id: r for r in catalog.consensus_records()}
    for outcome in outcomes:
        sample, record = outcome.sample, by_id[outcome.record_id]
        size = model_size(record.image_width, record.image_height, FRAMES.min_pixels, FRAMES.max_pixels)
        assert sample.model_size == list(size) and sample.orig_size == [record.image_width, record.image_height]
        assert sample.bbox == to_model_box(record.box, sample.orig_size, size) and sample.bbox_orig == record.box
        assert (sample.label, sample.confidence, sample.agreement) == (
            record.label,
            record.confidence,
            record.agreement,
        )
        parsed = parse_trajectory(sample.messages)
        key = load_vocabulary(record.organ).attribute(record.attribute).answer_key
        assert parsed.bbox_2d == sample.bbox and parsed.answer == {key: record.label}
        full, zoomed = (Image.open(io.BytesIO(part["bytes"])) for part in sample.images)
        assert full.size == size
        image = catalog.get_image(record.image_id)
        opened = store.open(image.storage_key)
        fresh_frame = model_frame_image(opened, min_pixels=FRAMES.min_pixels, max_pixels=FRAMES.max_pixels)
        expected, _ = crop(fresh_frame, sample.bbox, padding=FRAMES.crop_padding)
        assert np.array_equal(np.asarray(zoomed), np.asarray(expected))  # lossless, same function
        assert sample.split == image.split and sample.source == image.source


def test_records_without_a_usable_rationale_are_counted_with_their_reason(synthesized):
    catalog, store, records = synthesized
    rationales = catalog.rationales()
    missing, invalid, stale = rationales[0], rationales[1], rationales[2]
    catalog.forget_rationales([missing.record_id])
    catalog.save_synthesis(rationales=[invalid.model_copy(update={"valid": False, "validation_errors": ["x"]})])
    other = next(v for v in load_vocabulary(stale.organ).attribute(stale.attribute).values if v != stale.label)
    catalog.save_synthesis(rationales=[stale.model_copy(update={"label": other})])
    outcomes = list(iter_rows(catalog, store, FRAMES))
    reasons = Counter(o.reason for o in outcomes if o.sample is None)
    assert reasons == {"no_rationale": 1, "rationale_quarantined": 1, "rationale_stale": 1}
    assert len(outcomes) == records

"""Ingest logic without Prefect: checks, de-identification, idempotency, in = out + quarantined."""

import numpy as np
import pytest
from PIL import Image

from flows.catalog import Catalog
from flows.ingest.core import IngestOptions, ref_id, register_items
from flows.ingest.image_store import ImageStore
from flows.ingest.sources.base import SourceItem
from flows.ingest.sources.phantom import HEADER_HEIGHT, phantom_items

SALT = b"test-salt"


@pytest.fixture
def catalog(catalog_url):
    catalog = Catalog(catalog_url)
    yield catalog
    catalog.close()


@pytest.fixture
def store(tmp_path):
    return ImageStore(str(tmp_path / "images"))


def _noise(width=64, height=48, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width), dtype=np.uint8))


def _item(ref, image=None, **overrides):
    values = dict(
        source="test",
        source_ref=ref,
        organ="liver",
        image=image if image is not None else _noise(seed=hash(ref) % 1000),
    )
    return SourceItem(**{**values, **overrides})


def _ingest(items, catalog, store):
    return register_items(items, catalog, store, SALT, IngestOptions())


def test_phantom_ingest_deidentifies_and_is_idempotent(tmp_path, catalog, store):
    items = list(phantom_items(tmp_path / "src", seed=0, count=6))
    raw = items[0]
    raw_pixels = np.asarray(raw.image)
    first = _ingest(items, catalog, store)
    assert (first.seen, first.out, first.quarantined) == (6, 6, {})
    again = _ingest(list(phantom_items(tmp_path / "src", seed=0, count=6)), catalog, store)
    assert (again.seen, again.out, again.skipped) == (6, 0, 6)
    assert catalog.table_counts()["images"] == 6
    assert catalog.status()["stages"]["ingest"] == {"in": 6, "out": 6, "quarantined": {}}

    record = next(r for r in catalog.iter_images() if r.source_ref == ref_id(SALT, "phantom", raw.source_ref))
    stored = np.asarray(store.open(record.storage_key))
    assert stored.shape == (raw_pixels.shape[0] - HEADER_HEIGHT, raw_pixels.shape[1])  # the header band is gone
    assert np.array_equal(stored, raw_pixels[HEADER_HEIGHT:])
    assert raw.patient_id not in record.model_dump_json() and raw.source_ref not in record.model_dump_json()
    [annotation] = catalog.source_annotations(record.image_id)[:1]
    raw_box = raw.annotations[0]["box"]
    assert annotation.box == pytest.approx(
        [raw_box[0], raw_box[1] - HEADER_HEIGHT, raw_box[2], raw_box[3] - HEADER_HEIGHT]
    )


def test_images_of_one_patient_share_key_and_split(tmp_path, catalog, store):
    _ingest(phantom_items(tmp_path / "src", seed=4, count=12), catalog, store)
    by_patient: dict[str, set[str]] = {}
    for record in catalog.iter_images():
        by_patient.setdefault(record.patient_key, set()).add(record.split)
    assert len(by_patient) < 12  # two images per phantom patient
    assert all(len(splits) == 1 for splits in by_patient.values())


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (_item("broken.png", image=None, error="unreadable_image"), "unreadable_image"),
        (_item("tiny.png", image=_noise(20, 20)), "image_too_small"),
        (_item("blank.png", image=Image.new("L", (64, 48), 7)), "near_constant_image"),
        (_item("region.png", us_region=[0, 0, 500, 48]), "ultrasound_region_outside_image"),
        (_item("sliver.png", image=_noise(6000, 29)), "aspect_ratio_too_extreme"),
        (_item("kidney.png", organ="kidney"), "unknown_organ"),
        (_item("badbox.png", annotations=[{"box": [10, 10, 5, 20]}]), "invalid_source_annotation"),
        (_item("badvalue.png", annotations=[{"attributes": {"boundary": "purple"}}]), "attribute_not_in_vocabulary"),
    ],
)
def test_each_bad_input_is_quarantined_with_its_reason(item, reason, catalog, store):
    summary = _ingest([item, _item("good.png")], catalog, store)
    assert summary.quarantined == {reason: 1} and summary.out == 1
    assert catalog.status()["stages"]["ingest"] == {"in": 2, "out": 1, "quarantined": {reason: 1}}


def test_same_pixels_from_another_source_item_is_one_image_with_two_refs(catalog, store):
    image = _noise(seed=42)
    summary = _ingest([_item("a.png", image=image), _item("b.png", image=image.copy())], catalog, store)
    assert summary.out == 1 and summary.quarantined == {"exact_duplicate": 1}
    [record] = catalog.iter_images()
    assert len(catalog.image_refs(record.image_id)) == 2
    again = _ingest([_item("a.png", image=image), _item("b.png", image=image)], catalog, store)
    assert (again.out, again.skipped, again.quarantined) == (0, 2, {})


def test_store_is_content_addressed_and_never_rewrites(tmp_path, store):
    image = _noise(seed=3)
    key = store.put("ab" + "0" * 62, image)
    path = tmp_path / "images" / key
    mtime = path.stat().st_mtime_ns
    assert store.put("ab" + "0" * 62, image) == key and path.stat().st_mtime_ns == mtime
    assert store.open(key).tobytes() == image.tobytes()


def _noise_items(count: int) -> list[SourceItem]:
    return [_item(f"n{k}.png", image=_noise(seed=1000 + k), patient_id=f"P{k // 3}") for k in range(count)]


def _crash_after(items, n):
    for k, item in enumerate(items):
        if k == n:
            raise RuntimeError("worker killed")
        yield item


def _snapshot(catalog: Catalog) -> tuple:
    images = sorted((i.image_id, i.split, i.dup_group, i.patient_key) for i in catalog.iter_images())
    return images, catalog.status()["stages"]["ingest"], catalog.table_counts()


def test_a_killed_run_resumes_to_the_same_catalog_as_an_undisturbed_run(tmp_path, catalog, store):
    undisturbed = Catalog(f"sqlite:///{tmp_path / 'undisturbed.sqlite'}")
    _ingest(_noise_items(150), undisturbed, ImageStore(str(tmp_path / "undisturbed-images")))
    with pytest.raises(RuntimeError, match="worker killed"):
        _ingest(_crash_after(_noise_items(150), 100), catalog, store)
    assert catalog.table_counts()["images"] == 64  # the first batch was committed, the second was not
    resumed = _ingest(_noise_items(150), catalog, store)
    assert (resumed.skipped, resumed.out) == (64, 86)
    assert _snapshot(catalog) == _snapshot(undisturbed)
    undisturbed.close()

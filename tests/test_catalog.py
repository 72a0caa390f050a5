"""The same module runs on SQLite and on a real PostgreSQL server (see `catalog_url`)."""

from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from flows.catalog import STAGES, Catalog, Outcome, masked_url
from flows.catalog.tables import Base
from schemas.records import ImageRecord, RecordStatus, SourceAnnotation


def _image(n: int, organ: str = "liver", **overrides) -> ImageRecord:
    values = dict(
        image_id=f"{n:064x}",
        organ=organ,
        source="phantom",
        source_ref=f"img{n}.png",
        patient_key=f"p{n // 2}",
        width=120,
        height=90,
        phash="00000000000000ff",
        split="train",
        storage_key=f"00/{n:064x}.png",
    )
    return ImageRecord(**{**values, **overrides})


def _annotation(n: int) -> SourceAnnotation:
    return SourceAnnotation(
        image_id=f"{n:064x}",
        organ="liver",
        origin="phantom",
        box=[1, 2, 30, 40],
        attributes={"echogenicity": "hypoechoic"},
        image_width=120,
        image_height=90,
    )


@pytest.fixture
def catalog(catalog_url):
    catalog = Catalog(catalog_url)
    yield catalog
    catalog.close()


def test_fresh_catalog_is_at_head_and_models_match_migrations(catalog):
    assert catalog.revision() == catalog.head_revision() == "0009"
    with catalog.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_save_and_read_back_records(catalog):
    ledger = [(f"phantom:img{n}.png", Outcome.out, None, f"{n:064x}") for n in range(3)]
    sources = [("phantom", f"ref{n}", f"{n:064x}") for n in range(3)] + [("folder", "dup", f"{1:064x}")]
    catalog.save_ingested([_image(n) for n in range(3)], [_annotation(n) for n in range(3)], ledger, sources=sources)
    image = catalog.get_image(f"{1:064x}")
    assert image == _image(1).model_copy(update={"created_at": image.created_at})
    [annotation] = catalog.source_annotations(f"{1:064x}")
    assert annotation.attributes == {"echogenicity": "Hypoechoic"} and annotation.box == [1, 2, 30, 40]
    assert [i.image_id for i in catalog.iter_images(organ="liver")] == [f"{n:064x}" for n in range(3)]
    assert catalog.image_refs(f"{1:064x}") == [("folder", "dup"), ("phantom", "ref1")]
    assert catalog.stage_item_keys("ingest") == {f"phantom:img{n}.png" for n in range(3)}
    assert [k.image_id for k in catalog.known_images()][:1] and len(list(catalog.known_images())) == 3


def test_upserts_are_idempotent(catalog):
    for _ in range(3):
        catalog.save_ingested([_image(1)], [_annotation(1)], [("phantom:img1.png", Outcome.out, None, f"{1:064x}")])
    counts = catalog.table_counts()
    assert (counts["images"], counts["source_annotations"], counts["stage_items"]) == (1, 1, 1)


def test_upsert_updates_fields_but_keeps_first_seen_time_and_split(catalog):
    first = _image(1, created_at=datetime(2026, 1, 1, tzinfo=UTC))
    catalog.save_ingested([first], [], [])
    catalog.save_ingested([_image(1, split="test", phash="1111111111111111")], [], [])
    stored = catalog.get_image(f"{1:064x}")
    assert stored.split == "train" and stored.phash == "1111111111111111"  # a split never changes
    assert stored.created_at.replace(tzinfo=UTC) == datetime(2026, 1, 1, tzinfo=UTC)


def test_status_counts_in_out_quarantined(catalog):
    catalog.save_ingested(
        [_image(1), _image(2, organ="breast"), _image(3, status=RecordStatus.quarantined, quarantine_reason="x")],
        [],
        [
            ("s:1", Outcome.out, None, "1"),
            ("s:2", Outcome.out, None, "2"),
            ("s:3", Outcome.quarantined, "image_too_small", None),
            ("s:4", Outcome.quarantined, "unreadable_image", None),
            ("s:5", Outcome.quarantined, "unreadable_image", None),
        ],
    )
    status = catalog.status()
    assert set(status["stages"]) == set(STAGES)
    assert status["stages"]["ingest"] == {
        "in": 5,
        "out": 2,
        "quarantined": {"image_too_small": 1, "unreadable_image": 2},
    }
    assert status["organs"] == {"breast": {"images": 1, "c1": 0, "c0": 0}, "liver": {"images": 1, "c1": 0, "c0": 0}}
    assert status["releases"] == []


def test_ledger_rejects_reason_mismatch_and_unknown_stage(catalog):
    with pytest.raises(ValueError, match="exactly when quarantined"):
        catalog.record_stage_items("ingest", [("k", Outcome.quarantined, None, None)])
    with pytest.raises(ValueError, match="unknown stage"):
        catalog.record_stage_items("bake", [("k", Outcome.out, None, None)])


def test_existing_catalog_upgrades_in_place(catalog_url):
    old = Catalog(catalog_url, migrate=False)
    old.upgrade("0001")
    assert old.revision() == "0001"
    with old.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO images (image_id, organ, source, source_ref, patient_key, width, height, phash, split, "
                "status, storage_key, created_at) VALUES ('" + "b" * 64 + "', 'liver', 'phantom', 'x', 'p', 10, 10, "
                "'0000000000000000', 'train', 'ok', 'k', '2026-01-01 00:00:00')"
            )
        )
    old.close()
    upgraded = Catalog(catalog_url)  # opening upgrades to head
    assert upgraded.revision() == "0009"
    assert upgraded.image_refs("b" * 64) == [("phantom", "x")]  # 0003 back-fills the source refs
    assert upgraded.get_image("b" * 64).organ == "liver"
    assert upgraded.get_image("b" * 64).deidentification is None  # ingested before 0008 recorded it
    assert upgraded.status()["stages"]["ingest"]["in"] == 0
    upgraded.close()


def test_masked_url_hides_passwords():
    assert masked_url("postgresql://user:s3cret@db:5432/x") == "postgresql://user:***@db:5432/x"
    catalog = Catalog("postgresql+psycopg://user:s3cret@127.0.0.1:1/x", migrate=False)  # connects lazily
    assert "s3cret" not in repr(catalog) and "user:***@" in repr(catalog)

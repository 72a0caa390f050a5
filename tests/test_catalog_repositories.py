"""The catalog split into one repository per record type behind the same `Catalog`; `open_catalog`;
a `StageCounter`'s ledger items in the catalog's stage ledger (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.catalog import Catalog, StageCounter, open_catalog
from flows.catalog.decisions import DecisionsRepository
from flows.catalog.images import ImagesRepository
from flows.catalog.readings import ReadingsRepository
from flows.catalog.reviews import ReviewsRepository
from flows.catalog.teacher import TeacherRepository
from flows.runtime.settings import Settings

CATALOG_DIR = Path(__file__).resolve().parents[1] / "flows" / "catalog"

# the public methods of the 535-line Catalog before the split: callers keep every one of them
PUBLIC_API_BEFORE_THE_SPLIT = [
    "revision",
    "head_revision",
    "upgrade",
    "close",
    "save_ingested",
    "save_pulled",
    "consensus_hashes",
    "save_consensus",
    "consensus_records",
    "decisions",
    "save_synthesis",
    "cached_replies",
    "cache_index",
    "rationales",
    "forget_rationales",
    "reviews",
    "save_review_tasks",
    "save_review_verdicts",
    "save_release",
    "diversity_marks",
    "save_diversity_mark",
    "record_stage_items",
    "get_image",
    "iter_images",
    "stage_item_keys",
    "known_images",
    "image_refs",
    "readings_by_image",
    "reader_annotations",
    "source_annotations",
    "stage_counts",
    "organ_counts",
    "releases",
    "status",
    "table_counts",
]

REPOSITORIES = {
    ImagesRepository: {"save_ingested", "get_image", "iter_images", "known_images", "image_refs", "source_annotations"},
    ReadingsRepository: {"save_pulled", "readings_by_image", "reader_annotations"},
    DecisionsRepository: {"save_consensus", "consensus_hashes", "consensus_records", "decisions"},
    TeacherRepository: {"save_synthesis", "cached_replies", "rationales", "forget_rationales", "diversity_marks"},
    ReviewsRepository: {"save_review_tasks", "save_review_verdicts", "reviews"},
}


def test_catalog_keeps_its_public_api():
    missing = [name for name in PUBLIC_API_BEFORE_THE_SPLIT if not callable(getattr(Catalog, name, None))]
    assert missing == []


def test_each_record_type_has_its_own_repository_behind_the_catalog():
    for repository, methods in REPOSITORIES.items():
        assert issubclass(Catalog, repository)
        defined_here = {name for name in vars(repository) if not name.startswith("_")}
        assert methods <= defined_here, f"{repository.__name__} lacks {methods - defined_here}"


def test_no_catalog_module_is_over_400_lines():
    modules = [p for p in CATALOG_DIR.rglob("*.py") if "versions" not in p.parts]
    too_long = {p.name: n for p in modules if (n := len(p.read_text().splitlines())) > 400}
    assert modules and too_long == {}


def test_open_catalog_opens_the_workspace_catalog_migrated_and_closes_it(tmp_path, monkeypatch):
    closed = []
    monkeypatch.setattr(Catalog, "close", lambda self: closed.append(self.url))
    settings = Settings(workspace=tmp_path / "ws")
    with open_catalog(settings) as catalog:
        assert catalog.url == settings.resolved_catalog_url == f"sqlite:///{(tmp_path / 'ws' / 'catalog.sqlite')}"
        assert catalog.revision() == catalog.head_revision()
        assert closed == []
    assert closed == [catalog.url]


def test_open_catalog_uses_the_configured_url_and_closes_on_error(tmp_path, monkeypatch):
    closed = []
    monkeypatch.setattr(Catalog, "close", lambda self: closed.append(self.url))
    url = f"sqlite:///{tmp_path / 'elsewhere.sqlite'}"
    settings = Settings(workspace=tmp_path / "ws", catalog_url=url)
    with pytest.raises(RuntimeError, match="stage failed"), open_catalog(settings, migrate=False) as catalog:
        assert catalog.url == url and catalog.revision() is None  # migrate=False: left as it is
        raise RuntimeError("stage failed")
    assert closed == [url]


def test_a_stage_counter_lands_in_the_stage_ledger(catalog_url):
    counter = StageCounter(stage="annotate")
    for n in range(3):
        counter.count_out(f"img-{n}", record_key=f"img-{n}")
    counter.count_quarantined("missing_image", "img-9")
    counter.check()
    catalog = Catalog(catalog_url)
    try:
        counter.record(catalog)
        counts = catalog.stage_counts()["annotate"]
        assert counts == {"in": 4, "out": 3, "quarantined": {"missing_image": 1}}
        assert counts["in"] == counts["out"] + sum(counts["quarantined"].values())
        assert catalog.stage_item_keys("annotate") == {"img-0", "img-1", "img-2", "img-9"}
        counter.record(catalog)  # nothing pending: nothing changes
        assert catalog.stage_counts()["annotate"]["in"] == 4
    finally:
        catalog.close()

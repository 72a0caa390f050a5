"""A release round trip: publish, load exactly a tag back as a trainer would, version on change only."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import load_dataset

from flows.catalog import Catalog
from flows.ingest.image_store import ImageStore
from flows.release.publish import ReleaseBlockedError, publish_release
from flows.release.repository import ReleaseError, version_path, versions
from flows.runtime.settings import load_settings
from flows.stages.synthesize import SynthesizeParams, run_synthesis
from schemas.crop import crop
from tests.release_fixtures import FRAMES, load
from tests.teacher_fixtures import phantom_consensus


def test_a_tagged_release_loads_back_equal_to_the_catalog(published, workspace):
    first, catalog = published["first"], published["catalog"]
    assert first.created and first.version == "v1.0.0" and first.rows == published["records"]
    assert sum(first.counts.values()) == first.rows
    assert len(list(published["folder"].glob("data/*/*-of-*.parquet"))) > 3  # small shards: several per split
    loaded = load(published["folder"], "v1.0.0", workspace / "versions")
    rows = {row["id"]: row for split in loaded.values() for row in split}
    assert len(rows) == first.rows
    for record in catalog.consensus_records():
        row = rows[record.record_id]
        assert (row["label"], row["confidence"], row["bbox_orig"]) == (record.label, record.confidence, record.box)
        full, zoomed = row["images"]
        expected, _ = crop(full, row["bbox"], padding=FRAMES.crop_padding)
        assert np.array_equal(np.asarray(zoomed), np.asarray(expected))
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    organ = load(published["folder"], "v1.0.0", workspace / "versions", config="thyroid")
    assert {row["organ"] for split in organ.values() for row in split} == {"thyroid"}


def test_unchanged_data_is_not_tagged_again_and_a_change_is_a_new_version(published, workspace):
    catalog, store, folder = published["catalog"], published["store"], published["folder"]
    again = publish_release(catalog, store, folder, "us-vqa", FRAMES, max_shard_bytes=200_000)
    assert (again.version, again.created) == ("v1.0.0", False)
    record = catalog.consensus_records()[0]
    flipped = record.model_copy(update={"confidence": 1 - record.confidence})
    catalog.save_consensus([(record.image_id, record.attribute, flipped, "test", None, "changed")])
    run_synthesis(SynthesizeParams(progress=False), load_settings())
    second = publish_release(catalog, store, folder, "us-vqa", FRAMES, max_shard_bytes=200_000)
    assert (second.version, second.created) == ("v1.0.1", True)
    assert versions(folder) == ["v1.0.0", "v1.0.1"]
    v1 = {r["id"]: r["confidence"] for s in load(folder, "v1.0.0", workspace / "versions").values() for r in s}
    v2 = {r["id"]: r["confidence"] for s in load(folder, "v1.0.1", workspace / "versions").values() for r in s}
    assert v1[record.record_id] != v2[record.record_id]  # a silently ignored revision could not pass this
    assert {k: v for k, v in v1.items() if k != record.record_id} == {
        k: v for k, v in v2.items() if k != record.record_id
    }
    with pytest.raises(ReleaseError, match=r"no version v9\.9\.9"):
        version_path(folder, "v9.9.9", workspace / "versions")


def test_a_failing_suite_blocks_the_release_and_leaves_the_last_one_intact(published, workspace):
    catalog, store, folder = published["catalog"], published["store"], published["folder"]
    before = sorted(p.name for p in folder.glob("data/*/*.parquet"))
    rationale = next(r for r in catalog.rationales() if r.confidence == 0)
    wrong_tone = rationale.model_copy(update={"diagnosis": f"This is clearly {rationale.label} with high certainty."})
    catalog.save_synthesis(rationales=[wrong_tone])
    with pytest.raises(ReleaseBlockedError) as blocked:
        publish_release(catalog, store, folder, "us-vqa", FRAMES, max_shard_bytes=200_000)
    failed = {f["column"]: f["rows"] for f in blocked.value.report.failures}
    assert failed == {"check_tone_matches_c": [rationale.record_id]}
    assert versions(folder) == ["v1.0.0"]
    assert sorted(p.name for p in folder.glob("data/*/*.parquet")) == before
    assert not list(folder.glob("data/*/*.partial"))


def test_cli_publish_dataset_path_and_status(workspace, prefect_api, capsys):
    from flows.cli.main import main

    settings = load_settings()
    catalog = Catalog(settings.resolved_catalog_url)
    records = phantom_consensus(catalog, ImageStore(settings.resolved_image_store_url), workspace / "src", count=6)
    assert main(["synthesize"]) == 0
    assert main(["publish", "us-vqa"]) == 0
    out = capsys.readouterr().out
    assert "us-vqa@v1.0.0 (tagged)" in out
    assert main(["dataset", "path", "us-vqa", "--version", "v1.0.0"]) == 0
    path = capsys.readouterr().out.strip().splitlines()[-1]
    loaded = load_dataset(path, "all", cache_dir=str(workspace / "hf-cache"))
    assert sum(len(split) for split in loaded.values()) == records
    status = catalog.status()
    assert status["releases"] == ["us-vqa@v1.0.0"]
    assert status["stages"]["publish"]["out"] == records == status["stages"]["publish"]["in"]
    assert (workspace / "releases" / "us-vqa.data-docs" / "index.html").exists()
    assert main(["publish", "us-vqa"]) == 0 and "unchanged, no new tag" in capsys.readouterr().out
    assert main(["dataset", "path", "us-vqa", "--version", "v7.0.0"]) == 2
    assert "no version v7.0.0" in capsys.readouterr().err
    catalog.close()

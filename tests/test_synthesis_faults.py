"""The openai backend against a scripted OpenAI-compatible server that fails on purpose.

20 % HTTP 500, 10 % timeouts, 10 % malformed JSON, 10 % wrong tone, 5 % 429: every record ends
produced or quarantined with a reason, the counts reconcile, nothing is asked again once it
succeeded, and a re-run asks the server nothing.
"""

from __future__ import annotations

import pytest

from flows.catalog import Catalog
from flows.ingest.image_store import ImageStore
from flows.runtime.settings import load_settings
from flows.stages.synthesize import SynthesizeParams, run_synthesis
from tests.scripted_openai import FaultPlan, ScriptedOpenAIServer
from tests.teacher_fixtures import phantom_consensus, template_responders

pytestmark = pytest.mark.integration
FAULTS = FaultPlan(server_error=0.2, timeout=0.1, malformed_json=0.1, wrong_tone=0.1, rate_limited=0.05, hang_s=3.0)


def params(**overrides: object) -> SynthesizeParams:
    values = {
        "backend": "openai",
        "candidates": 1,
        "concurrency": 16,
        "timeout_s": 1.0,
        "max_retries": 10,
        "backoff_s": 0.01,
        "max_regenerations": 0,  # diversity re-asks succeeded items on purpose: tested elsewhere
        "progress": False,
    }
    return SynthesizeParams(**(values | overrides))


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("faults") / "ws"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LOOKCLOSER_WORKSPACE", str(workspace))
        for name in ("CATALOG_URL", "IMAGE_STORE_URL", "TEACHER_API_KEY"):
            env.delenv(f"LOOKCLOSER_{name}", raising=False)
        settings = load_settings()
        catalog = Catalog(settings.resolved_catalog_url)
        records = phantom_consensus(catalog, ImageStore(settings.resolved_image_store_url), workspace / "src", count=40)
        good, wrong_tone = template_responders(catalog)
        with ScriptedOpenAIServer(good, faults=FAULTS, tone_flip_responder=wrong_tone) as server:
            env.setenv("LOOKCLOSER_TEACHER_BASE_URLS", server.base_url)
            env.setenv("LOOKCLOSER_TEACHER_MODEL", "scripted")
            summary = run_synthesis(params(), load_settings())
            first_log = server.log
            server.reset_log()
            rerun = run_synthesis(params(), load_settings())
            rerun_log = server.log
        yield {
            "catalog": catalog,
            "records": records,
            "summary": summary,
            "log": first_log,
            "rerun": rerun,
            "rerun_log": rerun_log,
        }
        catalog.close()


def test_every_record_is_produced_or_quarantined_and_counts_reconcile(faulty_run):
    summary, records = faulty_run["summary"], faulty_run["records"]
    assert summary.records == records > 150
    assert summary.produced + sum(summary.quarantined.values()) == records
    assert summary.produced > 0.9 * records
    stage = faulty_run["catalog"].status()["stages"]["synthesize"]
    assert stage["in"] == records == stage["out"] + sum(stage["quarantined"].values())
    assert stage["out"] == summary.produced


def test_faults_happened_and_were_retried_or_repaired(faulty_run):
    kinds = {entry.kind for entry in faulty_run["log"]}
    assert kinds == {"ok", "server_error", "timeout", "malformed_json", "wrong_tone", "rate_limited"}
    summary = faulty_run["summary"]
    assert summary.retries.get("server_error", 0) > 0 and summary.retries.get("timeout", 0) > 0
    assert summary.retries.get("rate_limited", 0) > 0
    assert summary.repaired + summary.reseeded > 0  # malformed / wrong-tone replies were fixed by the retry ladder


def test_quarantined_items_carry_specific_reasons(faulty_run):
    rationales = faulty_run["catalog"].rationales()
    for rationale in rationales:
        if not rationale.valid:
            assert rationale.validation_errors
            assert rationale.validation_errors[0] in {
                "invalid_json",
                "cautious_tone_on_agreement",
                "definitive_tone_on_disagreement",
                "missing_cautious_tone",
                "missing_definitive_tone",
            }
    assert set(faulty_run["summary"].quarantined) <= {r.validation_errors[0] for r in rationales if not r.valid} | {
        "teacher_unavailable"
    }


def test_no_item_is_requested_after_it_succeeded(faulty_run):
    """After the first good reply to the accepted call, the item is never asked anything new.

    The only later requests allowed are repeats of that same call: a good reply that reached the client
    after its timeout was lost to it, so the client retried (the server cannot tell the difference).
    """
    log = faulty_run["log"]
    produced = [r for r in faulty_run["catalog"].rationales() if r.valid]
    assert produced
    for rationale in produced:
        accepted = [e for e in log if e.item.startswith(f"{rationale.record_id}:{rationale.seed}:") and e.kind == "ok"]
        assert accepted, rationale.record_id
        first_success = min(accepted, key=lambda e: e.time)
        later = [e for e in log if e.item.startswith(rationale.record_id + ":") and e.time > first_success.time]
        assert all(e.item == first_success.item for e in later), (rationale.record_id, later)


def test_requests_carry_two_images_n_temperature_seed_and_the_schema(faulty_run):
    for entry in faulty_run["log"]:
        assert entry.images == 2
        assert entry.n == 1 and entry.temperature == pytest.approx(0.7)
        assert entry.seed is not None and entry.has_response_format


def test_a_rerun_asks_the_server_nothing(faulty_run):
    assert faulty_run["rerun_log"] == []
    rerun = faulty_run["rerun"]
    assert rerun.requested == 0 and rerun.calls == 0
    assert rerun.produced == faulty_run["summary"].produced


def test_requests_spread_over_replicas_and_avoid_a_failing_one(tmp_path, monkeypatch):
    """Two healthy replicas share the load; with one answering only 500s, every item still gets through."""
    monkeypatch.setenv("LOOKCLOSER_WORKSPACE", str(tmp_path / "ws"))
    for name in ("CATALOG_URL", "IMAGE_STORE_URL", "TEACHER_API_KEY"):
        monkeypatch.delenv(f"LOOKCLOSER_{name}", raising=False)
    settings = load_settings()
    catalog = Catalog(settings.resolved_catalog_url)
    records = phantom_consensus(catalog, ImageStore(settings.resolved_image_store_url), tmp_path / "src", count=8)
    good, _ = template_responders(catalog)
    with (
        ScriptedOpenAIServer(good, latency_s=0.02) as first,
        ScriptedOpenAIServer(good, latency_s=0.02) as second,
    ):
        monkeypatch.setenv("LOOKCLOSER_TEACHER_BASE_URLS", f"{first.base_url},{second.base_url}")
        summary = run_synthesis(params(), load_settings())
        assert summary.produced == records
        shares = [len(server.log) / summary.requests for server in (first, second)]
        assert min(shares) > 0.3, shares
    catalog.forget_rationales([r.record_id for r in catalog.rationales()])
    with (
        ScriptedOpenAIServer(good, faults=FaultPlan(server_error=1.0)) as broken,
        ScriptedOpenAIServer(good) as healthy,
    ):
        monkeypatch.setenv("LOOKCLOSER_TEACHER_BASE_URLS", f"{broken.base_url},{healthy.base_url}")
        summary = run_synthesis(params(max_retries=2, temperature=0.9), load_settings())  # not from the cache
        assert summary.produced == records and not summary.quarantined
        assert len(healthy.log) >= records and {e.kind for e in broken.log} <= {"server_error"}
    catalog.close()

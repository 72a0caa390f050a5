"""The endpoint pool: what is retried and what is not, backoff bounds, Retry-After, and the API key."""

from __future__ import annotations

import asyncio
import random

import pytest

from flows.catalog import Catalog
from flows.ingest.image_store import ImageStore
from flows.runtime.settings import load_settings
from flows.stages.synthesize import SynthesizeParams, run_synthesis
from flows.teacher.client import EndpointPool, RetryPolicy, TeacherRejectedError, TeacherUnavailableError
from tests.scripted_openai import FaultPlan, ScriptedOpenAIServer
from tests.teacher_fixtures import phantom_consensus, template_responders

GOOD = '{"search": "s", "diagnosis": "d"}'


def test_full_jitter_backoff_stays_within_its_bounds():
    policy = RetryPolicy(backoff_s=0.5, backoff_cap_s=4.0)
    rng = random.Random(0)
    for attempt in range(8):
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        ceiling = min(4.0, 0.5 * 2**attempt)
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.8 * ceiling  # jitter spreads over the whole range


def chat(pool: EndpointPool) -> object:
    return asyncio.run(pool.chat(item="x:attr:0:first", model="scripted", messages=[{"role": "user", "content": "hi"}]))


def test_transient_errors_are_retried_until_the_budget_is_spent():
    with ScriptedOpenAIServer(lambda _i, _b: GOOD, faults=FaultPlan(server_error=1.0)) as server:
        pool = EndpointPool([server.base_url], api_key=None, retry=RetryPolicy(max_retries=3, backoff_s=0.0))
        with pytest.raises(TeacherUnavailableError, match="server_error after 4 attempts"):
            chat(pool)
        assert len(server.log) == 4 and pool.stats.retries["server_error"] == 4


def test_rate_limits_are_retried_and_then_succeed():
    with ScriptedOpenAIServer(lambda _i, _b: GOOD, faults=FaultPlan(rate_limited=0.5, seed=3)) as server:
        pool = EndpointPool([server.base_url], api_key=None, retry=RetryPolicy(max_retries=20, backoff_s=0.0))

        async def ten() -> None:
            for k in range(10):
                await pool.chat(item=f"i{k}:a:0:first", model="m", messages=[{"role": "user", "content": "q"}])

        asyncio.run(ten())
        assert pool.stats.retries["rate_limited"] > 0
        assert {e.kind for e in server.log} == {"ok", "rate_limited"}


def test_a_refused_request_is_not_retried_and_the_key_is_not_in_the_error():
    secret = "sk-teacher-secret-0123456789"
    with ScriptedOpenAIServer(lambda _i, _b: GOOD, api_key="another-key") as server:
        pool = EndpointPool([server.base_url], api_key=secret, retry=RetryPolicy(max_retries=5, backoff_s=0.0))
        with pytest.raises(TeacherRejectedError) as raised:
            chat(pool)
        assert "401" in str(raised.value) and secret not in str(raised.value)
        assert pool.stats.requests == 1


def test_no_endpoint_is_a_clear_error():
    with pytest.raises(ValueError, match="LOOKCLOSER_TEACHER_BASE_URLS"):
        EndpointPool([], api_key=None, retry=RetryPolicy())


@pytest.mark.integration
def test_the_api_key_authenticates_and_never_reaches_logs_reports_or_the_catalog(workspace, monkeypatch, caplog):
    secret = "sk-teacher-secret-abcdef987654"
    settings = load_settings()
    catalog = Catalog(settings.resolved_catalog_url)
    records = phantom_consensus(catalog, ImageStore(settings.resolved_image_store_url), workspace / "src", count=3)
    good, _ = template_responders(catalog)
    caplog.set_level("DEBUG")
    with ScriptedOpenAIServer(good, api_key=secret) as server:
        monkeypatch.setenv("LOOKCLOSER_TEACHER_BASE_URLS", server.base_url)
        monkeypatch.setenv("LOOKCLOSER_TEACHER_API_KEY", secret)
        params = SynthesizeParams(backend="openai", candidates=1, max_regenerations=0, progress=False)
        summary = run_synthesis(params, load_settings())
    assert summary.produced == records  # the key was sent: the server refuses requests without it
    assert secret not in caplog.text
    dumped = "\n".join(r.model_dump_json() for r in catalog.rationales())
    dumped += "\n".join(str(row) for row in catalog.cache_index())
    assert secret not in dumped
    assert all(secret not in p.read_text(errors="ignore") for p in workspace.rglob("*") if p.suffix in {".md", ".json"})
    catalog.close()


def test_doctor_checks_each_replica_serves_the_model_with_the_key(workspace, monkeypatch):
    from flows.runtime.doctor import check_teacher

    secret = "sk-doctor-secret-42"
    with (
        ScriptedOpenAIServer(lambda _i, _b: GOOD, api_key=secret, model="Qwen/Qwen2.5-VL-72B-Instruct") as right,
        ScriptedOpenAIServer(lambda _i, _b: GOOD, api_key=secret, model="some-other-model") as wrong_model,
    ):
        monkeypatch.setenv("LOOKCLOSER_TEACHER_BASE_URLS", f"{right.base_url},{wrong_model.base_url}")
        monkeypatch.setenv("LOOKCLOSER_TEACHER_API_KEY", secret)
        checks = check_teacher(load_settings())
        assert [c.state for c in checks] == ["ok", "fail"]
        assert "some-other-model" in checks[1].detail and "LOOKCLOSER_TEACHER_MODEL" in checks[1].detail
        monkeypatch.setenv("LOOKCLOSER_TEACHER_API_KEY", "wrong-key")
        refused = check_teacher(load_settings())
        assert [c.state for c in refused] == ["fail", "fail"]
        assert all("HTTP 401" in c.detail and "LOOKCLOSER_TEACHER_API_KEY" in c.detail for c in refused)
        assert all(secret not in c.detail for c in checks + refused)

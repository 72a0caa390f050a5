"""The scripted OpenAI-compatible server, driven by the real ``openai`` AsyncOpenAI client."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from tests.scripted_openai import (
    ITEM_HEADER,
    FaultPlan,
    RequestLog,
    ScriptedOpenAIServer,
    fault_kind,
)

GOOD = '{"search": "s", "diagnosis": "d"}'
FLIPPED = '{"search": "s", "diagnosis": "DEFINITELY malignant, no doubt"}'
PNG = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)


def good(item: str, body: dict[str, Any]) -> str:
    return GOOD


def flipped(item: str, body: dict[str, Any]) -> str:
    return FLIPPED


def client_for(server: ScriptedOpenAIServer, timeout: float = 10.0) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0, timeout=timeout)


async def ask(client: AsyncOpenAI, item: str, text: str = "look closer", **kwargs: Any) -> Any:
    return await client.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": text}],
        extra_headers={ITEM_HEADER: item},
        **kwargs,
    )


async def outcome(client: AsyncOpenAI, item: str, text: str = "look closer", **kwargs: Any) -> str:
    """What the client saw, named like the server's kinds."""
    try:
        reply = await ask(client, item, text, **kwargs)
    except openai.InternalServerError as exc:
        assert exc.status_code == 500
        assert exc.response.json()["error"]["type"] == "server_error"
        return "server_error"
    except openai.RateLimitError as exc:
        assert exc.response.headers["retry-after"] == "0"
        assert exc.response.json()["error"]["code"] == "rate_limit_exceeded"
        return "rate_limited"
    except openai.APITimeoutError:
        return "timeout"
    content = reply.choices[0].message.content
    try:
        json.loads(content)
    except json.JSONDecodeError:
        return "malformed_json"
    return {GOOD: "ok", FLIPPED: "wrong_tone"}[content]


def kinds_by_item(log: list[RequestLog]) -> dict[str, list[str]]:
    by_item: dict[str, list[str]] = {}
    for entry in sorted(log, key=lambda e: (e.item, e.attempt)):
        by_item.setdefault(entry.item, []).append(entry.kind)
    return by_item


def test_ok_reply_with_three_choices_is_logged_in_full() -> None:
    calls: list[tuple[str, int]] = []

    def responder(item: str, body: dict[str, Any]) -> str:
        calls.append((item, body["_choice_index"]))
        return GOOD

    async def scenario(server: ScriptedOpenAIServer) -> None:
        async with client_for(server) as client:
            reply = await client.chat.completions.create(
                model="teacher",
                messages=[
                    {"role": "system", "content": "You are a radiologist."},
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Compare the two views."},
                            {"type": "image_url", "image_url": {"url": PNG}},
                            {"type": "image_url", "image_url": {"url": PNG}},
                        ],
                    },
                ],
                n=3,
                temperature=0.7,
                seed=11,
                response_format={"type": "json_object"},
                extra_headers={ITEM_HEADER: "case-17"},
            )
            assert [choice.index for choice in reply.choices] == [0, 1, 2]
            assert all(json.loads(c.message.content) == {"search": "s", "diagnosis": "d"} for c in reply.choices)
            assert all(c.finish_reason == "stop" and c.message.role == "assistant" for c in reply.choices)
            assert reply.object == "chat.completion" and reply.model == "teacher"
            assert reply.usage is not None
            assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens > 0

            plain = await client.chat.completions.create(
                model="scripted", messages=[{"role": "user", "content": "hello"}]
            )
            assert len(plain.choices) == 1
            models = await client.models.list()
            assert [m.id for m in models.data] == ["scripted"]

    with ScriptedOpenAIServer(responder) as server:
        asyncio.run(scenario(server))
        health = httpx.get(server.base_url.removesuffix("/v1") + "/health")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        log = server.log

    assert calls == [("case-17", 0), ("case-17", 1), ("case-17", 2), ("", 0)]
    assert len(log) == 2
    first, second = log
    assert (first.item, first.kind, first.n, first.temperature, first.seed) == ("case-17", "ok", 3, 0.7, 11)
    assert first.has_response_format is True and first.images == 2 and first.attempt == 0
    assert (second.item, second.kind, second.n, second.temperature, second.seed) == ("", "ok", 1, None, None)
    assert second.has_response_format is False and second.images == 0
    assert first.time <= second.time


def test_log_is_a_copy_and_reset_empties_it() -> None:
    async def scenario(server: ScriptedOpenAIServer) -> None:
        async with client_for(server) as client:
            await ask(client, "a")
            await ask(client, "a")

    with ScriptedOpenAIServer(good) as server:
        asyncio.run(scenario(server))
        copy = server.log
        copy.clear()
        assert [e.attempt for e in server.log] == [0, 1]
        server.reset_log()
        assert server.log == []
    server.stop()  # idempotent


def test_bad_requests_are_rejected_and_logged() -> None:
    with ScriptedOpenAIServer(good) as server:
        url = server.base_url + "/chat/completions"
        streaming = httpx.post(url, json={"model": "m", "messages": [], "stream": True}, headers={ITEM_HEADER: "x"})
        not_json = httpx.post(url, content=b"{not json")
        bad_n = httpx.post(url, json={"model": "m", "messages": [], "n": 0})
        assert [r.status_code for r in (streaming, not_json, bad_n)] == [400, 400, 400]
        assert streaming.json()["error"]["type"] == "invalid_request_error"
        assert [(e.item, e.kind) for e in server.log] == [
            ("x", "bad_request"),
            ("", "bad_request"),
            ("", "bad_request"),
        ]


def test_fault_plan_rejects_impossible_fractions() -> None:
    with pytest.raises(ValueError):
        FaultPlan(server_error=0.6, malformed_json=0.5)
    with pytest.raises(ValueError):
        FaultPlan(timeout=-0.1)


def test_observed_fault_fractions_match_the_plan() -> None:
    plan = FaultPlan(server_error=0.2, timeout=0.1, malformed_json=0.1, wrong_tone=0.1, rate_limited=0.05, hang_s=4.0)
    total = 400

    async def scenario(server: ScriptedOpenAIServer) -> dict[str, str]:
        gate = asyncio.Semaphore(50)

        async def one(client: AsyncOpenAI, item: str) -> tuple[str, str]:
            async with gate:
                return item, await outcome(client, item)

        # Timeout faults hang 4 s on the server and the client gives up after 1.5 s: wide margins, so that
        # on a busy machine a slow good reply is not taken for a timeout
        async with client_for(server, timeout=1.5) as client:
            results = await asyncio.gather(*(one(client, f"item-{i:03d}") for i in range(total)))
        return dict(results)

    with ScriptedOpenAIServer(good, faults=plan, tone_flip_responder=flipped) as server:
        seen = asyncio.run(scenario(server))
        log = server.log

    assert len(log) == total and len({e.item for e in log}) == total
    logged = {e.item: e.kind for e in log}
    assert seen == logged  # what the client saw is what the server meant to do
    assert all(e.kind == fault_kind(plan, e.item, e.body_hash, e.attempt) for e in log)
    counts = Counter(logged.values())
    expected = {
        "server_error": 0.2,
        "timeout": 0.1,
        "malformed_json": 0.1,
        "wrong_tone": 0.1,
        "rate_limited": 0.05,
        "ok": 0.45,
    }
    for kind, rate in expected.items():
        assert abs(counts[kind] / total - rate) <= 0.06, (kind, counts)


def test_content_faults_repeat_and_transport_faults_clear() -> None:
    plan = FaultPlan(server_error=0.3, malformed_json=0.3, wrong_tone=0.3, seed=5)
    items = [f"case-{i}" for i in range(12)]

    async def repeat_each(server: ScriptedOpenAIServer, times: int) -> dict[str, list[str]]:
        async with client_for(server) as client:

            async def repeated(item: str) -> list[str]:
                return [await outcome(client, item) for _ in range(times)]

            return dict(zip(items, await asyncio.gather(*(repeated(item) for item in items)), strict=True))

    with ScriptedOpenAIServer(good, faults=plan, tone_flip_responder=flipped) as server:
        seen = asyncio.run(repeat_each(server, 8))
        first_run = kinds_by_item(server.log)
    assert seen == first_run
    content_kinds: set[str] = set()
    for item, kinds in seen.items():
        passed = {kind for kind in kinds if kind != "server_error"}
        assert len(passed) == 1, (item, kinds)  # the same content fault (or none) on every identical retry
        content_kinds |= passed
    assert content_kinds == {"ok", "malformed_json", "wrong_tone"}
    assert any("server_error" in kinds and len(set(kinds)) == 2 for kinds in seen.values())

    # A fresh server with the same seed decides the same; another seed decides otherwise
    with ScriptedOpenAIServer(good, faults=plan, tone_flip_responder=flipped) as server:
        assert asyncio.run(repeat_each(server, 8)) == first_run
    other = FaultPlan(server_error=0.3, malformed_json=0.3, wrong_tone=0.3, seed=6)
    with ScriptedOpenAIServer(good, faults=other, tone_flip_responder=flipped) as server:
        assert asyncio.run(repeat_each(server, 8)) != first_run


def test_server_error_clears_on_retry() -> None:
    async def scenario(server: ScriptedOpenAIServer) -> tuple[str, list[str]]:
        async with client_for(server) as client:
            item = ""
            for i in range(100):
                if await outcome(client, f"retry-{i}") == "server_error":
                    item = f"retry-{i}"
                    break
            assert item, "no request drew a server error"
            tries = [await outcome(client, item)]
            while tries[-1] == "server_error" and len(tries) < 20:
                tries.append(await outcome(client, item))
            return item, tries

    with ScriptedOpenAIServer(good, faults=FaultPlan(server_error=0.5, seed=3)) as server:
        item, tries = asyncio.run(scenario(server))
        logged = [e.kind for e in server.log if e.item == item]
    assert tries[-1] == "ok", tries
    assert logged == ["server_error", *tries]


def test_a_repair_request_with_a_new_body_may_pass_a_content_fault() -> None:
    async def scenario(server: ScriptedOpenAIServer) -> tuple[list[str], list[str]]:
        async with client_for(server) as client:
            same = [await outcome(client, "nodule") for _ in range(4)]
            repairs = [await outcome(client, "nodule", f"look closer (repair {i})") for i in range(20)]
            return same, repairs

    plan = FaultPlan(malformed_json=0.5, seed=1)
    with ScriptedOpenAIServer(good, faults=plan) as server:
        same, repairs = asyncio.run(scenario(server))
    assert len(set(same)) == 1  # identical retries: identical content fault
    assert set(repairs) == {"ok", "malformed_json"}  # new bodies draw afresh


def test_latency_is_applied_to_concurrent_requests() -> None:
    async def scenario(server: ScriptedOpenAIServer) -> list[str]:
        async with client_for(server) as client:
            return list(await asyncio.gather(*(outcome(client, f"slow-{i}") for i in range(20))))

    with ScriptedOpenAIServer(good, latency_s=0.2) as server:
        seen = asyncio.run(scenario(server))
        log = server.log
    assert seen == ["ok"] * 20
    assert len(log) == 20 and {e.item for e in log} == {f"slow-{i}" for i in range(20)}

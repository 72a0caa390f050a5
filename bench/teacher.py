"""Teacher synthesis throughput against a scripted OpenAI-compatible server, in one run.

    .venv/bin/python bench/teacher.py [--images 120] [--concurrency 32] [--latency 0.05]

Phantom consensus records are made once (not timed). A scripted server (own process, fixed latency
per request, template replies, no faults) answers. Then, at the same concurrency:

1. bare: an `asyncio` + `openai` loop sends one request per record with the same payload the
   pipeline sends (messages with both images, n, seed, JSON schema), built beforehand;
2. pipeline: `synthesize_records` on a fresh catalog (image preparation, requests, checks, durable
   cache, catalog writes, the diversity pass with regeneration off);
3. fully cached re-run: the same command again: every record is settled, nothing is asked;
4. cache-only re-run: rationales dropped, the reply cache kept: every record is resolved from the cache.

Steps 1 and 2 alternate `--rounds` times and their medians are compared. Prints pipeline / bare
(target >= 0.85) and the fully cached re-run's items/s (target >= 2000, zero requests). On a small
machine the bare loop itself is CPU-bound at 50 ms latency (its wall time equals its CPU time), so
every millisecond of the pipeline's own work per item shows in the ratio; `--latency 0.5` is closer
to a 72B teacher.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from openai import AsyncOpenAI
from sqlalchemy import delete
from sqlalchemy.orm import Session

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flows.catalog import Catalog  # noqa: E402
from flows.catalog.tables import DiversityMarkRow, RationaleRow, StageItemRow, TeacherCacheRow  # noqa: E402
from flows.ingest.image_store import ImageStore  # noqa: E402
from flows.teacher.backends import OpenAIBackend, SamplingParams, TeacherCall  # noqa: E402
from flows.teacher.client import EndpointPool, RetryPolicy  # noqa: E402
from flows.teacher.diversity import DiversityPolicy  # noqa: E402
from flows.teacher.images import TeacherImages  # noqa: E402
from flows.teacher.prompting import load_prompt_bundle  # noqa: E402
from flows.teacher.synthesis import SynthesisConfig, build_request, synthesize_records  # noqa: E402
from schemas.frames import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS  # noqa: E402
from tests.teacher_fixtures import phantom_consensus  # noqa: E402

RATIO_TARGET = 0.85
CACHED_TARGET = 2000.0
SERVER = """
import sys, time
sys.path.insert(0, {repo!r})
from flows.catalog import Catalog
from tests.scripted_openai import ScriptedOpenAIServer
from tests.teacher_fixtures import template_responders
good, _ = template_responders(Catalog({url!r}, migrate=False))
server = ScriptedOpenAIServer(good, latency_s={latency}).start()
print(server.base_url, flush=True)
time.sleep(10**6)
"""


def start_server(url: str, latency: float) -> tuple[subprocess.Popen, str]:
    code = SERVER.format(repo=str(REPO), url=url, latency=latency)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    base_url = process.stdout.readline().strip()
    if not base_url.startswith("http"):
        raise RuntimeError("scripted server did not start")
    return process, base_url


def make_backend(base_url: str, store: ImageStore, sampling: SamplingParams) -> tuple[OpenAIBackend, EndpointPool]:
    pool = EndpointPool([base_url], api_key=None, retry=RetryPolicy(max_retries=3, backoff_s=0.05, timeout_s=30))
    images = TeacherImages(store, min_pixels=DEFAULT_MIN_PIXELS, max_pixels=DEFAULT_MAX_PIXELS, padding=0.0)
    return OpenAIBackend(load_prompt_bundle(), pool, "scripted", images, sampling), pool


async def bare_loop(base_url: str, payloads: list[dict], concurrency: int) -> float:
    client = AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0, timeout=30)
    gate = asyncio.Semaphore(concurrency)

    async def one(payload: dict) -> None:
        async with gate:
            await client.chat.completions.create(**payload)

    start = time.perf_counter()
    await asyncio.gather(*(one(p) for p in payloads))
    elapsed = time.perf_counter() - start
    await client.close()
    return elapsed


async def build_payloads(backend: OpenAIBackend, requests: list, sampling: SamplingParams) -> list[dict]:
    payloads = []
    for request in requests:
        call = TeacherCall(request, 0)
        payloads.append(
            {
                "model": "scripted",
                "messages": await backend.messages(call),
                "n": sampling.n,
                "temperature": sampling.temperature,
                "max_tokens": sampling.max_tokens,
                "seed": 0,
                "extra_headers": {"X-Lookcloser-Item": f"{request.item_key}:0:first"},
                "response_format": {"type": "json_schema", "json_schema": {"name": "z", "schema": {}}},
            }
        )
    return payloads


def timed_pipeline(catalog: Catalog, backend: OpenAIBackend, config: SynthesisConfig) -> tuple[float, object]:
    async def run() -> object:
        return await synthesize_records(catalog.consensus_records(), catalog, backend, load_prompt_bundle(), config)

    start = time.perf_counter()
    summary = asyncio.run(run())
    return time.perf_counter() - start, summary


def forget_everything(catalog: Catalog) -> None:
    """Back to a catalog with consensus records only: no rationales, no cached replies."""
    drop_rationales(catalog)
    with Session(catalog.engine) as session, session.begin():
        session.execute(delete(TeacherCacheRow))


def drop_rationales(catalog: Catalog) -> None:
    with Session(catalog.engine) as session, session.begin():
        session.execute(delete(RationaleRow))
        session.execute(delete(DiversityMarkRow))
        session.execute(delete(StageItemRow).where(StageItemRow.stage == "synthesize"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--rounds", type=int, default=3, help="bare/pipeline pairs; medians are compared")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        url = f"sqlite:///{work / 'catalog.sqlite'}"
        catalog, store = Catalog(url), ImageStore(str(work / "images"))
        records = phantom_consensus(catalog, store, work / "src", count=args.images)
        process, base_url = start_server(url, args.latency)
        try:
            sampling = SamplingParams(n=1)
            config = SynthesisConfig(
                sampling=sampling, diversity=DiversityPolicy(max_regenerations=0), concurrency=args.concurrency
            )
            backend, pool = make_backend(base_url, store, sampling)
            frame = {"min_pixels": DEFAULT_MIN_PIXELS, "max_pixels": DEFAULT_MAX_PIXELS}
            requests = [build_request(r, **frame) for r in catalog.consensus_records()]
            payloads = asyncio.run(build_payloads(backend, requests, sampling))
            bares, pipelines = [], []
            for _round in range(args.rounds):  # alternate, so drifting machine load hits both alike
                bares.append(asyncio.run(bare_loop(base_url, payloads, args.concurrency)))
                forget_everything(catalog)
                backend, pool = make_backend(base_url, store, sampling)
                startup = backend.images.start()  # a fixed cost per run, reported apart from the throughput
                seconds, summary = timed_pipeline(catalog, backend, config)
                backend.close()
                pipelines.append(seconds)
                requests_made = pool.stats.requests
            bare, pipeline = statistics.median(bares), statistics.median(pipelines)
            backend, settled_pool = make_backend(base_url, store, sampling)
            settled, _ = timed_pipeline(catalog, backend, config)
            drop_rationales(catalog)
            backend, pool = make_backend(base_url, store, sampling)
            cached, cached_summary = timed_pipeline(catalog, backend, config)
        finally:
            process.terminate()
            process.wait()
    print(f"records {records}, concurrency {args.concurrency}, server latency {args.latency * 1000:.0f} ms")
    print(f"bare asyncio+openai loop (median of {args.rounds}): {bare:.2f} s, {records / bare:.0f} items/s")
    print(
        f"pipeline (median of {args.rounds}): {pipeline:.2f} s, {records / pipeline:.0f} items/s "
        f"({requests_made} requests, {summary.produced} produced; image workers started beforehand in {startup:.1f} s)"
    )
    ratio = bare / pipeline
    print(f"throughput ratio pipeline / bare: {ratio:.2f} (target >= {RATIO_TARGET}: {_met(ratio >= RATIO_TARGET)})")
    rate = records / settled
    made = settled_pool.stats.requests
    print(
        f"fully cached re-run: {settled:.3f} s, {rate:.0f} items/s, {made} requests "
        f"(target >= {CACHED_TARGET:.0f} items/s and 0 requests: {_met(rate >= CACHED_TARGET and made == 0)})"
    )
    print(
        f"cache-only re-run (no target; rationales dropped, every reply read back from the cache and checked "
        f"again): {cached:.3f} s, {records / cached:.0f} items/s, {pool.stats.requests} requests"
    )
    assert cached_summary.cached_calls >= records, "the cache-only re-run did not use the cache"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()

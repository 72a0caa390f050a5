"""Synthesize stage: consensus records → confidence-toned Zoom-then-Diagnose rationales (DESIGN §5).

The engine lives in `flows.teacher.synthesis`; this module builds the backend from settings and run
parameters, runs it with a progress bar, and reports counts and samples (`flows.reports.synthesis`) as a
Prefect artifact.
"""

from __future__ import annotations

import asyncio
import json
import logging

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from tqdm import tqdm

from flows.catalog import open_catalog
from flows.catalog.locks import stage_lock
from flows.ingest.image_store import ImageStore
from flows.reports.synthesis import report_markdown
from flows.runtime.settings import Settings, load_settings
from flows.runtime.task_runners import ConfiguredTaskRunner, in_order, is_distributed
from flows.stages.params import SynthesizeParams
from flows.teacher.backends import Backend, OpenAIBackend, TemplateBackend
from flows.teacher.client import EndpointPool, RetryPolicy
from flows.teacher.images import TeacherImages
from flows.teacher.prompting import load_prompt_bundle
from flows.teacher.synthesis import SynthesisSummary, synthesize_records

log = logging.getLogger(__name__)


class TeacherConfigError(ValueError):
    """A synthesis run that cannot start as configured (one line, names the setting)."""


def check_config(params: SynthesizeParams, settings: Settings) -> None:
    """Fail before any work, in one line, on an unknown prompt version or a missing endpoint."""
    load_prompt_bundle(params.prompt_version)
    if params.backend == "openai" and not settings.teacher_base_urls:
        raise TeacherConfigError("the openai backend needs LOOKCLOSER_TEACHER_BASE_URLS (comma-separated replicas)")


def build_backend(params: SynthesizeParams, settings: Settings) -> tuple[Backend, EndpointPool | None]:
    """The backend the parameters ask for; TeacherConfigError when the settings cannot support it."""
    check_config(params, settings)
    bundle = load_prompt_bundle(params.prompt_version)
    if params.backend == "template":
        return TemplateBackend(bundle), None
    pool = EndpointPool(
        [str(u) for u in settings.teacher_base_urls],
        api_key=settings.teacher_api_key.get_secret_value() if settings.teacher_api_key else None,
        retry=RetryPolicy(max_retries=params.max_retries, backoff_s=params.backoff_s, timeout_s=params.timeout_s),
    )
    images = TeacherImages(
        ImageStore(settings.resolved_image_store_url),
        min_pixels=settings.min_pixels,
        max_pixels=settings.max_pixels,
        padding=settings.crop_padding,
    )
    sampling = params.synthesis_config(settings).sampling
    return OpenAIBackend(bundle, pool, settings.teacher_model, images, sampling), pool


def run_synthesis(params: SynthesizeParams, settings: Settings, *, only: set[str] | None = None) -> SynthesisSummary:
    """Synthesize rationales for every consensus record (of the organ); plain function, no Prefect needed.

    `only` restricts the run to these record ids: one shard's first pass (see `synthesize_records`).
    """
    backend, pool = build_backend(params, settings)
    with open_catalog(settings) as catalog:
        records = catalog.consensus_records(params.organ)
        if only is not None:
            records = [r for r in records if r.record_id in only]
        bar = tqdm(total=0, desc="synthesize", unit="item", disable=None if params.progress else True)
        outcomes: dict[str, int] = {}

        def on_progress(event: str, in_flight: int) -> None:
            outcomes[event] = outcomes.get(event, 0) + 1
            bar.update(1)
            bar.set_postfix(
                in_flight=pool.total_in_flight if pool else in_flight,
                ok=outcomes.get("produced", 0),
                quarantined=sum(n for e, n in outcomes.items() if e != "produced"),
                refresh=False,
            )

        async def run() -> SynthesisSummary:
            try:
                return await synthesize_records(
                    records,
                    catalog,
                    backend,
                    load_prompt_bundle(params.prompt_version),
                    params.synthesis_config(settings),
                    organ=params.organ,
                    shard=only is not None,
                    on_plan=lambda todo: setattr(bar, "total", todo),
                    on_progress=on_progress,
                )
            finally:
                if pool is not None:
                    await pool.close()
                    backend.close()

        summary = asyncio.run(run())
        bar.close()
        if pool is not None:
            summary.requests = pool.stats.requests
            summary.retries = dict(pool.stats.retries)
            summary.prompt_tokens = pool.stats.prompt_tokens
            summary.completion_tokens = pool.stats.completion_tokens
            summary.images_per_request = dict(pool.stats.images_per_request)
        log.info("synthesize: %s", json.dumps(summary.as_dict()))
        return summary


@task
def synthesize_task(params: SynthesizeParams) -> SynthesisSummary:
    return run_synthesis(params, load_settings())


@task(cache_policy=NO_CACHE, persist_result=False)
def synthesize_shard(params: SynthesizeParams, record_ids: list[str]) -> SynthesisSummary:
    """One shard's first pass, on a cluster worker (its own connection to the catalog and the replicas)."""
    return run_synthesis(params, load_settings(), only=set(record_ids))


def shard_record_ids(settings: Settings, organ: str | None, shards: int) -> list[list[str]]:
    """Every consensus record id, dealt round-robin into `shards` lists (organs and attributes mix evenly)."""
    with open_catalog(settings) as catalog:
        ids = [r.record_id for r in catalog.consensus_records(organ)]
    return [part for part in (ids[k::shards] for k in range(shards)) if part]


def synthesize_on_cluster(params: SynthesizeParams, settings: Settings) -> list[SynthesisSummary]:
    """First passes of every shard on the flow's Dask / Ray workers; the requests in flight are shared out."""
    per_worker = params.model_copy(
        update={"concurrency": max(1, params.concurrency // settings.workers), "progress": False}
    )
    parts = shard_record_ids(settings, params.organ, 2 * settings.workers)
    return list(in_order(lambda ids: synthesize_shard.submit(per_worker, ids), parts, window=len(parts) or 1))


@task
def report_task(summary: SynthesisSummary) -> str:
    settings = load_settings()
    with open_catalog(settings) as catalog:
        markdown = report_markdown(summary, catalog.rationales())
    folder = settings.workspace / "reports" / "synthesis"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(summary.as_dict(), indent=2))
    (folder / "report.md").write_text(markdown)
    create_markdown_artifact(key="teacher-synthesis", markdown=markdown, description="teacher synthesis outcomes")
    return markdown


@flow(name="synthesize", task_runner=ConfiguredTaskRunner())
def synthesize_flow(params: SynthesizeParams | None = None) -> SynthesisSummary:
    """Write a checked, confidence-toned rationale for every consensus record.

    On a Dask or Ray task runner the records are first synthesized in shards on the workers; the
    whole run then finds them settled and does what needs every record (stale ones, diversity).
    """
    params = params or SynthesizeParams()
    settings = load_settings()
    check_config(params, settings)
    with stage_lock(settings.resolved_catalog_url, "synthesize"):
        shards = synthesize_on_cluster(params, settings) if is_distributed(settings) else []
        summary = synthesize_task(params)
        for shard in shards:
            summary.add_work(shard)
        report_task(summary)
    return summary

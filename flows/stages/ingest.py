"""Ingest stage: any source → de-identified, content-addressed images in the catalog (Prefect flow).

The flow only sequences tasks; the logic is in `flows.ingest.core` and the adapters in
`flows.ingest.sources`. Items are processed in batches (a Prefect task per image would cost ~10 ms of
orchestration each).
With the default task runner one task does it all. With `LOOKCLOSER_TASK_RUNNER=dask|ray` each batch
of 64 items is a task on the cluster (decode, de-identify, hash, store: the costly part), and the flow
settles the results in source order (duplicates, near-duplicate groups, splits), so the catalog ends
the same as after a single-process run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.catalog import open_catalog
from flows.catalog.base import SaltMismatchError
from flows.catalog.locks import stage_lock
from flows.ingest.core import (
    BatchPreparer,
    IngestSummary,
    PreparedItem,
    prepare_batch,
    register_items,
)
from flows.ingest.deid.redact import BurnedInTextPolicy
from flows.ingest.image_store import ImageStore
from flows.ingest.source_registry import resolve_source
from flows.ingest.sources.base import SourceItem
from flows.ingest.sources.registry import adapter_arguments, source_adapter
from flows.reports.deidentification import deidentification_counts, deidentification_markdown
from flows.runtime.settings import Settings, SettingsError, load_settings, salt_fingerprint
from flows.runtime.task_runners import ConfiguredTaskRunner, in_order, is_distributed
from flows.stages.params import IngestParams


def source_items(params: IngestParams) -> tuple[Iterator[SourceItem], int | None]:
    """The adapter's items and, when known, how many there are."""
    adapter = source_adapter(params.kind)
    if adapter.path == "none":  # a generator (the phantom): `count` images from `seed`, written into the workspace
        root = load_settings().workspace / "sources"
        return adapter.iter_items(root, organ=params.organ, seed=params.seed, count=params.count), params.count
    kwargs = adapter_arguments(adapter, params.organ, params.adapter_options)
    entry = resolve_source(load_settings().workspace, str(params.path))
    source = entry["location"] if adapter.path == "dataset id" else Path(entry["location"])
    return scoped(adapter.iter_items(source, **kwargs), params.source_name or entry["scope"]), None


def scoped(items: Iterator[SourceItem], scope: str) -> Iterator[SourceItem]:
    """Prefix every ref with the source's scope: `benign/1.png` of two BUSI copies are two items."""
    for item in items:
        item.source_ref = f"{scope}/{item.source_ref}"
        yield item


@task(persist_result=False)
def migrate_catalog() -> str:
    """Create or upgrade the catalog schema; returns the revision."""
    with open_catalog(load_settings()) as catalog:
        return catalog.revision() or ""


def register_source(params: IngestParams, settings: Settings, preparer: BatchPreparer | None = None) -> IngestSummary:
    """Read the source and register every item (batched, resumable); `preparer` as in `register_items`."""
    with open_catalog(settings) as catalog:
        # refs and patient keys are salted: a catalog keyed with another salt would silently split patients
        try:
            catalog.bind_salt_fingerprint(salt_fingerprint(settings.salt()))
        except SaltMismatchError as err:
            raise SettingsError(str(err)) from None  # a misconfiguration: one line, exit code 2
        items, total = source_items(params)
        store = ImageStore(settings.resolved_image_store_url)
        return register_items(items, catalog, store, settings.salt(), params.options, total=total, preparer=preparer)


@task(persist_result=False)  # results and parameters hold no paths; nothing of a run is written to storage
def ingest_source(params: IngestParams) -> IngestSummary:
    """Every item prepared and settled in this process."""
    return register_source(params, load_settings())


def summary_markdown(kind: str, summary: IngestSummary) -> str:
    """Counts per organ, split and quarantine reason, as the run's Prefect artifact shows them."""
    lines = [
        f"# Ingest: {kind}",
        "",
        "| seen | new images | already ingested | quarantined |",
        "|---:|---:|---:|---:|",
        f"| {summary.seen} | {summary.out} | {summary.skipped} | {sum(summary.quarantined.values())} |",
    ]
    for title, counts in (
        ("organ", summary.per_organ),
        ("split", summary.per_split),
        ("quarantine reason", summary.quarantined),
    ):
        if counts:
            lines += ["", f"| {title} | images |", "|---|---:|"]
            lines += [f"| `{key}` | {n} |" for key, n in sorted(counts.items())]
    return "\n".join(lines) + "\n"


@task(persist_result=False)
def report_ingest(params: IngestParams, summary: IngestSummary) -> None:
    with open_catalog(load_settings()) as catalog:
        deidentification = deidentification_markdown(deidentification_counts(catalog))
    create_markdown_artifact(
        key="ingest-summary",
        markdown=summary_markdown(params.kind, summary) + "\n" + deidentification,
        description="ingest counts and de-identification per source",
    )


class WorkerSettingsError(RuntimeError):
    """A worker's settings differ from the flow's: its refs and keys would not match the catalog's."""

    permanent = True  # sending the batch to another worker of the same cluster cannot help


def settings_fingerprint(settings: Settings) -> str:
    """What a worker must share with the flow: the salt (as a digest, never the salt) and the image store."""
    digest = hashlib.sha256(settings.salt() + b"\0" + settings.resolved_image_store_url.encode()).hexdigest()
    return digest[:16]


@task(cache_policy=NO_CACHE, persist_result=False)
def prepare_batch_task(
    items: list[SourceItem], fingerprint: str, policy: BurnedInTextPolicy | None
) -> list[PreparedItem]:
    """The per-item work of one batch, on a worker; salt and store come from the worker's own settings."""
    settings = load_settings()
    if settings_fingerprint(settings) != fingerprint:
        raise WorkerSettingsError(
            "a worker's LOOKCLOSER_PATIENT_KEY_SALT / LOOKCLOSER_IMAGE_STORE_URL (or workspace) differ from the "
            "flow's: start the workers with the same settings"
        )
    return prepare_batch(items, settings.salt(), ImageStore(settings.resolved_image_store_url), policy)


def ingest_on_cluster(params: IngestParams, settings: Settings) -> IngestSummary:
    """Batches prepared by the flow's Dask / Ray workers, settled here in order (one transaction each)."""
    fingerprint = settings_fingerprint(settings)  # creates the salt before any worker needs it
    window = 2 * settings.workers + 2  # enough to keep every worker busy; bounds the pixels in memory

    def preparer(batches: Iterable[list[SourceItem]]) -> Iterator[list[PreparedItem]]:
        return in_order(
            lambda batch: prepare_batch_task.submit(batch, fingerprint, params.options.burned_in_text),
            batches,
            window=window,
        )

    return register_source(params, settings, preparer)


@flow(name="ingest", task_runner=ConfiguredTaskRunner(), persist_result=False)
def ingest_flow(params: IngestParams | None = None) -> IngestSummary:
    """Ingest one source into the catalog and image store."""
    params = params or IngestParams()
    settings = load_settings()
    # the known images are read once, at the start: two ingests must not overlap
    with stage_lock(settings.resolved_catalog_url, "ingest", wait_seconds=params.wait_for_other_ingest_s):
        migrate_catalog()
        summary = ingest_on_cluster(params, settings) if is_distributed(settings) else ingest_source(params)
        summary.source_id = params.path if source_adapter(params.kind).path != "none" else None
        report_ingest(params, summary)
    return summary

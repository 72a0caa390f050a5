"""Ingest stage: any source → de-identified, content-addressed images in the catalog (Prefect flow).

The flow only sequences tasks; the logic is in `flows.ingestion` and `flows.sources`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from flows.catalog import Catalog
from flows.image_store import ImageStore
from flows.ingestion import IngestOptions, IngestSummary, register_items
from flows.settings import load_settings
from flows.sources.base import SourceItem
from flows.sources.phantom import PhantomConfig, phantom_items
from schemas.records import Organ
from schemas.vocabulary import ORGANS

SourceKind = Literal["phantom"]  # the ingest issue adds: folder manifest buscot ddti dicom hf


class IngestParams(BaseModel):
    """Parameters of one ingest run (the form in the Prefect UI)."""

    kind: SourceKind = "phantom"
    organ: Organ | None = Field(default=None, description="only this organ (default: all)")
    count: int = Field(default=30, ge=1, description="phantom: number of images")
    seed: int = Field(default=0, ge=0, description="phantom: random seed")
    options: IngestOptions = Field(default_factory=IngestOptions)


def source_items(params: IngestParams) -> tuple[Iterator[SourceItem], int | None]:
    """The adapter's items and, when known, how many there are."""
    settings = load_settings()
    organs = (params.organ,) if params.organ else ORGANS
    config = PhantomConfig(organs=organs)
    items = phantom_items(settings.workspace / "sources", seed=params.seed, count=params.count, config=config)
    return items, params.count


@task
def migrate_catalog() -> str:
    """Create or upgrade the catalog schema; returns the revision."""
    catalog = Catalog(load_settings().resolved_catalog_url)
    try:
        return catalog.revision() or ""
    finally:
        catalog.close()


@task
def ingest_source(params: IngestParams) -> IngestSummary:
    settings = load_settings()
    catalog = Catalog(settings.resolved_catalog_url)
    try:
        items, total = source_items(params)
        store = ImageStore(settings.resolved_image_store_url)
        return register_items(items, catalog, store, settings.salt(), params.options, total=total)
    finally:
        catalog.close()


@task
def report_ingest(params: IngestParams, summary: IngestSummary) -> None:
    lines = [
        f"# Ingest ({params.kind})",
        "",
        "| seen | out | quarantined |",
        "|---|---|---|",
        f"| {summary.seen} | {summary.out} | {sum(summary.quarantined.values())} |",
        "",
    ]
    lines += [f"* `{reason}`: {n}" for reason, n in sorted(summary.quarantined.items())]
    create_markdown_artifact(key="ingest-summary", markdown="\n".join(lines), description="ingest counts")


@flow(name="ingest")
def ingest_flow(params: IngestParams | None = None) -> IngestSummary:
    """Ingest one source into the catalog and image store."""
    params = params or IngestParams()
    migrate_catalog()
    summary = ingest_source(params)
    report_ingest(params, summary)
    return summary

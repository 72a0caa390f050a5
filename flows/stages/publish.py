"""Publish stage: validate the catalog's rows and write a tagged release (DESIGN §6), as a Prefect flow.

The logic is in `flows.release`; this module names the folders (release, Data Docs next to it,
version worktrees), records the release in the catalog and reports it as an artifact.
"""

from __future__ import annotations

import logging
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.catalog import open_catalog
from flows.catalog.locks import stage_lock
from flows.ingest.image_store import ImageStore
from flows.release.card import load_provenance
from flows.release.folders import docs_folder, release_folder, worktrees_folder
from flows.release.hub import HubApi, HubPush, hub_api, sync_versions
from flows.release.publish import ReleaseSummary, publish_release
from flows.release.repository import commit_of, version_path, versions
from flows.release.rows import FrameSettings
from flows.release.validation import DistributionBounds
from flows.reports.agreement import agreement_folder
from flows.runtime.settings import Settings, SettingsError, load_settings
from flows.stages.params import PublishParams

log = logging.getLogger(__name__)


def frame_settings(settings: Settings) -> FrameSettings:
    return FrameSettings(
        min_pixels=settings.min_pixels, max_pixels=settings.max_pixels, crop_padding=settings.crop_padding
    )


def distribution_bounds(settings: Settings) -> DistributionBounds:
    return DistributionBounds(
        c0_share_min=settings.release_c0_share_min,
        c0_share_max=settings.release_c0_share_max,
        label_share_max=settings.release_label_share_max,
        min_rows=settings.release_distribution_min_rows,
    )


def check_hub_settings(settings: Settings) -> None:
    if (settings.hub_token is None) != (settings.hub_repo_id is None):
        raise SettingsError("LOOKCLOSER_HUB_TOKEN and LOOKCLOSER_HUB_REPO_ID go together: set both or neither")


def push_to_hub(settings: Settings, name: str, api: HubApi | None = None) -> list[HubPush]:
    """With a Hub token and repo: push every local version of `name` the Hub repo lacks. Otherwise nothing."""
    check_hub_settings(settings)
    if settings.hub_token is None or settings.hub_repo_id is None:
        return []
    folder = release_folder(settings, name)
    api = api or hub_api(settings.hub_token.get_secret_value())
    worktrees = worktrees_folder(settings, name)
    return sync_versions(api, settings.hub_repo_id, versions(folder), lambda v: version_path(folder, v, worktrees))


def run_publish(params: PublishParams, settings: Settings, hub: HubApi | None = None) -> ReleaseSummary:
    """Validate, write and tag; record the release and the publish ledger; push to the Hub when configured.

    Plain function, no Prefect needed. `hub` replaces the Hub client (tests: no Hub can run here).
    """
    check_hub_settings(settings)  # before any work: a half-configured Hub is a one-line error
    with open_catalog(settings) as catalog:
        folder = release_folder(settings, params.name)
        summary = publish_release(
            catalog,
            ImageStore(settings.resolved_image_store_url),
            folder,
            params.name,
            frame_settings(settings),
            version=params.version,
            max_shard_bytes=params.max_shard_mb << 20,
            exclude_measurement_marks=params.exclude_measurement_marks,
            docs_dir=docs_folder(settings, params.name),
            agreement_report=agreement_folder(settings.workspace),
            bounds=distribution_bounds(settings),
            provenance=load_provenance(settings.workspace / "provenance.yaml"),
            hub_repo_id=settings.hub_repo_id,
        )
        release = f"{params.name}@{summary.version}"  # every record's ledger row names the release
        ledger = [(key, outcome, reason, release) for key, outcome, reason, _ in summary.take_ledger()]
        catalog.save_release(
            name=params.name,
            version=summary.version,
            rows=summary.rows,
            git_sha=commit_of(folder, summary.version),
            path=str(folder),
            ledger=ledger,
        )
        summary.hub = push_to_hub(settings, params.name, hub)
        return summary


def release_markdown(name: str, summary: ReleaseSummary, docs: Path) -> str:
    state = "new tag" if summary.created else "unchanged: no new tag"
    lines = [
        f"# {name}@{summary.version} ({state})",
        "",
        f"{summary.rows} rows; not published: {dict(summary.quarantined) or 'none'}",
        "",
        "| organ | split | rows |",
        "|---|---|---|",
        *(f"| {organ} | {split} | {n} |" for (organ, split), n in sorted(summary.counts.items())),
        "",
        f"validation: {summary.validation.summary() if summary.validation else 'not run'}; "
        f"Data Docs: {docs / 'index.html'}",
        "",
        "Hub: " + (", ".join(f"{p.repo_id}@{p.version}" for p in summary.hub) or "nothing pushed"),
    ]
    return "\n".join(lines)


@task
def publish_task(params: PublishParams) -> ReleaseSummary:
    return run_publish(params, load_settings())


@task
def report_task(params: PublishParams, summary: ReleaseSummary) -> str:
    markdown = release_markdown(params.name, summary, docs_folder(load_settings(), params.name))
    create_markdown_artifact(key="release", markdown=markdown, description=f"release {params.name}")
    return markdown


@flow(name="publish")
def publish_flow(params: PublishParams) -> ReleaseSummary:
    """Validate the rows, then write, tag and record a release."""
    with stage_lock(load_settings().resolved_catalog_url, f"publish:{params.name}"):  # one writer per release repo
        summary = publish_task(params)
        report_task(params, summary)
    return summary

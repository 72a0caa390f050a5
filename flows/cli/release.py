"""Published dataset versions: publish, dataset path, dataset export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli import common
from flows.stages.params import PublishParams


def publish_default(field: str) -> object:
    """PublishParams's default for a field, for the help texts (one number, kept in the model)."""
    return common.default(PublishParams, field)


def publish(
    name: Annotated[str, typer.Argument(help="dataset name")],
    version: Annotated[str | None, typer.Option(help="vMAJOR.MINOR.PATCH (default: next patch)")] = None,
    max_shard_mb: Annotated[
        int | None,
        typer.Option(help=f"parquet shard size limit (default {publish_default('max_shard_mb')})"),
    ] = None,
    exclude_measurement_marks: Annotated[
        bool, typer.Option(help="leave out images with calipers or measurement readouts (a known shortcut)")
    ] = False,
) -> None:
    """Validate and publish a versioned Hugging Face dataset."""
    common.prepare_prefect()
    from flows.release.folders import docs_folder, release_folder
    from flows.release.hub import HubPushError
    from flows.release.publish import ReleaseBlockedError
    from flows.release.repository import ReleaseError
    from flows.stages.publish import PublishParams, publish_flow

    params = common.params(
        PublishParams,
        name=name,
        version=version,
        max_shard_mb=max_shard_mb,
        exclude_measurement_marks=exclude_measurement_marks,
    )
    settings = common.settings()
    try:
        summary = publish_flow(params)
    except ReleaseError as err:
        raise common.ConfigError(str(err)) from None
    except HubPushError as err:
        raise common.ConfigError(f"{err}; the local release is tagged, the next publish pushes it") from None
    except ReleaseBlockedError as err:
        common.console.print(f"[bold red]release blocked[/]: {err}")
        common.console.print(f"Data Docs: {docs_folder(settings, name) / 'index.html'}")
        raise typer.Exit(common.EXIT_ERROR) from None
    state = "tagged" if summary.created else "unchanged, no new tag"
    common.console.print(
        f"{name}@{summary.version} ({state}): {summary.rows} rows, not published {dict(summary.quarantined)}"
    )
    common.console.print(f"release folder: {release_folder(settings, name)}")
    common.console.print(f"load it:        lookcloser dataset path {name} --version {summary.version}")
    for push in summary.hub:
        common.console.print(f"pushed:         {push.repo_id}@{push.version} (Hub)")


def dataset_path(
    name: Annotated[str, typer.Argument(help="dataset name")],
    version: Annotated[str, typer.Option(help="vMAJOR.MINOR.PATCH")],
) -> None:
    """A local folder holding exactly that version."""
    from flows.release.folders import release_folder, worktrees_folder
    from flows.release.repository import ReleaseError, version_path

    settings = common.settings()
    try:
        path = version_path(release_folder(settings, name), version, worktrees_folder(settings, name))
    except ReleaseError as err:
        raise common.ConfigError(str(err)) from None
    typer.echo(str(path))


def dataset_export(
    name: Annotated[str, typer.Argument(help="dataset name")],
    version: Annotated[str, typer.Option(help="vMAJOR.MINOR.PATCH")],
    to: Annotated[str, typer.Option("--format", help="llamafactory or swift")],
    out: Annotated[Path, typer.Option(help="output folder (JSON Lines, images, README)")],
    config: Annotated[str, typer.Option(help="all, or one organ")] = "all",
) -> None:
    """Export one version for LLaMA-Factory (ShareGPT + dataset_info.json) or ms-swift (messages JSONL)."""
    from flows.release.exports import FORMATS, export_release
    from flows.release.folders import release_folder, worktrees_folder
    from flows.release.repository import ReleaseError, version_path

    if to not in FORMATS:
        raise common.ConfigError(f"--format must be one of {', '.join(FORMATS)}, not {to!r}")
    settings = common.settings()
    try:
        path = version_path(release_folder(settings, name), version, worktrees_folder(settings, name))
    except ReleaseError as err:
        raise common.ConfigError(str(err)) from None
    summary = export_release(path, out, to, name=name.replace("-", "_"), config=config)  # type: ignore[arg-type]
    rows = ", ".join(f"{split} {n}" for split, n in sorted(summary.rows.items())) or "no rows"
    common.console.print(f"{name}@{version} → {summary.folder} ({to}): {rows}; {summary.images} images")

"""`lookcloser ingest`: a source into the catalog and the image store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli import common
from flows.ingest.core import IngestOptions
from flows.ingest.sources.registry import KINDS, source_adapter
from flows.runtime.settings import Settings
from flows.stages.params import IngestParams
from schemas.vocabulary import registered_organs


def ingest(
    kind: Annotated[str, typer.Argument(help=f"source kind: {' '.join(KINDS)}")],
    path: Annotated[str | None, typer.Argument(help="source folder, manifest file or dataset id (not phantom)")] = None,
    organ: Annotated[
        str | None, typer.Option(help=f"{', '.join(registered_organs())} (default: all / from the source)")
    ] = None,
    count: Annotated[int, typer.Option(help="phantom: number of images")] = common.default(IngestParams, "count"),
    seed: Annotated[int, typer.Option(help="phantom: random seed")] = common.default(IngestParams, "seed"),
    option: Annotated[
        list[str] | None, typer.Option(help="adapter option KEY=VALUE (VALUE as JSON or text), repeatable")
    ] = None,
    test_count_per_organ: Annotated[
        int | None, typer.Option(help="fixed number of test images per organ instead of a fraction")
    ] = None,
    near_duplicate_distance: Annotated[
        int | None,
        typer.Option(
            help="pHash Hamming distance at or below which images share a group "
            f"(default {common.default(IngestOptions, 'near_duplicate_distance')})"
        ),
    ] = None,
    source_name: Annotated[
        str | None, typer.Option(help="name of this source in refs (default: the last part of PATH)")
    ] = None,
    burned_in_text: Annotated[
        str | None,
        typer.Option(
            help="burned-in text in the scan area: mask (default), quarantine (stricter) or crop_only (no OCR)"
        ),
    ] = None,
) -> None:
    """Ingest a source into the catalog and image store (idempotent: re-runs change nothing)."""
    if kind not in KINDS:
        raise common.ConfigError(f"unknown source kind {kind!r}; one of: {', '.join(KINDS)}")
    adapter = source_adapter(kind)
    if adapter.path != "none" and (path is None or (adapter.path == "local" and not Path(path).exists())):
        raise common.ConfigError(f"ingest {kind}: the source path is missing or does not exist")
    params: dict[str, Any] = {
        "source_name": source_name,
        "kind": kind,
        "path": path,
        "organ": organ,
        "count": count,
        "seed": seed,
        "adapter_options": _parse_options(option or []),
    }
    split_options = {
        "test_count_per_organ": test_count_per_organ,
        "near_duplicate_distance": near_duplicate_distance,
        "burned_in_text": burned_in_text,
    }
    params["options"] = {k: v for k, v in split_options.items() if v is not None}
    summary = run_ingest(common.settings(), params)
    common.console.print(
        f"ingest ({summary.source_id or kind}): {summary.seen} seen, {summary.out} new, "
        f"{summary.skipped} already ingested, "
        f"quarantined {sum(summary.quarantined.values())} {summary.quarantined or ''}"
    )


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise common.ConfigError(f"--option expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def run_ingest(settings: Settings, params: dict[str, Any]) -> Any:
    from flows.runtime.prefect_env import configure_prefect_environment

    configure_prefect_environment(settings.workspace)
    from pydantic import ValidationError

    from flows.stages.ingest import IngestParams, ingest_flow  # imports Prefect: only stage commands pay for it

    try:
        validated = IngestParams(**params)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "arguments"
        raise common.ConfigError(f"invalid {where}: {first['msg']}") from None
    common.require_reachable_cluster(settings)
    try:
        return ingest_flow(validated)
    except TypeError as err:  # an adapter option the adapter does not take
        if "unexpected keyword argument" in str(err):
            raise common.ConfigError(f"ingest {validated.kind}: {err}") from None
        raise

"""Read-only commands (they never import Prefect): status, schemas export, doctor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from flows.cli import common


def status(as_json: Annotated[bool, typer.Option("--json", help="one JSON object (DESIGN §9)")] = False) -> None:
    """What every stage holds: in = out + quarantined, per organ counts, releases."""
    report = common.catalog_status(common.settings())
    if as_json:
        typer.echo(json.dumps(report))
    else:
        print_status(report)


def print_status(report: dict[str, Any]) -> None:
    stages = Table(title="stages (in = out + quarantined)")
    for column in ("stage", "in", "out", "quarantined", "reasons"):
        stages.add_column(column, justify="left" if column in ("stage", "reasons") else "right")
    for stage, c in report["stages"].items():
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(c["quarantined"].items()))
        stages.add_row(stage, str(c["in"]), str(c["out"]), str(sum(c["quarantined"].values())), reasons)
    common.console.print(stages)
    organs = Table(title="organs")
    for column in ("organ", "images", "c=1", "c=0"):
        organs.add_column(column, justify="right" if column != "organ" else "left")
    for organ, c in report["organs"].items():
        organs.add_row(organ, str(c["images"]), str(c["c1"]), str(c["c0"]))
    common.console.print(organs)
    common.console.print(f"releases: {', '.join(report['releases']) or 'none'}")


def schemas_export(directory: Annotated[Path, typer.Argument(help="output folder")]) -> None:
    """Write the JSON Schema of every record to DIR/<Record>.schema.json."""
    from schemas.export import export_json_schemas

    for path in export_json_schemas(directory):
        common.console.print(f"wrote {path}")


def doctor() -> None:
    """Check settings and services; exit 2 if the catalog or image store is unusable."""
    from flows.runtime.doctor import run_checks

    checks = run_checks(common.settings())
    table = Table(title="lookcloser doctor")
    for column in ("check", "state", "detail"):
        table.add_column(column)
    style = {"ok": "green", "warn": "yellow", "fail": "red"}
    for check in checks:
        table.add_row(check.name, f"[{style[check.state]}]{check.state}", check.detail)
    common.console.print(table)
    if any(check.state == "fail" for check in checks):
        raise common.ConfigError("doctor: " + "; ".join(f"{c.name}: {c.detail}" for c in checks if c.state == "fail"))

"""`lookcloser`: the command line of DESIGN §9.

Assembled here from one module per command group (flows/cli/*.py).

Exit codes: 0 the run finished (quarantined records are reported, not failures), 1 an unexpected
error, 2 misconfiguration or an unreachable service (one line naming the setting or the URL).
`status`, `doctor`, `schemas` and `dataset path` answer from the catalog and never import Prefect.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from flows.cli import common, demo, ingest, inspect, labels, release, teacher, training
from flows.runtime.settings import ENV_PREFIX, SettingsError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n")[0])
labelstudio_app = typer.Typer(no_args_is_help=True, help="Manage the local Label Studio server.")
schemas_app = typer.Typer(no_args_is_help=True, help="The record contract.")
dataset_app = typer.Typer(no_args_is_help=True, help="Published dataset versions.")
app.add_typer(labelstudio_app, name="labelstudio")
app.add_typer(schemas_app, name="schemas")
app.add_typer(dataset_app, name="dataset")

# In the order of the path a sample walks (DESIGN §9), then the read-only commands.
for command in (
    demo.demo,
    ingest.ingest,
    labels.annotate,
    labels.pull,
    labels.consensus,
    teacher.synthesize,
    teacher.review,
    release.publish,
    training.train,
    training.evaluate,
    inspect.status,
    inspect.doctor,
):
    app.command()(command)
labelstudio_app.command("up")(labels.labelstudio_up)
labelstudio_app.command("down")(labels.labelstudio_down)
labelstudio_app.command("status")(labels.labelstudio_status)
schemas_app.command("export")(inspect.schemas_export)
dataset_app.command("path")(release.dataset_path)
dataset_app.command("export")(release.dataset_export)


@app.callback()
def _global(
    workspace: Annotated[
        Path | None,
        typer.Option("--workspace", help="workspace folder (default: $LOOKCLOSER_WORKSPACE or ./workspace)"),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
) -> None:
    """lookcloser: ultrasound Zoom-then-Diagnose data pipeline."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    for ours in ("lookcloser", "flows", "annotation", "schemas", "training"):
        logging.getLogger(ours).setLevel(logging.DEBUG if verbose else logging.INFO)
    if workspace is not None:
        os.environ[f"{ENV_PREFIX}WORKSPACE"] = str(workspace)
    common.settings()  # fail fast, with the variable's name, on a malformed setting


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the CLI and maps errors to the documented exit codes."""
    try:
        code = app(args=argv, standalone_mode=False)  # click returns typer.Exit's code here
    except (SettingsError, common.ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return common.EXIT_CONFIG
    except typer.Exit as done:
        return done.exit_code
    except typer.Abort:
        return common.EXIT_ERROR
    except Exception as err:  # a one-line message; the traceback only with --verbose
        import click

        if isinstance(err, click.ClickException):
            err.show()
            return common.EXIT_CONFIG
        common.log.debug("unexpected error", exc_info=True)
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return common.EXIT_ERROR
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())

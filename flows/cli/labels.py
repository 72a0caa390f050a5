"""Label Studio and the readers' work: the local server, annotate, pull, consensus."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from annotation.consensus import ConsensusPolicy
from flows.cli import common


def policy_default(field: str) -> object:
    """ConsensusPolicy's default for a field, for the help texts (one number, kept in the model)."""
    return common.default(ConsensusPolicy, field)


def labelstudio_up() -> None:
    """Start the local Label Studio server (own virtualenv, 127.0.0.1) and its reader accounts."""
    from annotation import local_server
    from annotation.access import credentials_path

    settings = common.settings()
    with local_server_errors():
        server, credentials = local_server.up(settings)
    common.console.print(f"Label Studio is up: {server.url}  (log: {server.log_path})")
    for reader in credentials["readers"]:
        kind = role(reader, credentials.get("adjudicators", {}))
        common.console.print(f"  {kind} {reader['pseudonym']}: log in as {reader['email']}")
    common.console.print(f"  passwords and tokens: {credentials_path(settings)} (readable by you only)")


def labelstudio_down() -> None:
    """Stop the local Label Studio server."""
    from annotation import local_server

    with local_server_errors():
        stopped = local_server.down(common.settings())
    common.console.print("Label Studio stopped" if stopped else "Label Studio was not running")


def labelstudio_status() -> None:
    """Is the local Label Studio server up?"""
    from annotation import local_server

    with local_server_errors():
        state = local_server.status(common.settings())
    for key, value in state.items():
        common.console.print(f"{key:8} {value}")
    if not state["healthy"]:
        raise typer.Exit(code=common.EXIT_CONFIG)


def role(account: dict[str, Any], adjudicators: dict[str, str]) -> str:
    return "adjudicator" if account["email"] in adjudicators.values() else "reader"


@contextlib.contextmanager
def local_server_errors() -> Iterator[None]:
    from annotation.local_server import LocalServerError

    try:
        yield
    except (LocalServerError, RuntimeError, TimeoutError, FileNotFoundError) as err:
        raise common.ConfigError(str(err).splitlines()[0]) from None


def annotate(organ: Annotated[str | None, typer.Option(help="only this organ")] = None) -> None:
    """Push ingested images to the reader projects in Label Studio (idempotent)."""
    common.check_labelstudio_access()
    common.prepare_prefect()
    from flows.stages.annotate import AnnotateParams, annotate_flow

    for summary in common.run_stage(lambda: annotate_flow(common.params(AnnotateParams, organ=organ))):
        common.console.print(f"annotate {summary.organ}: {summary.images} images, {summary.imported} tasks imported")


def pull(organ: Annotated[str | None, typer.Option(help="only this organ")] = None) -> None:
    """Pull finished readings from Label Studio; route disagreements to adjudication."""
    common.check_labelstudio_access()
    common.prepare_prefect()
    from flows.stages.pull import PullParams, pull_flow

    for summary in common.run_stage(lambda: pull_flow(common.params(PullParams, organ=organ))):
        common.console.print(
            f"pull {summary.organ}: {summary.pulled} new readings, {summary.withdrawn} withdrawn (deleted or emptied "
            f"in Label Studio), {summary.skipped} unchanged, quarantined {summary.quarantined or 0}, "
            f"{summary.disputed} sent to adjudication"
        )


def consensus(
    organ: Annotated[str | None, typer.Option(help="only this organ")] = None,
    disagreement: Annotated[
        str | None, typer.Option(help="label on disagreement: auto, adjudicated, primary_reader or exclude")
    ] = None,
    agreement_threshold: Annotated[
        float | None,
        typer.Option(help=f"c = 1 iff agreement >= this (default {policy_default('agreement_threshold')})"),
    ] = None,
) -> None:
    """Derive labels, confidence c and fused boxes from the readings; write agreement statistics."""
    common.prepare_prefect()
    from annotation.consensus import ConsensusPolicy
    from flows.stages.consensus import ConsensusParams, consensus_flow

    policy = common.params(ConsensusPolicy, disagreement=disagreement, agreement_threshold=agreement_threshold)
    for summary in consensus_flow(common.params(ConsensusParams, organ=organ, policy=policy)):
        common.console.print(
            f"consensus {summary.organ}: {summary.decided} decided (c=1 {summary.c1}, c=0 {summary.c0}), "
            f"{summary.unchanged} unchanged, quarantined {summary.quarantined or 0}"
        )
    common.console.print(f"agreement report: {common.settings().workspace.resolve() / 'reports' / 'agreement'}")

"""The teacher's rationales and their expert review: synthesize, review."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli import common
from flows.stages.params import ReviewParams, SynthesizeParams


def synthesize_default(field: str) -> object:
    """SynthesizeParams's default for a field, for the help texts (one number, kept in the model)."""
    return common.default(SynthesizeParams, field)


def synthesize(
    backend: Annotated[
        str, typer.Option(help="template (offline, deterministic) or openai (the served teacher)")
    ] = synthesize_default("backend"),
    organ: Annotated[str | None, typer.Option(help="only this organ")] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(help=f"teacher requests in flight (default {synthesize_default('concurrency')})"),
    ] = None,
    candidates: Annotated[
        int | None,
        typer.Option(help=f"n: candidates per request (default {synthesize_default('candidates')})"),
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(help=f"sampling temperature (default {synthesize_default('temperature')})"),
    ] = None,
    prompt_version: Annotated[
        str | None,
        typer.Option(help=f"prompt bundle in prompts/ (default {synthesize_default('prompt_version')})"),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(help=f"seconds per teacher request (default {synthesize_default('timeout_s'):g})"),
    ] = None,
) -> None:
    """Write confidence-toned zoom rationales with the teacher."""
    common.prepare_prefect()
    from flows.stages.synthesize import SynthesizeParams, TeacherConfigError, check_config, synthesize_flow
    from flows.teacher.prompting import PromptError

    params = common.params(
        SynthesizeParams,
        backend=backend,
        organ=organ,
        concurrency=concurrency,
        candidates=candidates,
        temperature=temperature,
        prompt_version=prompt_version,
        timeout_s=timeout,
    )
    settings = common.settings()
    try:
        check_config(params, settings)
    except (PromptError, TeacherConfigError) as err:
        raise common.ConfigError(str(err)) from None
    common.require_reachable_cluster(settings)
    summary = synthesize_flow(params)
    quarantined = sum(summary.quarantined.values())
    common.console.print(
        f"synthesize: {summary.records} records = {summary.produced} produced + {quarantined} quarantined "
        f"{dict(summary.quarantined) or ''}; this run {summary.requested} needed the teacher, "
        f"{summary.calls} calls, {summary.cached_calls} from cache"
    )
    common.console.print(f"report: {common.settings().workspace.resolve() / 'reports' / 'synthesis' / 'report.md'}")


def review(
    share: Annotated[
        float | None,
        typer.Option(help=f"share of rationales per organ and tone (default {common.default(ReviewParams, 'share')})"),
    ] = None,
) -> None:
    """Send a stratified sample of rationales to expert review in Label Studio; pull the verdicts given so far."""
    common.prepare_prefect()
    common.check_labelstudio_access()
    from flows.stages.review import ReviewParams, review_flow

    summary = review_flow(common.params(ReviewParams, share=share))
    common.console.print(
        f"review: {summary.sampled} sampled, {summary.pushed} new tasks, {summary.verdicts} verdicts, "
        f"{summary.rejected_now} newly rejected"
    )
    reports = common.settings().workspace.resolve() / "reports"
    common.console.print(f"acceptance: {reports / 'review' / 'acceptance.md'}")

"""`lookcloser`: the command line of DESIGN §9.

Exit codes: 0 the run finished (quarantined records are reported, not failures), 1 an unexpected
error, 2 misconfiguration or an unreachable service (one line naming the setting or the URL).
`status`, `doctor`, `schemas` and `dataset path` answer from the catalog and never import Prefect.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from flows.runtime.settings import ENV_PREFIX, Settings, SettingsError, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n")[0])
labelstudio_app = typer.Typer(no_args_is_help=True, help="Manage the local Label Studio server.")
schemas_app = typer.Typer(no_args_is_help=True, help="The record contract.")
dataset_app = typer.Typer(no_args_is_help=True, help="Published dataset versions.")
app.add_typer(labelstudio_app, name="labelstudio")
app.add_typer(schemas_app, name="schemas")
app.add_typer(dataset_app, name="dataset")

console = Console()
log = logging.getLogger("lookcloser")

EXIT_ERROR, EXIT_CONFIG = 1, 2
DEMO_DATASET = "lookcloser-demo"
TINY_MODEL = "tiny-random-qwen2.5-vl"  # training/arguments.py builds it offline
INGEST_KINDS = ("folder", "manifest", "buscot", "ddti", "dicom", "hf", "phantom")


class ConfigError(Exception):
    """Misconfiguration or an unreachable service: exit code 2 with this one-line message."""


def _settings() -> Settings:
    return load_settings()


def _require_reachable_cluster(settings: Settings) -> None:
    """A cluster address nobody answers at is a configuration error, said in one line before the flow runs."""
    from flows.runtime.task_runners import unreachable_cluster

    problem = unreachable_cluster(settings)
    if problem:
        raise ConfigError(problem)


def _open_catalog(settings: Settings) -> Any:
    from sqlalchemy.exc import OperationalError

    from flows.catalog import Catalog, masked_url

    try:
        return Catalog(settings.resolved_catalog_url)
    except OperationalError:
        raise ConfigError(
            f"cannot open the catalog at {masked_url(settings.resolved_catalog_url)} ({ENV_PREFIX}CATALOG_URL)"
        ) from None


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
    _settings()  # fail fast, with the variable's name, on a malformed setting


# ------------------------------------------------------------------------------------------ stages
class StageClock:
    """Times the demo's stages; prints them beside the previous run's (kept in the workspace)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.previous: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}
        self.times: dict[str, float] = {}
        self._name: str | None = None
        self._start = 0.0

    def stage(self, name: str) -> None:
        self._close()
        console.rule(f"[bold]lookcloser demo: {name}")
        self._name, self._start = name, time.perf_counter()

    def _close(self) -> None:
        if self._name is not None:
            self.times[self._name] = round(time.perf_counter() - self._start, 1)
            self._name = None

    def finish(self) -> None:
        self._close()
        table = Table(title="stage times (s)")
        table.add_column("stage")
        table.add_column("this run", justify="right")
        table.add_column("previous run", justify="right")
        for name, seconds in self.times.items():
            before = self.previous.get(name)
            table.add_row(name, f"{seconds:.1f}", "–" if before is None else f"{before:.1f}")
        total, before = sum(self.times.values()), sum(self.previous.values())
        table.add_row("[bold]total", f"[bold]{total:.1f}", f"{before:.1f}" if self.previous else "–")
        console.print(table)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.times, indent=2) + "\n")


@app.command()
def demo(
    count: Annotated[int, typer.Option(help="phantom images (spread over the organs)")] = 30,
    seed: Annotated[int, typer.Option(help="phantom seed")] = 0,
    labelstudio: Annotated[
        bool, typer.Option(help="run the Label Studio leg (local server, two simulated readers, pull)")
    ] = True,
) -> None:
    """The whole path on embedded defaults: phantom data → Label Studio dual reading → consensus → teacher → release
    → SFT and GRPO → evaluation. A second run reuses everything; each run prints its stage times beside the last."""
    settings = _settings()
    clock = StageClock(settings.workspace / "reports" / "demo-timings.json")
    clock.stage("ingest")
    summary = _run_ingest(settings, {"kind": "phantom", "count": count, "seed": seed})
    server_url, readers, adjudicators = None, [], {}
    if labelstudio:
        clock.stage("Label Studio (blinded dual reading)")
        from annotation import local_server

        with _local_server_errors():
            server, credentials = local_server.up(settings)
        server_url, readers = server.url, credentials["readers"]
        adjudicators = credentials.get("adjudicators", {})
        from flows.stages.annotate import AnnotateParams, annotate_flow, simulate_readers_flow
        from flows.stages.pull import PullParams, pull_flow

        _run_stage(lambda: annotate_flow(AnnotateParams()))
        posted = _run_stage(simulate_readers_flow)
        pulled = _run_stage(lambda: pull_flow(PullParams()))
        console.print(
            f"simulated readers posted {posted} annotations; pulled {sum(p.pulled for p in pulled)}, "
            f"{sum(p.disputed for p in pulled)} disputed images sent to adjudication"
        )
        clock.stage("consensus")
        from flows.stages.consensus import ConsensusParams, consensus_flow

        for decided in consensus_flow(ConsensusParams()):
            console.print(
                f"consensus {decided.organ}: c=1 {decided.c1}, c=0 {decided.c0}, quarantined {decided.quarantined or 0}"
            )
        clock.stage("teacher rationales (offline template backend) and expert review")
        from flows.stages.review import ReviewParams, review_flow
        from flows.stages.synthesize import SynthesizeParams, synthesize_flow

        synthesized = synthesize_flow(SynthesizeParams(backend="template"))
        console.print(
            f"synthesize: {synthesized.produced} rationales produced, quarantined {dict(synthesized.quarantined) or 0} "
            "(generator template/none/teacher-v1: phrase templates, not a model)"
        )
        reviewed = review_flow(ReviewParams(), simulate=True)
        console.print(
            f"expert review: {reviewed.sampled} sampled (5 % per organ and tone), {reviewed.verdicts} verdicts from "
            f"the simulated senior reader, {reviewed.rejected_now} rejected and quarantined"
        )
        clock.stage("validate and publish")
        from flows.stages.publish import PublishParams, publish_flow

        released = publish_flow(PublishParams(name=DEMO_DATASET))
        state = "tagged" if released.created else "unchanged, no new tag"
        console.print(f"{DEMO_DATASET}@{released.version} ({state}): {released.rows} rows passed the release gate")
        clock.stage("SFT then GRPO (tiny random Qwen2.5-VL, CPU)")
        from flows.stages.train import TrainParams, train_flow

        trained = train_flow(TrainParams(dataset=DEMO_DATASET, version=released.version, recipe="tiny-cpu"))
        clock.stage("evaluate the trained tiny model (a few test rows)")
        from flows.stages.evaluate import EvaluateParams, evaluate_flow

        evaluation = evaluate_flow(
            EvaluateParams(
                dataset=DEMO_DATASET,
                version=released.version,
                model=TINY_MODEL,
                adapters=[trained["sft"], trained["grpo"]],
                recipe="tiny-cpu",
                rollouts=4,
                max_rows=6,
                max_tokens=128,
            )
        )
    clock.finish()
    _print_status(_open_catalog(settings).status())
    console.rule("[bold]where to look")
    console.print(f"workspace         {settings.workspace.resolve()}")
    console.print(f"catalog           {_masked(settings.resolved_catalog_url)}")
    console.print(f"images (de-id'd)  {settings.resolved_image_store_url}")
    console.print(f"phantom source    {(settings.workspace / 'sources').resolve()}  (raw PNGs, masks, manifest.jsonl)")
    console.print(f"ingested          {summary.out} new images, quarantined {sum(summary.quarantined.values())}")
    if server_url:
        from annotation.access import credentials_path

        console.print(
            f"Label Studio      {server_url}  (projects: 'lookcloser <organ> - reader A|reader B|adjudication')"
        )
        for reader in readers:
            console.print(f"  {_role(reader, adjudicators):11} {reader['pseudonym']}  log in as {reader['email']}")
        console.print(f"  passwords       {credentials_path(settings)} (readable by you only)")
        console.print("  stop it with    lookcloser labelstudio down")
        console.print(f"agreement report  {(settings.workspace / 'reports' / 'agreement').resolve()}  (κ, plots)")
        reports = settings.workspace.resolve() / "reports"
        console.print(f"rationales        {reports / 'synthesis' / 'report.md'}  (counts, samples per organ and tone)")
        console.print(
            f"expert review     {reports / 'review' / 'acceptance.md'}  (project 'lookcloser rationale review')"
        )
        from flows.release.folders import docs_folder, release_folder

        console.print(
            f"release           {release_folder(settings, DEMO_DATASET)}  (git tags = versions; README.md card)"
        )
        console.print(f"data docs         {docs_folder(settings, DEMO_DATASET) / 'index.html'}")
        console.print(f"load a version    lookcloser dataset path {DEMO_DATASET} --version v1.0.0  (then load_dataset)")
        for stage, folder in trained.items():
            console.print(f"{stage + ' adapter':17} {folder}  (run.json, job.log)")
        console.print(f"evaluation        {evaluation}  (report.md: Tables 1 and 2, metrics.csv, plots)")


@app.command()
def ingest(
    kind: Annotated[str, typer.Argument(help=f"source kind: {' '.join(INGEST_KINDS)}")],
    path: Annotated[str | None, typer.Argument(help="source folder, manifest file or dataset id (not phantom)")] = None,
    organ: Annotated[str | None, typer.Option(help="breast, liver or thyroid (default: all / from the source)")] = None,
    count: Annotated[int, typer.Option(help="phantom: number of images")] = 30,
    seed: Annotated[int, typer.Option(help="phantom: random seed")] = 0,
    option: Annotated[
        list[str] | None, typer.Option(help="adapter option KEY=VALUE (VALUE as JSON or text), repeatable")
    ] = None,
    test_count_per_organ: Annotated[
        int | None, typer.Option(help="fixed number of test images per organ instead of a fraction")
    ] = None,
    near_duplicate_distance: Annotated[
        int | None, typer.Option(help="pHash Hamming distance at or below which images share a group (default 6)")
    ] = None,
    source_name: Annotated[
        str | None, typer.Option(help="name of this source in refs (default: the last part of PATH)")
    ] = None,
) -> None:
    """Ingest a source into the catalog and image store (idempotent: re-runs change nothing)."""
    if kind not in INGEST_KINDS:
        raise ConfigError(f"unknown source kind {kind!r}; one of: {', '.join(INGEST_KINDS)}")
    if kind != "phantom" and (path is None or (kind != "hf" and not Path(path).exists())):
        raise ConfigError(f"ingest {kind}: the source path is missing or does not exist")
    params: dict[str, Any] = {
        "source_name": source_name,
        "kind": kind,
        "path": path,
        "organ": organ,
        "count": count,
        "seed": seed,
        "adapter_options": _parse_options(option or []),
    }
    split_options = {"test_count_per_organ": test_count_per_organ, "near_duplicate_distance": near_duplicate_distance}
    params["options"] = {k: v for k, v in split_options.items() if v is not None}
    summary = _run_ingest(_settings(), params)
    console.print(
        f"ingest: {summary.seen} seen, {summary.out} new, {summary.skipped} already ingested, "
        f"quarantined {sum(summary.quarantined.values())} {summary.quarantined or ''}"
    )


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _run_ingest(settings: Settings, params: dict[str, Any]) -> Any:
    from flows.runtime.prefect_env import configure_prefect_environment

    configure_prefect_environment(settings.workspace)
    from pydantic import ValidationError

    from flows.stages.ingest import IngestParams, ingest_flow  # imports Prefect: only stage commands pay for it

    try:
        validated = IngestParams(**params)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "arguments"
        raise ConfigError(f"invalid {where}: {first['msg']}") from None
    _require_reachable_cluster(settings)
    try:
        return ingest_flow(validated)
    except TypeError as err:  # an adapter option the adapter does not take
        if "unexpected keyword argument" in str(err):
            raise ConfigError(f"ingest {validated.kind}: {err}") from None
        raise


@labelstudio_app.command("up")
def labelstudio_up() -> None:
    """Start the local Label Studio server (own virtualenv, 127.0.0.1) and its reader accounts."""
    from annotation import local_server
    from annotation.access import credentials_path

    settings = _settings()
    with _local_server_errors():
        server, credentials = local_server.up(settings)
    console.print(f"Label Studio is up: {server.url}  (log: {server.log_path})")
    for reader in credentials["readers"]:
        role = _role(reader, credentials.get("adjudicators", {}))
        console.print(f"  {role} {reader['pseudonym']}: log in as {reader['email']}")
    console.print(f"  passwords and tokens: {credentials_path(settings)} (readable by you only)")


@labelstudio_app.command("down")
def labelstudio_down() -> None:
    """Stop the local Label Studio server."""
    from annotation import local_server

    with _local_server_errors():
        stopped = local_server.down(_settings())
    console.print("Label Studio stopped" if stopped else "Label Studio was not running")


@labelstudio_app.command("status")
def labelstudio_status() -> None:
    """Is the local Label Studio server up?"""
    from annotation import local_server

    with _local_server_errors():
        state = local_server.status(_settings())
    for key, value in state.items():
        console.print(f"{key:8} {value}")
    if not state["healthy"]:
        raise typer.Exit(code=EXIT_CONFIG)


def _role(account: dict[str, Any], adjudicators: dict[str, str]) -> str:
    return "adjudicator" if account["email"] in adjudicators.values() else "reader"


@contextlib.contextmanager
def _local_server_errors() -> Iterator[None]:
    from annotation.local_server import LocalServerError

    try:
        yield
    except (LocalServerError, RuntimeError, TimeoutError, FileNotFoundError) as err:
        raise ConfigError(str(err).splitlines()[0]) from None


@app.command()
def annotate(organ: Annotated[str | None, typer.Option(help="only this organ")] = None) -> None:
    """Push ingested images to the reader projects in Label Studio (idempotent)."""
    _check_labelstudio_access()
    _prepare_prefect()
    from flows.stages.annotate import AnnotateParams, annotate_flow

    for summary in _run_stage(lambda: annotate_flow(_params(AnnotateParams, organ=organ))):
        console.print(f"annotate {summary.organ}: {summary.images} images, {summary.imported} tasks imported")


@app.command()
def pull(organ: Annotated[str | None, typer.Option(help="only this organ")] = None) -> None:
    """Pull finished readings from Label Studio; route disagreements to adjudication."""
    _check_labelstudio_access()
    _prepare_prefect()
    from flows.stages.pull import PullParams, pull_flow

    for summary in _run_stage(lambda: pull_flow(_params(PullParams, organ=organ))):
        console.print(
            f"pull {summary.organ}: {summary.pulled} new readings, {summary.skipped} unchanged, "
            f"quarantined {summary.quarantined or 0}, {summary.disputed} sent to adjudication"
        )


def _params(params_class: type, /, **values: Any) -> Any:
    """A flow's parameter model from CLI values; a bad value is a one-line misconfiguration."""
    from pydantic import ValidationError

    try:
        return params_class(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as err:
        first = err.errors()[0]
        where = f"--{str(first['loc'][0]).replace('_', '-')}" if first["loc"] else "options"
        raise ConfigError(f"invalid {where}: {first['msg']}") from None


def _check_labelstudio_access() -> None:
    """Token, reader accounts and server answer, checked before any flow starts (one-line errors)."""
    from annotation.access import admin_client, load_assignment

    settings = _settings()
    _run_stage(lambda: (admin_client(settings).whoami(), load_assignment(settings)))


def _run_stage(run: Any) -> Any:
    """Run a Label Studio stage flow; a missing token, a rejected token or a down server exit with code 2."""
    from annotation.access import LabelStudioNotConfiguredError
    from annotation.client import LabelStudioAuthError, LabelStudioError

    try:
        return run()
    except LabelStudioAuthError as err:
        raise ConfigError(f"{err}; check {ENV_PREFIX}LABEL_STUDIO_TOKEN") from None
    except (LabelStudioError, LabelStudioNotConfiguredError) as err:
        raise ConfigError(str(err)) from None


def _prepare_prefect() -> None:  # before the first import of prefect
    from flows.runtime.prefect_env import configure_prefect_environment

    configure_prefect_environment(_settings().workspace)


@app.command()
def consensus(
    organ: Annotated[str | None, typer.Option(help="only this organ")] = None,
    disagreement: Annotated[
        str | None, typer.Option(help="label on disagreement: auto, adjudicated, primary_reader or exclude")
    ] = None,
    agreement_threshold: Annotated[float | None, typer.Option(help="c = 1 iff agreement >= this (default 1.0)")] = None,
) -> None:
    """Derive labels, confidence c and fused boxes from the readings; write agreement statistics."""
    _prepare_prefect()
    from annotation.consensus import ConsensusPolicy
    from flows.stages.consensus import ConsensusParams, consensus_flow

    policy = _params(ConsensusPolicy, disagreement=disagreement, agreement_threshold=agreement_threshold)
    for summary in consensus_flow(_params(ConsensusParams, organ=organ, policy=policy)):
        console.print(
            f"consensus {summary.organ}: {summary.decided} decided (c=1 {summary.c1}, c=0 {summary.c0}), "
            f"{summary.unchanged} unchanged, quarantined {summary.quarantined or 0}"
        )
    console.print(f"agreement report: {_settings().workspace.resolve() / 'reports' / 'agreement'}")


@app.command()
def synthesize(
    backend: Annotated[str, typer.Option(help="template (offline, deterministic) or openai (the served teacher)")] = (
        "template"
    ),
    organ: Annotated[str | None, typer.Option(help="only this organ")] = None,
    concurrency: Annotated[int | None, typer.Option(help="teacher requests in flight (default 32)")] = None,
    candidates: Annotated[int | None, typer.Option(help="n: candidates per request (default 2)")] = None,
    temperature: Annotated[float | None, typer.Option(help="sampling temperature (default 0.7)")] = None,
    prompt_version: Annotated[str | None, typer.Option(help="prompt bundle in prompts/ (default teacher-v1)")] = None,
    timeout: Annotated[float | None, typer.Option(help="seconds per teacher request (default 120)")] = None,
) -> None:
    """Write confidence-toned zoom rationales with the teacher."""
    _prepare_prefect()
    from flows.stages.synthesize import SynthesizeParams, TeacherConfigError, check_config, synthesize_flow
    from flows.teacher.prompting import PromptError

    params = _params(
        SynthesizeParams,
        backend=backend,
        organ=organ,
        concurrency=concurrency,
        candidates=candidates,
        temperature=temperature,
        prompt_version=prompt_version,
        timeout_s=timeout,
    )
    settings = _settings()
    try:
        check_config(params, settings)
    except (PromptError, TeacherConfigError) as err:
        raise ConfigError(str(err)) from None
    _require_reachable_cluster(settings)
    summary = synthesize_flow(params)
    quarantined = sum(summary.quarantined.values())
    console.print(
        f"synthesize: {summary.records} records = {summary.produced} produced + {quarantined} quarantined "
        f"{dict(summary.quarantined) or ''}; this run {summary.requested} needed the teacher, "
        f"{summary.calls} calls, {summary.cached_calls} from cache"
    )
    console.print(f"report: {_settings().workspace.resolve() / 'reports' / 'synthesis' / 'report.md'}")


@app.command()
def review(
    share: Annotated[float | None, typer.Option(help="share of rationales per organ and tone (default 0.05)")] = None,
) -> None:
    """Send a stratified sample of rationales to expert review in Label Studio; pull the verdicts given so far."""
    _prepare_prefect()
    _check_labelstudio_access()
    from flows.stages.review import ReviewParams, review_flow

    summary = review_flow(_params(ReviewParams, share=share))
    console.print(
        f"review: {summary.sampled} sampled, {summary.pushed} new tasks, {summary.verdicts} verdicts, "
        f"{summary.rejected_now} newly rejected"
    )
    console.print(f"acceptance: {_settings().workspace.resolve() / 'reports' / 'review' / 'acceptance.md'}")


@app.command()
def publish(
    name: Annotated[str, typer.Argument(help="dataset name")],
    version: Annotated[str | None, typer.Option(help="vMAJOR.MINOR.PATCH (default: next patch)")] = None,
    max_shard_mb: Annotated[int | None, typer.Option(help="parquet shard size limit (default 500)")] = None,
) -> None:
    """Validate and publish a versioned Hugging Face dataset."""
    _prepare_prefect()
    from flows.release.folders import docs_folder, release_folder
    from flows.release.hub import HubPushError
    from flows.release.publish import ReleaseBlockedError
    from flows.release.repository import ReleaseError
    from flows.stages.publish import PublishParams, publish_flow

    params = _params(PublishParams, name=name, version=version, max_shard_mb=max_shard_mb)
    settings = _settings()
    try:
        summary = publish_flow(params)
    except ReleaseError as err:
        raise ConfigError(str(err)) from None
    except HubPushError as err:
        raise ConfigError(f"{err}; the local release is tagged, the next publish pushes it") from None
    except ReleaseBlockedError as err:
        console.print(f"[bold red]release blocked[/]: {err}")
        console.print(f"Data Docs: {docs_folder(settings, name) / 'index.html'}")
        raise typer.Exit(EXIT_ERROR) from None
    state = "tagged" if summary.created else "unchanged, no new tag"
    console.print(f"{name}@{summary.version} ({state}): {summary.rows} rows, not published {dict(summary.skipped)}")
    console.print(f"release folder: {release_folder(settings, name)}")
    console.print(f"load it:        lookcloser dataset path {name} --version {summary.version}")
    for push in summary.hub:
        console.print(f"pushed:         {push.repo_id}@{push.version} (Hub)")


@dataset_app.command("path")
def dataset_path(
    name: Annotated[str, typer.Argument(help="dataset name")],
    version: Annotated[str, typer.Option(help="vMAJOR.MINOR.PATCH")],
) -> None:
    """A local folder holding exactly that version."""
    from flows.release.folders import release_folder, worktrees_folder
    from flows.release.repository import ReleaseError, version_path

    settings = _settings()
    try:
        path = version_path(release_folder(settings, name), version, worktrees_folder(settings, name))
    except ReleaseError as err:
        raise ConfigError(str(err)) from None
    typer.echo(str(path))


@dataset_app.command("export")
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
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, not {to!r}")
    settings = _settings()
    try:
        path = version_path(release_folder(settings, name), version, worktrees_folder(settings, name))
    except ReleaseError as err:
        raise ConfigError(str(err)) from None
    summary = export_release(path, out, to, name=name.replace("-", "_"), config=config)  # type: ignore[arg-type]
    rows = ", ".join(f"{split} {n}" for split, n in sorted(summary.rows.items())) or "no rows"
    console.print(f"{name}@{version} → {summary.folder} ({to}): {rows}; {summary.images} images")


@app.command()
def train(
    dataset: Annotated[str, typer.Option(help="dataset name")],
    version: Annotated[str, typer.Option(help="dataset version, e.g. v1.0.0")],
    recipe: Annotated[
        str, typer.Option(help="recipe name: training/recipes/<model>/<sft|grpo>/<recipe>.yaml")
    ] = "tiny-cpu",
    stage: Annotated[list[str] | None, typer.Option(help="sft and/or grpo (default: both, in order)")] = None,
    accelerate_config: Annotated[str | None, typer.Option(help="accelerate config file (multi-GPU)")] = None,
) -> None:
    """Launch the bundled SFT then GRPO job on a dataset version (adapters and run records in the workspace)."""
    _prepare_prefect()
    from flows.release.repository import ReleaseError
    from flows.stages.train import TrainError, TrainParams, train_flow

    params = _params(
        TrainParams, dataset=dataset, version=version, recipe=recipe, stages=stage, accelerate_config=accelerate_config
    )
    try:
        outputs = train_flow(params)
    except ReleaseError as err:
        raise ConfigError(str(err)) from None
    except TrainError as err:
        console.print(f"[bold red]training failed[/]: {err}")
        raise typer.Exit(EXIT_ERROR) from None
    for name, folder in outputs.items():
        console.print(f"{name:5s} {folder}  (adapter, run.json, job.log)")


@app.command()
def evaluate(
    dataset: Annotated[str, typer.Option(help="dataset name")],
    version: Annotated[str, typer.Option(help="dataset version, e.g. v1.0.0")],
    split: Annotated[str, typer.Option(help="split to evaluate")] = "test",
    endpoint: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint (vLLM), base URL")] = None,
    served_model: Annotated[str | None, typer.Option(help="model name at the endpoint")] = None,
    model: Annotated[str | None, typer.Option(help="local checkpoint folder (runs in the training env)")] = None,
    adapter: Annotated[list[str] | None, typer.Option(help="PEFT adapter for --model; repeat: merged in order")] = None,
    rollouts: Annotated[int | None, typer.Option(help="sampled rollouts per sample (default 8)")] = None,
    no_tool: Annotated[bool, typer.Option("--no-tool", help="single-turn baseline: no zoom")] = False,
    max_rows: Annotated[int | None, typer.Option(help="evaluate the first N rows only")] = None,
    recipe: Annotated[str | None, typer.Option(help="GRPO recipe: its G, T, δ and pixel budget")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="tokens per reply (default 512)")] = None,
) -> None:
    """Accuracy and uncertainty-alignment metrics per organ (paper Tables 1 and 2), with plots."""
    _prepare_prefect()
    from flows.release.repository import ReleaseError
    from flows.stages.evaluate import EvaluateParams, evaluate_flow

    params = _params(
        EvaluateParams,
        dataset=dataset,
        version=version,
        split=split,
        endpoint=endpoint,
        served_model=served_model,
        model=model,
        adapters=adapter,
        rollouts=rollouts,
        tool=not no_tool,
        max_rows=max_rows,
        recipe=recipe,
        max_tokens=max_tokens,
    )
    try:
        folder = evaluate_flow(params)
    except ReleaseError as err:
        raise ConfigError(str(err)) from None
    console.print((Path(folder) / "report.md").read_text())
    console.print(f"report, metrics.csv and plots: {folder}")


# ------------------------------------------------------------------------------------------ read-only
@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="one JSON object (DESIGN §9)")] = False) -> None:
    """What every stage holds: in = out + quarantined, per organ counts, releases."""
    report = _open_catalog(_settings()).status()
    if as_json:
        typer.echo(json.dumps(report))
    else:
        _print_status(report)


def _print_status(report: dict[str, Any]) -> None:
    stages = Table(title="stages (in = out + quarantined)")
    for column in ("stage", "in", "out", "quarantined", "reasons"):
        stages.add_column(column, justify="left" if column in ("stage", "reasons") else "right")
    for stage, c in report["stages"].items():
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(c["quarantined"].items()))
        stages.add_row(stage, str(c["in"]), str(c["out"]), str(sum(c["quarantined"].values())), reasons)
    console.print(stages)
    organs = Table(title="organs")
    for column in ("organ", "images", "c=1", "c=0"):
        organs.add_column(column, justify="right" if column != "organ" else "left")
    for organ, c in report["organs"].items():
        organs.add_row(organ, str(c["images"]), str(c["c1"]), str(c["c0"]))
    console.print(organs)
    console.print(f"releases: {', '.join(report['releases']) or 'none'}")


def _masked(url: str) -> str:
    from flows.catalog import masked_url

    return masked_url(url) if "://" in url else url


@schemas_app.command("export")
def schemas_export(directory: Annotated[Path, typer.Argument(help="output folder")]) -> None:
    """Write the JSON Schema of every record to DIR/<Record>.schema.json."""
    from schemas.export import export_json_schemas

    for path in export_json_schemas(directory):
        console.print(f"wrote {path}")


@app.command()
def doctor() -> None:
    """Check settings and services; exit 2 if the catalog or image store is unusable."""
    from flows.runtime.doctor import run_checks

    checks = run_checks(_settings())
    table = Table(title="lookcloser doctor")
    for column in ("check", "state", "detail"):
        table.add_column(column)
    style = {"ok": "green", "warn": "yellow", "fail": "red"}
    for check in checks:
        table.add_row(check.name, f"[{style[check.state]}]{check.state}", check.detail)
    console.print(table)
    if any(check.state == "fail" for check in checks):
        raise ConfigError("doctor: " + "; ".join(f"{c.name}: {c.detail}" for c in checks if c.state == "fail"))


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the CLI and maps errors to the documented exit codes."""
    try:
        code = app(args=argv, standalone_mode=False)  # click returns typer.Exit's code here
    except (SettingsError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except typer.Exit as done:
        return done.exit_code
    except typer.Abort:
        return EXIT_ERROR
    except Exception as err:  # a one-line message; the traceback only with --verbose
        import click

        if isinstance(err, click.ClickException):
            err.show()
            return EXIT_CONFIG
        log.debug("unexpected error", exc_info=True)
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_ERROR
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())

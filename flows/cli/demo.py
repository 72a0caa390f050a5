"""`lookcloser demo`: the whole path on embedded defaults (it runs the pipeline and prints), then where to look."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from flows.cli import common
from flows.cli.inspect import print_status
from flows.cli.labels import local_server_errors, role
from flows.stages.params import IngestParams

if TYPE_CHECKING:
    from flows.stages.pipeline import Done, StageRun
    from flows.stages.registry import StageSpec

DEMO_DATASET = "lookcloser-demo"
# The demo's headings: consecutive stages under one heading are timed together.
TITLES = {
    "annotate": "Label Studio (blinded dual reading)",
    "pull": "Label Studio (blinded dual reading)",
    "synthesize": "teacher rationales (offline template backend) and expert review",
    "review": "teacher rationales (offline template backend) and expert review",
    "publish": "validate and publish",
    "train": "SFT then GRPO (tiny random Qwen2.5-VL, CPU)",
    "evaluate": "evaluate the trained tiny model (a few test rows)",
}


class StageClock:
    """Times the demo's stages; prints them beside the previous run's (kept in the workspace)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.previous: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}
        self.times: dict[str, float] = {}
        self._name: str | None = None
        self._start = 0.0

    def stage(self, name: str) -> None:
        if name == self._name:  # consecutive stages under one title share its time
            return
        self._close()
        common.console.rule(f"[bold]lookcloser demo: {name}")
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
        common.console.print(table)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.times, indent=2) + "\n")


def demo(
    count: Annotated[int, typer.Option(help="phantom images (spread over the organs)")] = common.default(
        IngestParams, "count"
    ),
    seed: Annotated[int, typer.Option(help="phantom seed")] = common.default(IngestParams, "seed"),
    labelstudio: Annotated[
        bool, typer.Option(help="run the Label Studio leg (local server, two simulated readers, pull)")
    ] = True,
) -> None:
    """The whole path on embedded defaults: phantom data → Label Studio dual reading → consensus → teacher → release
    → SFT and GRPO → evaluation. A second run reuses everything; each run prints its stage times beside the last."""
    settings = common.settings()
    common.prepare_prefect()
    common.require_reachable_cluster(settings)
    from flows.stages.ingest import IngestParams
    from flows.stages.pipeline import PipelineParams, run_pipeline
    from flows.stages.registry import WHOLE_PATH
    from flows.stages.synthesize import SynthesizeParams

    clock = StageClock(settings.workspace / "reports" / "demo-timings.json")
    credentials: dict[str, Any] = {}
    server_url = None
    if labelstudio:
        clock.stage(TITLES["annotate"])
        from annotation import local_server

        with local_server_errors():
            server, credentials = local_server.up(settings)
        server_url = server.url
    params = PipelineParams(
        dataset=DEMO_DATASET,
        skip=[] if labelstudio else [name for name in WHOLE_PATH if name != "ingest"],
        ingest=IngestParams(kind="phantom", count=count, seed=seed),
        simulate_readers=True,
        synthesize=SynthesizeParams(backend="template"),
        simulate_review=True,
        recipe="tiny-cpu",
        evaluate_rollouts=4,
        evaluate_max_rows=6,
        evaluate_max_tokens=128,
    )

    def on_start(spec: StageSpec) -> None:
        clock.stage(TITLES.get(spec.name, spec.name))

    done = common.run_stage(lambda: run_pipeline(params, on_start=on_start, on_done=print_stage))
    clock.finish()
    print_status(common.catalog_status(settings))
    where_to_look(settings, done, server_url, credentials)


def print_stage(run: StageRun, done: Done) -> None:
    """What the demo says after a stage (the stage flows log the details)."""
    say = common.console.print
    if run.name == "pull":
        posted = done["annotate"].extra["posted"] if "annotate" in done else 0
        pulled = run.result
        say(
            f"simulated readers posted {posted} annotations; pulled {sum(p.pulled for p in pulled)}, "
            f"{sum(p.disputed for p in pulled)} disputed images sent to adjudication"
        )
    elif run.name == "consensus":
        for decided in run.result:
            say(
                f"consensus {decided.organ}: c=1 {decided.c1}, c=0 {decided.c0}, quarantined {decided.quarantined or 0}"
            )
    elif run.name == "synthesize":
        say(
            f"synthesize: {run.result.produced} rationales produced, quarantined {dict(run.result.quarantined) or 0} "
            "(generator template/none/teacher-v1: phrase templates, not a model)"
        )
    elif run.name == "review":
        say(
            f"expert review: {run.result.sampled} sampled (5 % per organ and tone), {run.result.verdicts} verdicts "
            f"from the simulated senior reader, {run.result.rejected_now} rejected and quarantined"
        )
    elif run.name == "publish":
        state = "tagged" if run.result.created else "unchanged, no new tag"
        say(f"{DEMO_DATASET}@{run.result.version} ({state}): {run.result.rows} rows passed the release gate")


def where_to_look(settings: Any, done: Done, server_url: str | None, credentials: dict[str, Any]) -> None:
    say = common.console.print
    summary = done["ingest"].result
    common.console.rule("[bold]where to look")
    say(f"workspace         {settings.workspace.resolve()}")
    say(f"catalog           {common.masked(settings.resolved_catalog_url)}")
    say(f"images (de-id'd)  {settings.resolved_image_store_url}")
    say(f"phantom source    {(settings.workspace / 'sources').resolve()}  (raw PNGs, masks, manifest.jsonl)")
    say(f"ingested          {summary.out} new images, quarantined {sum(summary.quarantined.values())}")
    if not server_url:
        return
    from annotation.access import credentials_path
    from flows.release.folders import docs_folder, release_folder

    say(f"Label Studio      {server_url}  (projects: 'lookcloser <organ> - reader A|reader B|adjudication')")
    adjudicators = credentials.get("adjudicators", {})
    for reader in credentials["readers"]:
        say(f"  {role(reader, adjudicators):11} {reader['pseudonym']}  log in as {reader['email']}")
    say(f"  passwords       {credentials_path(settings)} (readable by you only)")
    say("  stop it with    lookcloser labelstudio down")
    reports = settings.workspace.resolve() / "reports"
    say(f"agreement report  {reports / 'agreement'}  (κ, plots)")
    say(f"rationales        {reports / 'synthesis' / 'report.md'}  (counts, samples per organ and tone)")
    say(f"expert review     {reports / 'review' / 'acceptance.md'}  (project 'lookcloser rationale review')")
    say(f"release           {release_folder(settings, DEMO_DATASET)}  (git tags = versions; README.md card)")
    say(f"data docs         {docs_folder(settings, DEMO_DATASET) / 'index.html'}")
    say(f"load a version    lookcloser dataset path {DEMO_DATASET} --version v1.0.0  (then load_dataset)")
    for stage, folder in done["train"].result.items():
        say(f"{stage + ' adapter':17} {folder}  (run.json, job.log)")
    say(f"evaluation        {done['evaluate'].result}  (report.md: Tables 1 and 2, metrics.csv, plots)")

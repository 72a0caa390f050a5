"""Evaluate stage: the paper's metrics of a model on one split of one dataset version, as a Prefect flow.

Against an OpenAI-compatible endpoint (vLLM serving a trained checkpoint) the rollouts run here; a local
checkpoint (`--model`, optionally `--adapter`) runs in the training environment as a job. Results
(`results.jsonl`), the report (`report.md`, `metrics.csv`, plots) and `run.json` (dataset name, version,
split, the model or endpoint, the settings) go to `workspace/evaluations/NAME/VERSION/SPLIT/RUN`.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.catalog.locks import stage_lock
from flows.evaluation.endpoint import OpenAIEndpoint, iter_eval_rows
from flows.release.folders import release_folder, worktrees_folder
from flows.release.repository import version_path
from flows.runtime.recipes import REPO
from flows.runtime.settings import Settings, SettingsError, load_settings
from flows.stages.params import EvaluateParams
from flows.stages.train import training_python
from schemas.evaluation import evaluate_rows, read_results, write_results
from schemas.revision import git_revision


def run_folder(settings: Settings, params: EvaluateParams) -> Path:
    base = settings.workspace.resolve() / "evaluations" / params.dataset / params.version / params.split
    return base / params.run_name()


def run_local_model(params: EvaluateParams, release: Path, out: Path, settings: Settings) -> None:
    command = [
        str(training_python(settings)), "-m", "training.evaluate", "--release", str(release),
        "--split", params.split, "--model", params.model or "", "--out", str(out),
        "--min-pixels", str(params.min_pixels), "--max-pixels", str(params.max_pixels),
        "--settings", json.dumps(asdict(params.rollout_settings())),
    ]  # fmt: skip
    for adapter in params.adapters:
        command += ["--adapter", adapter]
    if params.max_rows:
        command += ["--max-rows", str(params.max_rows)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"local evaluation failed (exit {result.returncode}): {tail[:300]}")


def progress_bar(futures: list[Any]) -> Any:
    from tqdm import tqdm

    return tqdm(futures, desc="evaluate", unit="sample")


@task
def rollouts_task(params: EvaluateParams) -> str:
    """Run the rollouts (here for an endpoint, as a job for a local model); returns the results file."""
    settings = load_settings()
    release = version_path(
        release_folder(settings, params.dataset), params.version, worktrees_folder(settings, params.dataset)
    )
    out = run_folder(settings, params) / "results.jsonl"
    record_path = out.parent / "run.json"
    done = out.is_file() and record_path.is_file()
    if done and json.loads(record_path.read_text()).get("params") == params.model_dump(mode="json"):
        # the same settings on the same version: reused (an endpoint's model may change behind its name:
        # delete the folder to evaluate again)
        get_run_logger().info("the same evaluation is already done (%s): reused", out)
        return str(out)
    if params.endpoint:
        rows = list(iter_eval_rows(release, split=params.split, max_rows=params.max_rows))
        if not rows:
            raise SettingsError(f"{params.dataset}@{params.version} has no rows in the split {params.split!r}")
        key = settings.teacher_api_key.get_secret_value() if settings.teacher_api_key else "none"
        backend = OpenAIEndpoint(params.endpoint, params.served_model or settings.teacher_model, api_key=key)
        rollouts = evaluate_rows(
            backend, rows, params.rollout_settings(), concurrency=params.concurrency, progress=progress_bar
        )
        write_results(rollouts, out)
        requests = backend.requests
    else:
        run_local_model(params, release, out, settings)
        requests = None
    record = {
        "dataset": {"name": params.dataset, "version": params.version, "split": params.split, "path": str(release)},
        "model": params.model,
        "adapters": params.adapters,
        "endpoint": params.endpoint,
        "served_model": params.served_model,
        "settings": params.model_dump(exclude={"dataset", "version", "split", "endpoint", "model", "adapters"}),
        "requests": requests,
        "params": params.model_dump(mode="json"),
        "git_revision": git_revision(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return str(out)


@task
def report_task(params: EvaluateParams, results_path: str) -> str:
    from flows.reports.evaluation import write_report

    folder = Path(results_path).parent
    title = f"{params.dataset}@{params.version} ({params.split}) · {params.run_name()}"
    markdown, _ = write_report(
        read_results(Path(results_path)), folder, title=title, delta=params.delta, bins=params.bins
    )
    create_markdown_artifact(key="evaluation", markdown=markdown + f"\nfolder: {folder}", description="evaluation")
    return str(folder)


@flow(name="evaluate")
def evaluate_flow(params: EvaluateParams) -> str:
    """Rollouts, metrics per organ, report and plots; returns the run folder."""
    params = params.with_recipe()
    name = f"evaluate:{params.dataset}@{params.version}:{params.split}:{params.run_name()}"  # one run per folder
    with stage_lock(load_settings().resolved_catalog_url, name):
        return report_task(params, rollouts_task(params))

"""Evaluate stage: the paper's metrics of a model on one split of one dataset version, as a Prefect flow.

Against an OpenAI-compatible endpoint (vLLM serving a trained checkpoint) the rollouts run here; a local
checkpoint (`--model`, optionally `--adapter`) runs in the training environment as a job. Results
(`results.jsonl`), the report (`report.md`, `metrics.csv`, plots) and `run.json` (dataset name, version,
split, the model or endpoint, the settings) go to `workspace/evaluations/NAME/VERSION/SPLIT/RUN`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field, model_validator

from flows.evaluation.endpoint import OpenAIEndpoint, iter_eval_rows
from flows.release.folders import release_folder, worktrees_folder
from flows.release.repository import version_path
from flows.runtime.settings import Settings, SettingsError, load_settings
from flows.stages.train import REPO, recipe_files, training_python
from schemas.evaluation import RolloutSettings, evaluate_rows, read_results, write_results
from schemas.frames import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from schemas.revision import git_revision


class EvaluateParams(BaseModel):
    """One evaluation (the form in the Prefect UI)."""

    dataset: str
    version: str = Field(pattern=r"^v\d+\.\d+\.\d+$")
    split: str = "test"
    endpoint: str | None = Field(default=None, description="OpenAI-compatible base URL (vLLM)")
    served_model: str | None = Field(default=None, description="model name at the endpoint")
    model: str | None = Field(default=None, description="local checkpoint folder (transformers)")
    adapters: list[str] = Field(default_factory=list, description="PEFT adapters merged into the checkpoint, in order")
    rollouts: int = Field(default=8, ge=1, description="sampled rollouts per sample (uncertainty metrics)")
    temperature: float = Field(default=0.7, ge=0.0)
    delta: float = Field(default=0.75, gt=0.0, le=1.0, description="δ: ĉ ≥ δ counts as certain")
    bins: int = Field(default=10, ge=1, description="ECE bins (M)")
    tool: bool = Field(default=True, description="False: the single-turn baseline (no zoom)")
    max_tokens: int = Field(default=512, ge=1)
    max_rows: int | None = Field(default=None, ge=1)
    concurrency: int = Field(default=8, ge=1)
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS
    recipe: str | None = Field(
        default=None, description="GRPO recipe name: its G, T, δ and pixel budget unless given here"
    )

    @model_validator(mode="after")
    def _one_model(self) -> EvaluateParams:
        if (self.endpoint is None) == (self.model is None):
            raise ValueError("give exactly one of endpoint or model")
        return self

    def with_recipe(self) -> EvaluateParams:
        """The recipe's sampling and frame settings, for every field not set explicitly."""
        if self.recipe is None:
            return self
        values = yaml.safe_load(recipe_files(self.recipe, ["grpo"])["grpo"].read_text())
        from_recipe = {
            "rollouts": values.get("num_generations"),
            "temperature": values.get("temperature"),
            "delta": values.get("consistency_threshold"),
            "min_pixels": values.get("min_pixels"),
            "max_pixels": values.get("max_pixels"),
        }
        update = {k: v for k, v in from_recipe.items() if v is not None and k not in self.model_fields_set}
        return self.model_copy(update=update)

    def rollout_settings(self) -> RolloutSettings:
        return RolloutSettings(
            rollouts=self.rollouts, temperature=self.temperature, max_tokens=self.max_tokens, tool=self.tool
        )

    def run_name(self) -> str:
        local = self.adapters[-1] if self.adapters else self.model or ""
        what = (self.served_model or "endpoint") if self.endpoint else Path(local).name
        return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{what}{'' if self.tool else '-no-tool'}").strip("-") or "model"


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
    return report_task(params, rollouts_task(params))

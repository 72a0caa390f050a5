"""Train stage: SFT then GRPO on one dataset version with one recipe, as a job (DESIGN §7), as a Prefect flow.

Checks before anything heavy starts: the version exists (`lookcloser dataset path`), the recipe exists for
both stages, and the release's model frame equals the recipe's `min_pixels` / `max_pixels` (every row's
`orig_size` must smart-resize to its `model_size`; only parquet metadata is read). Then each stage runs as
`accelerate launch -m training.sft|grpo` in the training environment (scripts/ensure-train.sh, or
LOOKCLOSER_TRAIN_PYTHON on a GPU machine), its output streamed into the flow's log. A stage whose output
holds a `run.json` is finished and skipped, so a killed run resumes at the stage it was in. The scripts
write `run.json` (dataset name, version, path, recipe, git revision, frame, metrics) next to each adapter.

On GPUs: the `train` deployment in prefect.yaml sends this flow to a GPU work pool; pass `accelerate_config`
(training/recipes/accelerate/zero2.yaml) for several GPUs.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.catalog.locks import stage_lock
from flows.release.folders import release_folder, worktrees_folder
from flows.release.repository import version_path
from flows.runtime.recipes import REPO, recipe_files
from flows.runtime.settings import Settings, SettingsError, load_settings
from flows.stages.params import TrainParams
from schemas.revision import git_revision

log = logging.getLogger(__name__)


class TrainError(Exception):
    """A stage of the job failed; the message names it and ends with the job's last log line."""


def check_frame(release: Path, recipes: dict[str, Path], settings: Settings) -> None:
    """The release's model frame must be each recipe's: refused before any model is loaded. The check is the
    training side's (`training/data.py`), run as a short job in the training environment."""
    command = [str(training_python(settings)), "-m", "training.data", "--release", str(release)]
    command += [arg for stage, recipe in recipes.items() for arg in ("--recipe", f"{stage}={recipe}")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if result.returncode == 2:
        raise SettingsError(result.stderr.strip().splitlines()[-1])
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise TrainError(f"the release check failed (exit {result.returncode}): {tail[:300]}")


def training_python(settings: Settings) -> Path:
    """The training environment's python: LOOKCLOSER_TRAIN_PYTHON, or the cached venv (built when missing)."""
    configured = os.environ.get("LOOKCLOSER_TRAIN_PYTHON")
    if configured:
        return Path(configured)
    result = subprocess.run([str(REPO / "scripts" / "ensure-train.sh")], capture_output=True, text=True, check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise TrainError(f"the training environment could not be built: {result.stderr.strip()[-500:]}")
    return Path(lines[-1]) / "bin" / "python"


def run_folder(settings: Settings, params: TrainParams) -> Path:
    return settings.workspace.resolve() / "training" / params.dataset / params.version / params.recipe


def stage_command(python: Path, params: TrainParams, stage: str, recipe: Path, release: Path, out: Path) -> list[str]:
    launcher = [str(python), "-m", "accelerate.commands.launch"]
    if params.accelerate_config:
        launcher += ["--config_file", params.accelerate_config]
    else:  # one process; the recipe says CPU or GPU
        launcher += ["--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command = [
        *launcher, "-m", f"training.{stage}", "--config", str(recipe),
        "--dataset_path", str(release), "--dataset_name", params.dataset, "--dataset_version", params.version,
        "--output_dir", str(out),
    ]  # fmt: skip
    if stage == "grpo" and "sft" in params.stages:
        command += ["--sft_adapter", str(out.parent / "sft")]
    return command


def run_stage(command: list[str], out: Path, stage: str) -> None:
    """Run one stage, streaming its output into the log; TrainError with the last line when it fails."""
    logger = get_run_logger()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "LOOKCLOSER_GIT_REVISION": git_revision(), "HF_HUB_OFFLINE": "1"}
    last = ""
    with (
        (out / "job.log").open("w") as job_log,
        subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as job,
    ):
        assert job.stdout is not None
        for line in job.stdout:
            job_log.write(line)
            text = line.rstrip()
            if text:
                last = text.split("\r")[-1]
                logger.info("%s | %s", stage, last)
    if job.returncode != 0:
        raise TrainError(f"{stage} failed (exit {job.returncode}): {last[:300]}; full log: {out / 'job.log'}")


@task
def prepare_task(params: TrainParams) -> dict[str, str]:
    """Every check that needs no model: version, recipes, frame. Returns the release folder and recipes."""
    settings = load_settings()
    recipes = recipe_files(params.recipe, params.stages)
    release = version_path(
        release_folder(settings, params.dataset), params.version, worktrees_folder(settings, params.dataset)
    )
    check_frame(release, recipes, settings)
    return {"release": str(release), **{stage: str(path) for stage, path in recipes.items()}}


@task
def stage_task(params: TrainParams, stage: str, prepared: dict[str, str]) -> str:
    settings = load_settings()
    out = run_folder(settings, params) / stage
    if (out / "run.json").is_file():
        get_run_logger().info("%s already finished (%s): skipped", stage, out / "run.json")
        return str(out)
    command = stage_command(
        training_python(settings), params, stage, Path(prepared[stage]), Path(prepared["release"]), out
    )
    run_stage(command, out, stage)
    return str(out)


@flow(name="train")
def train_flow(params: TrainParams) -> dict[str, str]:
    """SFT then GRPO on one dataset version; each stage's adapter and run.json in the workspace."""
    name = f"train:{params.dataset}@{params.version}:{params.recipe}"  # one job per run folder
    with stage_lock(load_settings().resolved_catalog_url, name):
        prepared = prepare_task(params)
        outputs = {stage: stage_task(params, stage, prepared) for stage in params.stages}
    lines = [f"# {params.dataset}@{params.version} · recipe {params.recipe}", ""]
    lines += [f"- {stage}: `{path}` (adapter, processor, run.json, job.log)" for stage, path in outputs.items()]
    create_markdown_artifact(key="training", markdown="\n".join(lines), description="training run")
    return outputs

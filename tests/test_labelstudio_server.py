"""Label Studio server management: venv keying and build locking (fast), then one real server (integration)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from annotation.accounts import create_reader
from annotation.server import LabelStudioServer, free_port
from annotation.server_build import (
    REQUIREMENTS,
    build_once,
    default_cache_root,
    file_lock,
    labelstudio_template,
    labelstudio_venv,
    prepare_data_dir,
    server_environment,
)
from tests.labelstudio import running_labelstudio

TOKEN = "0123456789abcdef0123456789abcdef01234567"
READER_PASSWORD = "reader-pass-8731"


def _server(tmp_path: Path, **overrides: object) -> LabelStudioServer:
    fields: dict[str, object] = {"data_dir": tmp_path / "ls", "port": 1, "files_root": tmp_path, "venv": tmp_path}
    return LabelStudioServer(**(fields | overrides))  # type: ignore[arg-type]


# --- fast unit tests ----------------------------------------------------------------------------------------------


def test_venv_path_is_keyed_by_the_requirements_hash(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("label-studio==1.23.2\n")
    digest = hashlib.sha256(b"label-studio==1.23.2\n").hexdigest()[:16]
    assert labelstudio_venv(tmp_path / "cache", requirements) == tmp_path / "cache" / f"labelstudio-{digest}"
    assert labelstudio_template(tmp_path / "cache", requirements).name == f"labelstudio-{digest}-template"
    requirements.write_text("label-studio==1.23.3\n")
    assert labelstudio_venv(tmp_path / "cache", requirements).name != f"labelstudio-{digest}"


def test_cache_root_comes_from_lookcloser_cache_else_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKCLOSER_CACHE", str(tmp_path / "c"))
    assert labelstudio_venv().parent == tmp_path / "c"
    monkeypatch.delenv("LOOKCLOSER_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_root() == tmp_path / "home" / ".cache" / "lookcloser"


def test_requirements_pin_the_whole_tree():
    lines = [line for line in REQUIREMENTS.read_text().splitlines() if line and not line.startswith("#")]
    assert "label-studio==1.23.2" in lines
    assert "label-studio-sdk==2.1.2" in lines  # the pipeline's client pins the same version
    assert all("==" in line for line in lines), [line for line in lines if "==" not in line]


def test_file_lock_excludes_another_process(tmp_path):
    lock = tmp_path / "x.lock"
    probe = "import fcntl, sys; fcntl.flock(open(sys.argv[1], 'a'), fcntl.LOCK_EX | fcntl.LOCK_NB)"
    with file_lock(lock):
        held = subprocess.run([sys.executable, "-c", probe, str(lock)], capture_output=True, check=False)
    free = subprocess.run([sys.executable, "-c", probe, str(lock)], capture_output=True, check=False)
    assert held.returncode != 0 and b"BlockingIOError" in held.stderr
    assert free.returncode == 0


def test_build_once_builds_once_when_called_concurrently(tmp_path):
    calls = []

    def slow_build(tmp: Path) -> None:
        calls.append(tmp)
        time.sleep(0.3)
        (tmp / "done").write_text("ok")

    target = tmp_path / "venv"
    threads = [threading.Thread(target=build_once, args=(target, slow_build)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert (target / "done").read_text() == "ok"
    assert not list(tmp_path.glob(".venv.tmp-*"))


def test_build_once_leaves_nothing_when_the_build_fails(tmp_path):
    def failing_build(tmp: Path) -> None:
        (tmp / "half").write_text("x")
        raise RuntimeError("pip failed")

    with pytest.raises(RuntimeError, match="pip failed"):
        build_once(tmp_path / "venv", failing_build)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["venv.lock"]


def test_build_once_removes_what_a_killed_build_left(tmp_path):
    (tmp_path / ".venv.tmp-killed").mkdir()
    build_once(tmp_path / "venv", lambda tmp: None)
    assert (tmp_path / "venv").is_dir()
    assert not (tmp_path / ".venv.tmp-killed").exists()


def test_prepare_data_dir_copies_the_template_only_into_an_empty_dir(tmp_path):
    template = tmp_path / "template"
    template.mkdir()
    (template / "label_studio.sqlite3").write_text("migrated")
    (tmp_path / "empty").mkdir()
    assert (prepare_data_dir(tmp_path / "empty", template) / "label_studio.sqlite3").read_text() == "migrated"
    assert (prepare_data_dir(tmp_path / "new" / "dir", template) / "label_studio.sqlite3").exists()
    used = tmp_path / "used"
    used.mkdir()
    (used / "label_studio.sqlite3").write_text("annotations")
    assert (prepare_data_dir(used, template) / "label_studio.sqlite3").read_text() == "annotations"


def test_server_environment_is_offline_and_ignores_the_callers_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("PORT", "9999")  # Label Studio would read these bare names as settings
    monkeypatch.setenv("SECRET_KEY", "from-the-caller")
    env = server_environment(tmp_path, tmp_path / "files", ("a@b.org", "pw", TOKEN), {"SSRF_PROTECTION_ENABLED": "0"})
    assert "PORT" not in env and "SECRET_KEY" not in env
    assert env["COLLECT_ANALYTICS"] == env["LATEST_VERSION_CHECK"] == "false"
    assert env["SENTRY_DSN"] == env["FRONTEND_SENTRY_DSN"] == ""
    assert env["XDG_CONFIG_HOME"].startswith(str(tmp_path))
    assert env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == str(tmp_path / "files")
    assert env["LABEL_STUDIO_USER_TOKEN"] == TOKEN
    assert env["SSRF_PROTECTION_ENABLED"] == "0"
    assert "LABEL_STUDIO_USERNAME" not in server_environment(tmp_path, tmp_path)


def test_server_rejects_a_token_that_is_not_40_hex(tmp_path):
    with pytest.raises(ValueError, match="40"):
        _server(tmp_path, admin_token="not-a-token")


def test_server_repr_hides_the_secrets(tmp_path):
    server = _server(tmp_path, admin_password="hunter2-secret", admin_token=TOKEN)
    assert "hunter2-secret" not in repr(server) and TOKEN not in repr(server)


def test_stop_ignores_a_pid_file_that_is_not_this_servers(tmp_path):
    server = _server(tmp_path)
    server.data_dir.mkdir()
    server.pid_path.write_text(f"{os.getpid()}\n")  # e.g. a reused PID: must never be signalled
    assert server.pid() is None
    server.stop()
    assert not server.pid_path.exists()
    server.stop()  # idempotent


# --- one real server ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    with running_labelstudio(tmp_path_factory.mktemp("labelstudio")) as running:
        yield running


def _sdk(server: LabelStudioServer, token: str):
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=server.url, api_key=token, max_retries=0)


@pytest.mark.integration
def test_health_is_up(server):
    assert httpx.get(f"{server.url}/health", timeout=5).json() == {"status": "UP"}
    status = server.status()
    assert status["running"] and status["healthy"] and status["pid"] == server.pid()


@pytest.mark.integration
def test_admin_token_authenticates(server):
    assert _sdk(server, server.admin_token).users.whoami().email == server.admin_email


@pytest.mark.integration
def test_a_wrong_token_gets_401(server):
    response = httpx.get(
        f"{server.url}/api/current-user/whoami", headers={"Authorization": f"Token {'f' * 40}"}, timeout=10
    )
    assert response.status_code == 401


@pytest.mark.integration
def test_create_reader_twice_returns_a_working_token_and_one_user(server):
    email = "Reader.One@Example.org"
    first = create_reader(server.url, server.admin_token, email, READER_PASSWORD)
    second = create_reader(server.url, server.admin_token, email, READER_PASSWORD)
    assert first == second  # the legacy token is stable
    assert _sdk(server, second).users.whoami().email == email.lower()
    emails = [user.email for user in _sdk(server, server.admin_token).users.list()]
    assert emails.count(email.lower()) == 1


@pytest.mark.integration
def test_create_reader_refuses_an_existing_account_with_another_password(server):
    create_reader(server.url, server.admin_token, "reader.two@example.org", READER_PASSWORD)
    with pytest.raises(RuntimeError, match="refused"):
        create_reader(server.url, server.admin_token, "reader.two@example.org", "another-pass-4410")


@pytest.mark.integration
def test_create_reader_with_personal_access_tokens_only(server):
    from label_studio_sdk.core.api_error import ApiError

    admin_pat = _sdk(server, server.admin_token).tokens.create().token
    admin = _sdk(server, admin_pat)
    admin.jwt_settings.update(api_token_ttl_days=36500, api_tokens_enabled=True, legacy_api_tokens_enabled=False)
    try:
        first = create_reader(server.url, admin_pat, "reader.pat@example.org", READER_PASSWORD)
        second = create_reader(server.url, admin_pat, "reader.pat@example.org", READER_PASSWORD)
        assert first.count(".") == second.count(".") == 2  # JWT refresh tokens
        assert _sdk(server, second).users.whoami().email == "reader.pat@example.org"
        with pytest.raises(ApiError):  # one PAT per user: the repeated call revoked the first
            _sdk(server, first).users.whoami()
    finally:
        admin.jwt_settings.update(api_token_ttl_days=36500, api_tokens_enabled=True, legacy_api_tokens_enabled=True)
    assert _sdk(server, server.admin_token).users.whoami().email == server.admin_email


@pytest.mark.integration
def test_server_runs_offline_with_secrets_out_of_argv(server):
    pid = server.pid()
    environ = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
    assert environ["COLLECT_ANALYTICS"] == "false"
    assert environ["LATEST_VERSION_CHECK"] == "false"
    assert environ["SENTRY_DSN"] == "" and environ["FRONTEND_SENTRY_DSN"] == ""
    assert environ["LABEL_STUDIO_BASE_DATA_DIR"] == str(server.data_dir)
    assert environ["XDG_CONFIG_HOME"].startswith(str(server.data_dir))
    cmdline = Path(f"/proc/{pid}/cmdline").read_text()
    assert server.admin_password not in cmdline and server.admin_token not in cmdline


@pytest.mark.integration
def test_start_again_is_a_no_op_and_a_taken_port_is_refused(server, tmp_path):
    pid = server.pid()
    server.start()
    assert server.pid() == pid
    other = LabelStudioServer(data_dir=tmp_path / "other", port=server.port, files_root=tmp_path, venv=server.venv)
    with pytest.raises(RuntimeError, match="already in use"):
        other.start()


@pytest.mark.integration
def test_an_early_exit_names_the_log(server, tmp_path):
    broken = LabelStudioServer(
        data_dir=tmp_path / "broken",
        port=free_port(),
        files_root=tmp_path,
        venv=server.venv,
        extra_env={"DJANGO_SETTINGS_MODULE": "no.such.settings"},
    )
    with pytest.raises(RuntimeError, match=r"exited with code .* see .*server\.log"):
        broken.start(timeout_s=60)
    assert broken.pid() is None


@pytest.mark.integration
def test_stop_leaves_no_process(server):  # last: it stops the module's server
    pid = server.pid()
    assert pid is not None
    server.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # nothing left in its process group either
    assert not server.pid_path.exists()
    assert not server.is_healthy()
    server.stop()  # idempotent

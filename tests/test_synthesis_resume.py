"""Kill the synthesis process with SIGKILL three times at random points, then let it finish.

Nothing is lost, no teacher call whose reply was committed is made again, and the final rationales
equal those of an uninterrupted run on the same records (content faults and the template replies
are deterministic per request; transport faults only change how often a request is retried).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.catalog import Catalog
from flows.ingest.image_store import ImageStore
from flows.runtime.settings import load_settings
from flows.stages.synthesize import SynthesizeParams, run_synthesis
from tests.scripted_openai import FaultPlan, ScriptedOpenAIServer
from tests.teacher_fixtures import phantom_consensus, template_responders

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
FAULTS = FaultPlan(server_error=0.1, timeout=0.03, malformed_json=0.1, wrong_tone=0.1, rate_limited=0.05, hang_s=1.5)
PARAMS = {
    "backend": "openai",
    "candidates": 2,
    "concurrency": 8,
    "timeout_s": 0.5,
    "max_retries": 12,
    "backoff_s": 0.01,
    "progress": False,
}
RUNNER = (
    "from flows.runtime.settings import load_settings\n"
    "from flows.stages.synthesize import SynthesizeParams, run_synthesis\n"
    f"run_synthesis(SynthesizeParams(**{PARAMS!r}), load_settings())\n"
)


def make_workspace(root: Path) -> tuple[dict[str, str], Catalog]:
    workspace = root / "ws"
    env = {"LOOKCLOSER_WORKSPACE": str(workspace), "LOOKCLOSER_TEACHER_MODEL": "scripted"}
    os.environ.update(env)
    settings = load_settings()
    catalog = Catalog(settings.resolved_catalog_url)
    phantom_consensus(catalog, ImageStore(settings.resolved_image_store_url), workspace / "src", count=24, seed=5)
    return env, catalog


def committed_calls(catalog: Catalog) -> set[str]:
    """Item headers of every teacher call whose reply is in the durable cache."""
    return {
        f"{row['item_key']}:{row['seed']}:{'repair' if row['repair'] else 'first'}" for row in catalog.cache_index()
    }


def final_rationales(catalog: Catalog) -> dict[str, tuple]:
    return {
        r.record_id: (r.valid, r.search, r.diagnosis, r.seed, r.regenerations, tuple(r.validation_errors))
        for r in catalog.rationales()
    }


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("CATALOG_URL", "IMAGE_STORE_URL", "TEACHER_API_KEY", "WORKSPACE", "TEACHER_BASE_URLS"):
        monkeypatch.delenv(f"LOOKCLOSER_{name}", raising=False)
    monkeypatch.setattr(os, "environ", os.environ.copy())  # make_workspace writes into it
    return monkeypatch


def test_sigkill_three_times_then_resume_equals_an_uninterrupted_run(tmp_path, clean_env):
    reference_env, reference = make_workspace(tmp_path / "reference")
    good, wrong_tone = template_responders(reference)
    with ScriptedOpenAIServer(good, faults=FAULTS, tone_flip_responder=wrong_tone, latency_s=0.02) as server:
        os.environ.update(reference_env | {"LOOKCLOSER_TEACHER_BASE_URLS": server.base_url})
        run_synthesis(SynthesizeParams(**PARAMS), load_settings())
        expected = final_rationales(reference)
        total_requests = len(server.log)
        assert expected and total_requests > 50

        killed_env, killed = make_workspace(tmp_path / "killed")
        env = {**os.environ, **killed_env, "LOOKCLOSER_TEACHER_BASE_URLS": server.base_url, "PYTHONPATH": str(REPO)}
        rng = random.Random(7)
        kills = 0
        for segment in range(4):
            before = committed_calls(killed)
            server.reset_log()
            process = subprocess.Popen([sys.executable, "-c", RUNNER], cwd=REPO, env=env)
            if segment < 3:  # a random point in the remaining work; the last segment runs to the end
                threshold = max(5, int(rng.uniform(0.15, 0.45) * max(total_requests - len(before), 10)))
                while process.poll() is None and len(server.log) < threshold:
                    time.sleep(0.01)
                if process.poll() is None:
                    process.send_signal(signal.SIGKILL)
                    kills += 1
            assert process.wait(timeout=300) in (0, -signal.SIGKILL)
            repeated = [e.item for e in server.log if e.item in before]
            assert repeated == [], f"segment {segment} asked again for committed calls {repeated[:5]}"
        assert kills == 3
        assert process.returncode == 0
    assert final_rationales(killed) == expected
    status = killed.status()["stages"]["synthesize"]
    assert status["in"] == len(expected) == status["out"] + sum(status["quarantined"].values())
    reference.close()
    killed.close()

"""Stage locks (issue 20): one lease per stage on the catalog, on SQLite (an OS file lock beside the catalog) and
PostgreSQL (a session advisory lock), taken by every stage flow, whether the CLI or a deployment runs it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.catalog.locks import StageBusyError, lock_key, lock_path, stage_lock
from flows.runtime.settings import SettingsError

REPO = Path(__file__).resolve().parents[1]
HOLDER = """
import sys, time
from flows.catalog.locks import stage_lock
with stage_lock(sys.argv[1], sys.argv[2]):
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
print("released", flush=True)
"""


class Holder:
    """Another process that takes lock `name` and keeps it for `seconds` (or until killed)."""

    def __init__(self, url: str, name: str, seconds: float = 120.0) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, url, name, str(seconds)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline()
        if line.strip() != "held":
            self.process.kill()
            raise AssertionError(f"the holder did not take the lock: {line!r} {self.process.stderr.read()[-2000:]}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=30) == -signal.SIGKILL

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process.stdout.close()
        self.process.stderr.close()


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.stop()


def refusal(url: str, name: str, wait_seconds: float = 0) -> str:
    with pytest.raises(StageBusyError) as refused, stage_lock(url, name, wait_seconds=wait_seconds):
        pytest.fail(f"{name} was taken twice")
    return str(refused.value)


def test_a_second_holder_is_refused_with_one_line_naming_the_stage_and_the_holder(catalog_url, holders):
    holders.append(holder := Holder(catalog_url, "ingest"))
    message = refusal(catalog_url, "ingest")
    assert message.startswith("ingest is already running (")
    assert f"pid {holder.pid} on {socket.gethostname()[:30]}" in message and " since " in message
    assert " UTC); wait for it or, if that process is gone, see docs/operator.md" in message
    assert message.endswith('"A stage is busy"')
    assert "\n" not in message
    assert "catalog.sqlite" not in message and "://" not in message  # no paths, no URL
    with pytest.raises(SettingsError), stage_lock(catalog_url, "ingest"):  # the CLI's one-line error, exit code 2
        pass


def test_a_second_holder_in_the_same_process_is_refused(catalog_url):
    with stage_lock(catalog_url, "publish:lookcloser"):
        message = refusal(catalog_url, "publish:lookcloser")
    assert message.startswith("publish:lookcloser is already running (")
    assert f"pid {os.getpid()} on " in message
    with stage_lock(catalog_url, "publish:lookcloser"):  # released on the way out
        pass


def test_other_stages_and_other_releases_are_independent(catalog_url, holders):
    holders.append(Holder(catalog_url, "publish:lookcloser"))
    for other in ("ingest", "consensus", "publish", "publish:other-release", "publish_lookcloser"):
        with stage_lock(catalog_url, other):
            pass
    assert "publish:lookcloser is already running" in refusal(catalog_url, "publish:lookcloser")


def test_the_lease_of_a_killed_run_ends_with_it(catalog_url, holders):
    holders.append(holder := Holder(catalog_url, "ingest"))
    refusal(catalog_url, "ingest")
    holder.kill()
    started = time.monotonic()
    with stage_lock(catalog_url, "ingest", wait_seconds=10):  # PostgreSQL: the backend notices the closed socket
        taken = time.monotonic() - started
        assert f"pid {os.getpid()} on " in refusal(catalog_url, "ingest")  # the new holder is the one named
    assert taken < 2, f"the killed run's lease lasted {taken:.1f} s more"


def test_wait_seconds_waits_for_the_holder_to_finish(catalog_url, holders):
    holders.append(holder := Holder(catalog_url, "synthesize", seconds=2))
    started = time.monotonic()
    with stage_lock(catalog_url, "synthesize", wait_seconds=60):
        waited = time.monotonic() - started
    assert holder.process.wait(timeout=30) == 0
    assert holder.process.stdout.readline().strip() == "released"
    assert 0.5 < waited < 30


def test_wait_seconds_gives_up_with_the_same_refusal(catalog_url, holders):
    holders.append(holder := Holder(catalog_url, "review"))
    started = time.monotonic()
    message = refusal(catalog_url, "review", wait_seconds=1.0)
    assert time.monotonic() - started >= 1.0
    assert f"review is already running (pid {holder.pid} on " in message


def test_lock_names_map_to_distinct_keys_and_files(tmp_path):
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    names = ["ingest", "publish:a_b", "publish_a:b", "publish:a:b", "train:demo@v1.0.0:tiny-cpu"]
    assert len({lock_key(n) for n in names}) == len({lock_path(url, n) for n in names}) == len(names)
    assert lock_key("ingest") == lock_key("ingest") and -(2**63) <= lock_key("ingest") < 2**63
    assert lock_path(url, "ingest") == (tmp_path / "catalog.sqlite.ingest.lock").resolve()
    assert lock_path("sqlite://", "ingest") is None  # an in-memory catalog is one process's own
    with stage_lock("sqlite://", "ingest"), stage_lock("sqlite://", "ingest"):
        pass


def _stage_calls() -> list[tuple[str, str, object]]:
    from flows.stages import params as p

    return [
        ("ingest", "ingest", p.IngestParams()),
        ("annotate", "annotate", p.AnnotateParams()),
        ("pull", "pull", p.PullParams()),
        ("consensus", "consensus", p.ConsensusParams()),
        ("synthesize", "synthesize", p.SynthesizeParams()),
        ("review", "review", p.ReviewParams()),
        ("publish", "publish:demo", p.PublishParams(name="demo")),
        ("train", "train:demo@v1.0.0:tiny-cpu", p.TrainParams(dataset="demo", version="v1.0.0")),
        (
            "evaluate",
            "evaluate:demo@v1.0.0:test:m",
            p.EvaluateParams(dataset="demo", version="v1.0.0", endpoint="http://127.0.0.1:9/v1", served_model="m"),
        ),
    ]


def test_every_stage_flow_takes_its_lock_before_any_work(workspace, monkeypatch, postgres_url):
    """Every stage of the stage list is refused while another run holds its lock (deployments and the CLI both run
    these functions), on both back ends; nothing is written first (no catalog file)."""
    from flows.stages.registry import STAGES

    calls = _stage_calls()
    assert sorted(stage for stage, _, _ in calls) == sorted(spec.name for spec in STAGES)
    flows = {spec.name: spec.load_flow() for spec in STAGES}
    for url in (None, postgres_url):
        if url:
            monkeypatch.setenv("LOOKCLOSER_CATALOG_URL", url)
        catalog = url or f"sqlite:///{(workspace / 'catalog.sqlite').resolve()}"
        for stage, name, params in calls:
            busy = f"^{name} is already running \\(pid {os.getpid()} "
            with stage_lock(catalog, name), pytest.raises(StageBusyError, match=busy):
                flows[stage].fn(params)
    assert not (workspace / "catalog.sqlite").exists()


@pytest.mark.integration
def test_the_cli_says_a_busy_stage_in_one_line_with_exit_code_2(workspace, prefect_api, capsys):
    from flows.cli.main import main

    with stage_lock(f"sqlite:///{(workspace / 'catalog.sqlite').resolve()}", "ingest"):
        capsys.readouterr()
        code = main(["--workspace", str(workspace), "ingest", "phantom", "--count", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith(f"error: ingest is already running (pid {os.getpid()} on ")
    assert err[-1].endswith('see docs/operator.md "A stage is busy"')
    assert main(["--workspace", str(workspace), "ingest", "phantom", "--count", "3"]) == 0  # free again

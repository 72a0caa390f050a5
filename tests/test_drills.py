"""Failure drills: a part dies in the middle of a stage, and the stage still ends as an undisturbed run does.

Each drill runs a stage twice on the same input: once undisturbed (the reference) and once with a
real failure injected mid-run: a Dask worker process killed with SIGKILL, the PostgreSQL server
restarted, the Label Studio server restarted, a teacher replica shut down. The catalogs are then
compared row by row (ids and times aside): nothing lost, nothing duplicated.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.catalog import Catalog
from flows.ingest.core import IngestOptions, register_items
from flows.ingest.image_store import ImageStore
from flows.ingest.sources.phantom import phantom_items
from flows.runtime.settings import load_settings
from flows.stages.consensus import ConsensusParams, consensus_flow
from flows.stages.ingest import IngestParams, ingest_flow
from flows.stages.synthesize import SynthesizeParams, run_synthesis
from tests.catalog_content import catalog_content, content_difference
from tests.postgres import PostgresServer, running_postgres
from tests.reader_fixtures import simulated_readings
from tests.scripted_openai import ScriptedOpenAIServer
from tests.teacher_fixtures import phantom_consensus, template_responders

pytestmark = pytest.mark.integration


def rows(content: dict[str, list[str]], table: str, stage: str | None = None) -> list[str]:
    """A table's rows; for stage_items only one stage's."""
    found = content[table]
    return [r for r in found if r.startswith(f'["{stage}"')] if stage else found


def use_workspace(monkeypatch: pytest.MonkeyPatch, workspace: Path, catalog_url: str | None = None) -> None:
    monkeypatch.setenv("LOOKCLOSER_WORKSPACE", str(workspace))
    monkeypatch.setenv("LOOKCLOSER_PATIENT_KEY_SALT", "drill salt, 16 bytes or more")
    monkeypatch.setenv("LOOKCLOSER_TASK_RUNNER", "local")
    for name in ("IMAGE_STORE_URL", "TEACHER_API_KEY", "LABEL_STUDIO_TOKEN", "READERS_FILE", "DASK_ADDRESS"):
        monkeypatch.delenv(f"LOOKCLOSER_{name}", raising=False)
    if catalog_url:
        monkeypatch.setenv("LOOKCLOSER_CATALOG_URL", catalog_url)
    else:
        monkeypatch.delenv("LOOKCLOSER_CATALOG_URL", raising=False)


# ------------------------------------------------------------------------------ a Dask worker dies mid-ingest
INGEST_IMAGES, INGEST_BATCH = 96, 8


@pytest.fixture
def dask_cluster() -> Iterator:
    """Starts an operator's standing Dask cluster on demand: 2 worker processes, each under a nanny that
    restarts it. Its workers take their settings from the environment at start, as deployed workers do."""
    from distributed import Client, LocalCluster

    started = []

    def start() -> tuple[LocalCluster, Client]:
        cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1"
        )
        started.append((cluster, Client(cluster)))
        return started[-1]

    yield start
    for cluster, client in started:
        client.close()
        cluster.close()


def test_drill_dask_worker_killed_mid_ingest(tmp_path, postgres_cluster, prefect_api, dask_cluster, monkeypatch):
    monkeypatch.setattr("flows.ingest.core.INGEST_BATCH", INGEST_BATCH)
    reference_url = postgres_cluster.create_database()
    use_workspace(monkeypatch, tmp_path / "reference", reference_url)
    ingest_flow(IngestParams(count=INGEST_IMAGES, seed=21))
    reference = catalog_content(reference_url)

    drill_url = postgres_cluster.create_database()
    workspace = tmp_path / "drill"
    use_workspace(monkeypatch, workspace, drill_url)
    monkeypatch.setenv("LOOKCLOSER_TASK_RUNNER", "dask")
    cluster, client = dask_cluster()
    monkeypatch.setenv("LOOKCLOSER_DASK_ADDRESS", cluster.scheduler_address)
    victim = sorted(client.run(os.getpid).values())[0]
    store = workspace / "images"
    killed_at: list[int] = []  # images stored when the worker was killed
    finished = threading.Event()

    def kill_once_work_is_under_way() -> None:
        while not finished.is_set():
            stored = len(list(store.glob("*/*.png"))) if store.exists() else 0
            if stored >= INGEST_BATCH:
                os.kill(victim, signal.SIGKILL)
                killed_at.append(stored)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_once_work_is_under_way)
    killer.start()
    try:
        summary = ingest_flow(IngestParams(count=INGEST_IMAGES, seed=21))
    finally:
        finished.set()
        killer.join()

    assert killed_at and killed_at[0] < INGEST_IMAGES, "the worker must die while batches are still to do"
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)
    assert summary.seen == INGEST_IMAGES
    drill = catalog_content(drill_url)
    for table in ("images", "image_sources", "source_annotations"):
        assert drill[table] == reference[table], table
    assert rows(drill, "stage_items", "ingest") == rows(reference, "stage_items", "ingest")
    # the store holds each catalogued image once, complete (a half-written file never takes a real name)
    assert sorted(p.stem for p in store.glob("*/*.png")) == sorted(r.split('"')[1] for r in drill["images"]) or len(
        list(store.glob("*/*.png"))
    ) == len(drill["images"])


# ------------------------------------------------------------------------------ PostgreSQL restarts mid-consensus
CONSENSUS_IMAGES = 90


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """A server of the drill's own: restarting it disturbs no other test's connections."""
    with running_postgres() as server:
        yield server


def read_catalog(url: str, workspace: Path) -> None:
    """Phantom images with two simulated readers' readings, as after a pull."""
    catalog = Catalog(url)
    try:
        items = phantom_items(workspace / "sources", seed=8, count=CONSENSUS_IMAGES)
        register_items(items, catalog, ImageStore(str(workspace / "images")), b"salt", IngestOptions())
        readings = simulated_readings(catalog)
        catalog.save_pulled(readings, [(f"sim:{k}", "out", None, None) for k in range(len(readings))])
    finally:
        catalog.close()


def test_drill_postgres_restarted_mid_consensus(tmp_path, own_postgres, prefect_api, monkeypatch):
    reference_url, drill_url = own_postgres.create_database(), own_postgres.create_database()
    for url in (reference_url, drill_url):
        read_catalog(url, tmp_path / "sources")
    use_workspace(monkeypatch, tmp_path / "reference", reference_url)
    consensus_flow(ConsensusParams())
    reference = catalog_content(reference_url)

    use_workspace(monkeypatch, tmp_path / "drill", drill_url)
    monkeypatch.setattr("flows.stages.consensus.CONSENSUS_BATCH", 50)  # several commits per organ
    save = Catalog.save_consensus
    calls: list[str] = []
    failures: list[str] = []

    def save_with_an_outage(self, decisions):
        calls.append("save")
        if len(calls) == 2:  # one batch committed, the run in full swing: the server goes down for 3 s
            own_postgres.stop("fast")
            threading.Timer(3.0, own_postgres.start).start()
        try:
            return save(self, decisions)
        except Exception as err:
            failures.append(type(err).__name__)
            raise

    monkeypatch.setattr(Catalog, "save_consensus", save_with_an_outage)
    consensus_flow(ConsensusParams())

    drill = catalog_content(drill_url)
    assert failures == ["OperationalError"]  # the outage hit the run once; the retried task went on
    assert rows(drill, "consensus") == rows(reference, "consensus")
    # the audit trail has each decision once: the resumed task did not decide committed images again
    assert rows(drill, "consensus_decisions") == rows(reference, "consensus_decisions")
    assert rows(drill, "stage_items", "consensus") == rows(reference, "stage_items", "consensus")
    assert content_difference(drill, reference) == {}


# ------------------------------------------------------------------------------ Label Studio restarts mid-pull
PULL_IMAGES = 24


@pytest.fixture(scope="module")
def read_in_labelstudio(tmp_path_factory, prefect_api) -> Iterator[dict]:
    """A Label Studio of the drill's own, with phantom images pushed and read by two simulated readers."""
    from flows.stages.annotate import AnnotateParams, annotate_flow, simulate_readers_flow
    from tests.labelstudio import register_readers, running_labelstudio

    root = tmp_path_factory.mktemp("ls-drill")
    with running_labelstudio(root) as server, pytest.MonkeyPatch.context() as env:
        use_workspace(env, root / "ws")
        env.setenv("LOOKCLOSER_LABEL_STUDIO_URL", server.url)
        env.setenv("LOOKCLOSER_IMAGE_STORE_URL", str(server.files_root / "images"))
        settings = load_settings()
        catalog = Catalog(settings.resolved_catalog_url)
        store = ImageStore(settings.resolved_image_store_url)
        register_items(phantom_items(root / "src", seed=6, count=PULL_IMAGES), catalog, store, b"s", IngestOptions())
        catalog.close()
        register_readers(
            server, settings, (("sono-a@test.local", "R1"), ("sono-b@test.local", "R2"), ("senior@test.local", "A1"))
        )
        annotate_flow(AnnotateParams())
        simulate_readers_flow()
        yield {"server": server, "catalog_file": Path(settings.resolved_catalog_url.removeprefix("sqlite:///"))}


def test_drill_labelstudio_restarted_mid_pull(read_in_labelstudio, tmp_path, monkeypatch):
    from annotation.client import LabelStudioClient
    from flows.stages.pull import PullParams, pull_flow

    server, before_pull = read_in_labelstudio["server"], read_in_labelstudio["catalog_file"]
    reference_file, drill_file = tmp_path / "reference.sqlite", tmp_path / "drill.sqlite"
    shutil.copy(before_pull, reference_file)
    shutil.copy(before_pull, drill_file)

    monkeypatch.setenv("LOOKCLOSER_CATALOG_URL", f"sqlite:///{reference_file}")
    pull_flow(PullParams())
    reference = catalog_content(f"sqlite:///{reference_file}")

    monkeypatch.setenv("LOOKCLOSER_CATALOG_URL", f"sqlite:///{drill_file}")
    export = LabelStudioClient.export_tasks
    calls: list[int] = []
    restarted = threading.Event()
    unreachable: list[float] = []

    def export_during_a_restart(self, project_id):
        calls.append(project_id)
        if len(calls) == 3:  # the first organ's reader projects are exported: Label Studio goes down
            server.stop()
            unreachable.append(time.monotonic())
            threading.Thread(target=lambda: (time.sleep(2.0), server.start(), restarted.set())).start()
        return export(self, project_id)

    monkeypatch.setattr(LabelStudioClient, "export_tasks", export_during_a_restart)
    pull_flow(PullParams())
    assert restarted.wait(120) and server.is_healthy()

    drill = catalog_content(f"sqlite:///{drill_file}")
    assert rows(reference, "reader_annotations")  # the drill compares something
    assert rows(drill, "reader_annotations") == rows(reference, "reader_annotations")
    assert rows(drill, "stage_items", "pull") == rows(reference, "stage_items", "pull")
    assert content_difference(drill, reference) == {}


# ------------------------------------------------------------------------------ a teacher replica dies mid-synthesis
def test_drill_teacher_replica_dies_mid_synthesis(tmp_path, monkeypatch):
    def prepared(workspace: Path) -> tuple[Catalog, int]:
        use_workspace(monkeypatch, workspace)
        monkeypatch.setenv("LOOKCLOSER_TEACHER_MODEL", "scripted")
        settings = load_settings()
        catalog = Catalog(settings.resolved_catalog_url)
        store = ImageStore(settings.resolved_image_store_url)
        return catalog, phantom_consensus(catalog, store, tmp_path / "src", count=16)

    params = SynthesizeParams(backend="openai", candidates=1, concurrency=4, progress=False, backoff_s=0.05)
    catalog, records = prepared(tmp_path / "reference")
    good, _ = template_responders(catalog)
    with ScriptedOpenAIServer(good) as first, ScriptedOpenAIServer(good) as second:
        monkeypatch.setenv("LOOKCLOSER_TEACHER_BASE_URLS", f"{first.base_url},{second.base_url}")
        run_synthesis(params, load_settings())
    reference = catalog_content(load_settings().resolved_catalog_url)
    catalog.close()

    catalog, _ = prepared(tmp_path / "drill")
    answered: list[str] = []

    with ScriptedOpenAIServer(good) as survivor:
        doomed = ScriptedOpenAIServer(good)

        def answer_then_die(item: str, body: dict) -> str:
            answered.append(item)
            if len(answered) == 5:  # mid-run: this replica goes away (its process is gone, connections refused)
                threading.Thread(target=doomed.stop).start()
            return good(item, body)

        doomed.responder = answer_then_die
        doomed.start()
        monkeypatch.setenv("LOOKCLOSER_TEACHER_BASE_URLS", f"{doomed.base_url},{survivor.base_url}")
        summary = run_synthesis(params, load_settings())
        doomed.stop()

    drill = catalog_content(load_settings().resolved_catalog_url)
    catalog.close()
    assert summary.produced == records and not summary.quarantined
    assert 5 <= len(answered) < summary.calls  # the dead replica answered only until it died
    assert len(survivor.log) >= summary.calls - len(answered)  # the rest moved to the survivor
    assert summary.retries.get("connection_error", 0) > 0
    for table in ("rationales", "teacher_cache", "diversity_marks"):
        assert rows(drill, table) == rows(reference, table), table
    assert rows(drill, "stage_items", "synthesize") == rows(reference, "stage_items", "synthesize")

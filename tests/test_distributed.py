"""Ingest and synthesis on a Dask cluster (several worker processes) and on Ray, against PostgreSQL.

Each run is compared with a single-process run of the same input: the catalogs must hold the same
rows (ids and times aside), so spreading the work changes where it runs, never what it produces.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.catalog import Catalog
from flows.runtime.settings import load_settings
from flows.stages.ingest import IngestParams, ingest_flow
from flows.stages.synthesize import SynthesizeParams, synthesize_flow
from tests.catalog_content import catalog_content, content_difference
from tests.scripted_openai import ScriptedOpenAIServer
from tests.teacher_fixtures import template_responders, truth_consensus

pytestmark = pytest.mark.integration
IMAGES = 60
BATCH = 8  # small batches: many more tasks than workers, so ordering across workers is exercised


def use(monkeypatch: pytest.MonkeyPatch, workspace: Path, catalog_url: str, runner: str, teachers: str = "") -> None:
    """Select a workspace, catalog and task runner through the environment, as an operator would."""
    monkeypatch.setenv("LOOKCLOSER_WORKSPACE", str(workspace))
    monkeypatch.setenv("LOOKCLOSER_CATALOG_URL", catalog_url)
    monkeypatch.setenv("LOOKCLOSER_TASK_RUNNER", runner)
    monkeypatch.setenv("LOOKCLOSER_WORKERS", "2")
    monkeypatch.setenv("LOOKCLOSER_PATIENT_KEY_SALT", "the same salt for both runs")
    monkeypatch.setenv("LOOKCLOSER_TEACHER_BASE_URLS", teachers)
    monkeypatch.setenv("LOOKCLOSER_TEACHER_MODEL", "scripted")
    monkeypatch.delenv("LOOKCLOSER_IMAGE_STORE_URL", raising=False)


def ingest_and_decide(monkeypatch, workspace: Path, url: str, runner: str) -> None:
    use(monkeypatch, workspace, url, runner)
    monkeypatch.setattr("flows.ingest.core.INGEST_BATCH", BATCH)
    summary = ingest_flow(IngestParams(count=IMAGES, seed=11))
    assert summary.seen == IMAGES and summary.out + sum(summary.quarantined.values()) == IMAGES
    catalog = Catalog(url)
    try:
        truth_consensus(catalog)
    finally:
        catalog.close()


@pytest.fixture(scope="module")
def teachers() -> Iterator[list[ScriptedOpenAIServer]]:
    """Two scripted teacher replicas; their responder is set once the records exist."""
    replicas = [ScriptedOpenAIServer(lambda item, body: "", model="scripted").start() for _ in range(2)]
    try:
        yield replicas
    finally:
        for replica in replicas:
            replica.stop()


def synthesize(monkeypatch, workspace: Path, url: str, runner: str, teachers: list[ScriptedOpenAIServer]):
    use(monkeypatch, workspace, url, runner, ",".join(t.base_url for t in teachers))
    catalog = Catalog(url)
    good, _ = template_responders(catalog)
    catalog.close()
    for teacher in teachers:
        teacher.responder = good
        teacher.reset_log()
    return synthesize_flow(SynthesizeParams(backend="openai", candidates=1, concurrency=8, progress=False))


@pytest.fixture(scope="module")
def single_process(tmp_path_factory, postgres_cluster, prefect_api, teachers) -> dict:
    """The reference: ingest and synthesis in one process, on its own PostgreSQL database."""
    url = postgres_cluster.create_database()
    workspace = tmp_path_factory.mktemp("single") / "ws"
    with pytest.MonkeyPatch.context() as monkeypatch:
        ingest_and_decide(monkeypatch, workspace, url, "local")
        summary = synthesize(monkeypatch, workspace, url, "local", teachers)
    assert summary.produced > 0
    return {"url": url, "summary": summary, "content": catalog_content(url)}


def test_dask_cluster_ingests_and_synthesizes_what_one_process_does(
    single_process, tmp_path, postgres_url, monkeypatch, teachers
):
    workspace = tmp_path / "ws"
    ingest_and_decide(monkeypatch, workspace, postgres_url, "dask")
    after_ingest = catalog_content(postgres_url)
    for table in ("images", "image_sources", "source_annotations", "consensus"):
        assert after_ingest[table] == single_process["content"][table], table
    summary = synthesize(monkeypatch, workspace, postgres_url, "dask", teachers)

    assert content_difference(catalog_content(postgres_url), single_process["content"]) == {}
    assert summary.produced == single_process["summary"].produced
    assert summary.requested == single_process["summary"].requested  # every record asked once, by some shard
    # both replicas served the shards' requests, from the workers' processes
    assert all(len(t.log) > 0 for t in teachers)
    # the images were written by the workers into the shared store, one file per catalogued image
    store = Path(load_settings().resolved_image_store_url)
    assert len(list(store.glob("*/*.png"))) == len(after_ingest["images"])


def test_ray_ingests_what_one_process_does(single_process, tmp_path, postgres_url, monkeypatch):
    ingest_and_decide(monkeypatch, tmp_path / "ws", postgres_url, "ray")
    content, reference = catalog_content(postgres_url), single_process["content"]
    for table in ("images", "image_sources", "source_annotations", "consensus"):
        assert content[table] == reference[table], table
    ingested = lambda rows: [row for row in rows if row.startswith('["ingest"')]  # noqa: E731
    assert ingested(content["stage_items"]) == ingested(reference["stage_items"])


def test_a_rerun_on_the_cluster_adds_nothing(single_process, tmp_path, postgres_url, monkeypatch):
    workspace = tmp_path / "ws"
    ingest_and_decide(monkeypatch, workspace, postgres_url, "dask")
    before = catalog_content(postgres_url)
    use(monkeypatch, workspace, postgres_url, "dask")
    again = ingest_flow(IngestParams(count=IMAGES, seed=11))
    assert again.skipped == IMAGES and again.out == 0
    assert catalog_content(postgres_url) == before


def test_a_memory_store_is_refused_for_workers_in_one_line(monkeypatch, tmp_path):
    from flows.runtime.settings import SettingsError

    use(monkeypatch, tmp_path / "ws", f"sqlite:///{tmp_path / 'c.sqlite'}", "dask")
    monkeypatch.setenv("LOOKCLOSER_IMAGE_STORE_URL", "memory://images")
    with pytest.raises(SettingsError, match=r"^invalid settings: LOOKCLOSER_IMAGE_STORE_URL is memory://") as err:
        load_settings()
    assert "\n" not in str(err.value)


def test_an_s3_image_store_on_a_local_s3_server(tmp_path, postgres_url, prefect_api, monkeypatch):
    """The store on s3:// (moto's S3-compatible server on 127.0.0.1, as MinIO would be): workers write into it."""
    import boto3
    import fsspec.config
    from moto.server import ThreadedMotoServer

    from flows.ingest.image_store import ImageStore
    from tests.postgres import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "FSSPEC_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        }.items():
            monkeypatch.setenv(name, value)
        # fsspec reads FSSPEC_* when imported: this process imported it already, the workers will at start
        monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": f"http://127.0.0.1:{port}"})
        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket="lookcloser")
        use(monkeypatch, tmp_path / "ws", postgres_url, "dask")
        monkeypatch.setenv("LOOKCLOSER_IMAGE_STORE_URL", "s3://lookcloser/images")
        monkeypatch.setattr("flows.ingest.core.INGEST_BATCH", BATCH)
        summary = ingest_flow(IngestParams(count=16, seed=11))
        assert summary.out == 16
        catalog = Catalog(postgres_url)
        images = list(catalog.iter_images())
        catalog.close()
        objects = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").list_objects_v2(Bucket="lookcloser")
        keys = sorted(o["Key"] for o in objects["Contents"])
        assert keys == sorted(f"images/{i.storage_key}" for i in images)
        store = ImageStore("s3://lookcloser/images")
        assert all(store.open(i.storage_key).size == (i.width, i.height) for i in images)
    finally:
        server.stop()

"""Annotate → simulated readers → pull against a real Label Studio server (its own venv, 127.0.0.1).

200 phantom images are pushed to the reader projects with pre-annotated boxes, two simulated
readers annotate through the API as their own accounts, the pull brings their readings back, and
the disputed images (and only those) land in the adjudication project. Re-import and re-pull
change nothing.
"""

from __future__ import annotations

import httpx
import pytest

from annotation.access import admin_client, load_assignment, read_credentials
from annotation.client import LabelStudioAuthError, LabelStudioClient
from annotation.consensus import readers_disagree
from annotation.label_config import label_config, result_from_reading
from annotation.projects import READER_ROLES, project_title
from annotation.readers import ReaderNoise, simulate_reading
from flows.catalog import Catalog
from flows.cli.main import main
from flows.ingest.core import IngestOptions, register_items
from flows.ingest.image_store import ImageStore
from flows.ingest.sources.phantom import phantom_items
from flows.runtime.settings import load_settings
from flows.stages.annotate import AnnotateParams, annotate_flow, simulate_readers_flow
from flows.stages.pull import PullParams, pull_flow
from schemas.vocabulary import registered_organs
from tests.labelstudio import register_readers

pytestmark = pytest.mark.integration
IMAGES = 200


@pytest.fixture(scope="module")
def annotated(labelstudio_server, prefect_api, tmp_path_factory):
    """Ingest, push, simulate both readers and pull once; hand the pieces to the tests."""
    workspace = tmp_path_factory.mktemp("ls-flow") / "ws"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LOOKCLOSER_WORKSPACE", str(workspace))
        env.setenv("LOOKCLOSER_LABEL_STUDIO_URL", labelstudio_server.url)
        env.setenv("LOOKCLOSER_IMAGE_STORE_URL", str(labelstudio_server.files_root / "images"))  # served by Local Files
        for name in ("CATALOG_URL", "LABEL_STUDIO_TOKEN", "READERS_FILE", "PATIENT_KEY_SALT"):
            env.delenv(f"LOOKCLOSER_{name}", raising=False)
        settings = load_settings()
        catalog = Catalog(settings.resolved_catalog_url)
        store = ImageStore(settings.resolved_image_store_url)
        register_items(
            phantom_items(workspace / "sources", seed=5, count=IMAGES), catalog, store, b"s", IngestOptions()
        )
        register_readers(
            labelstudio_server,
            settings,
            (("sono-a@test.local", "R1"), ("sono-b@test.local", "R2"), ("senior@test.local", "A1")),
        )
        pushed = annotate_flow(AnnotateParams())
        posted = simulate_readers_flow()
        pulled = pull_flow(PullParams())
        yield {
            "settings": settings,
            "catalog": catalog,
            "pushed": pushed,
            "posted": posted,
            "pulled": pulled,
            "client": admin_client(settings),
            "assignment": load_assignment(settings),
            "env": env,
        }
        catalog.close()


def _project(client: LabelStudioClient, organ: str, role: str) -> int:
    return client.ensure_project(project_title(organ, role), label_config(organ))


def test_every_image_is_a_task_in_both_reader_projects_with_a_preannotated_box(annotated):
    client, catalog = annotated["client"], annotated["catalog"]
    assert sum(s.images for s in annotated["pushed"]) == IMAGES
    for organ in registered_organs():
        expected = {i.image_id for i in catalog.iter_images(organ=organ)}
        for role in READER_ROLES:
            tasks = client.export_tasks(_project(client, organ, role))
            assert {t["data"]["image_id"] for t in tasks} == expected
            assert all(set(t["data"]) == {"image", "image_id", "organ"} for t in tasks)  # no PHI, no file names
            assert all(len(t["predictions"]) == 1 for t in tasks)  # the source-mask pre-annotation (ids in exports)


def test_a_reader_can_load_every_task_image(annotated, labelstudio_server):
    """What the labeling page fetches: the Local Files URL must serve the stored PNG to a reader."""
    reader = annotated["assignment"].readers[0]
    token = next(r["token"] for r in read_credentials(annotated["settings"])["readers"] if r["email"] == reader.email)
    client = annotated["client"]
    tasks = client.export_tasks(_project(client, "breast", "reader A"))
    for task in tasks[:5]:
        response = httpx.get(
            labelstudio_server.url + task["data"]["image"], headers={"Authorization": f"Token {token}"}
        )
        assert response.status_code == 200 and response.content.startswith(b"\x89PNG")


def test_pulled_readings_equal_what_the_readers_posted(annotated):
    catalog, assignment = annotated["catalog"], annotated["assignment"]
    assert annotated["posted"] == 2 * IMAGES
    assert sum(s.pulled for s in annotated["pulled"]) == 2 * IMAGES
    checked = 0
    for organ in registered_organs():
        for image_id, by_reader in catalog.readings_by_image(organ).items():
            image = catalog.get_image(image_id)
            difficulty = image.source_metadata["lesion_difficulty"]
            truth = [(a.box, a.attributes, difficulty[k]) for k, a in enumerate(catalog.source_annotations(image_id))]
            for seed, role in enumerate(READER_ROLES):
                posted = simulate_reading(
                    truth,
                    organ,
                    (image.width, image.height),
                    reader_seed=seed,
                    image_key=image_id,
                    config=ReaderNoise(),
                )
                pulled = by_reader[assignment.reader_for(organ, role).pseudonym]
                posted = sorted(posted, key=lambda lesion: (lesion[0][0], lesion[0][1]))
                assert [r.attributes for r in pulled] == [attributes for _, attributes in posted]
                for reading, (box, _) in zip(pulled, posted, strict=True):
                    assert reading.box == pytest.approx(box, abs=0.5)
                checked += 1
    assert checked == 2 * IMAGES


def test_adjudication_receives_exactly_the_disputed_images(annotated):
    client, catalog, assignment = annotated["client"], annotated["catalog"], annotated["assignment"]
    total_disputed = 0
    for organ in registered_organs():
        first, second = (assignment.reader_for(organ, role).pseudonym for role in READER_ROLES)
        disputed = {
            image_id
            for image_id, by_reader in catalog.readings_by_image(organ).items()
            if readers_disagree({r: by_reader[r] for r in (first, second)}, min_box_iou=PullParams().min_box_iou)
        }
        tasks = client.export_tasks(_project(client, organ, "adjudication"))
        assert {t["data"]["image_id"] for t in tasks} == disputed
        assert all(len(t["predictions"]) == 2 for t in tasks)  # both readings shown
        total_disputed += len(disputed)
    assert 0 < total_disputed < IMAGES  # a realistic share disagrees


def test_the_adjudicators_answer_is_pulled_as_an_adjudication(annotated, labelstudio_server):
    catalog, settings = annotated["catalog"], annotated["settings"]
    adjudicator = next(r for r in read_credentials(settings)["readers"] if r["pseudonym"] == "A1")
    client = LabelStudioClient(labelstudio_server.url, adjudicator["token"])
    task = client.export_tasks(_project(client, "liver", "adjudication"))[0]
    image = catalog.get_image(task["data"]["image_id"])
    answer = [([10.0, 12.0, 90.0, 80.0], {"echogenicity": "Isoechoic", "shape": "Round", "boundary": "Unclear"})]
    client.create_annotation(int(task["id"]), result_from_reading("liver", answer, (image.width, image.height)))
    pulled = pull_flow(PullParams(organ="liver"))
    assert pulled[0].pulled == 1
    adjudications = [r for r in catalog.reader_annotations(image.image_id) if r.adjudication]
    assert [(r.reader, r.attributes) for r in adjudications] == [("A1", answer[0][1])]
    assert adjudications[0].box == pytest.approx(answer[0][0], abs=0.5)


def test_reimport_and_repull_change_nothing(annotated):
    catalog = annotated["catalog"]
    before = (catalog.table_counts(), catalog.status()["stages"])
    assert sum(s.imported for s in annotate_flow(AnnotateParams())) == 0
    again = pull_flow(PullParams())
    assert sum(s.pulled for s in again) == 0 and sum(s.disputed for s in again) == 0
    assert sum(s.skipped for s in again) == 2 * IMAGES + 1  # both readers + the one adjudication
    assert (catalog.table_counts(), catalog.status()["stages"]) == before


def test_status_counts_annotate_and_pull(annotated):
    stages = annotated["catalog"].status()["stages"]
    assert stages["annotate"] == {"in": IMAGES, "out": IMAGES, "quarantined": {}}
    assert stages["pull"]["in"] == stages["pull"]["out"] == 2 * IMAGES + 1


def test_wrong_token_is_a_one_line_error_naming_the_setting(annotated, capsys):
    annotated["env"].setenv("LOOKCLOSER_LABEL_STUDIO_TOKEN", "0" * 40)
    try:
        assert main(["pull"]) == 2
    finally:
        annotated["env"].delenv("LOOKCLOSER_LABEL_STUDIO_TOKEN")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rejected the token" in err and "LOOKCLOSER_LABEL_STUDIO_TOKEN" in err
    assert "0" * 40 not in err


def test_client_rejects_a_bad_token_without_retrying(labelstudio_server):
    with pytest.raises(LabelStudioAuthError):
        LabelStudioClient(labelstudio_server.url, "f" * 40).whoami()


def test_server_down_during_pull_is_a_clear_error_and_the_next_pull_loses_nothing(
    annotated, labelstudio_server, capsys
):
    """Runs last in this module: it stops and restarts the session's server."""
    catalog = annotated["catalog"]
    before = (catalog.table_counts(), catalog.status()["stages"])
    labelstudio_server.stop()
    try:
        assert main(["pull"]) == 2  # after bounded retries with backoff
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "unreachable" in err and labelstudio_server.url in err
    finally:
        labelstudio_server.start()
    assert main(["pull"]) == 0
    assert "0 new readings" in capsys.readouterr().out
    assert (catalog.table_counts(), catalog.status()["stages"]) == before

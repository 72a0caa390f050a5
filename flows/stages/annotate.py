"""Annotate stage: push ingested images to the reader projects in Label Studio (Prefect flow).

Per organ: one project per reader and one for adjudication, a Local Files storage over the image
store (no copies, no uploads), and one bulk import of the images not yet in the project (looked up
by `image_id`, so a re-run imports nothing). Source-mask boxes become pre-annotations; attribute
choices are never pre-filled. The demo's simulated readers also live here: they post through the
API as the reader accounts, like people would.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prefect import flow, task

from annotation.access import admin_client, load_assignment, reader_client
from annotation.client import LabelStudioClient
from annotation.label_config import label_config, result_from_reading
from annotation.projects import READER_ROLES, ReaderAssignment, image_task, project_title
from annotation.readers import ReaderNoise, simulate_reading
from flows.catalog import Catalog, StageCounter, open_catalog
from flows.catalog.locks import stage_lock
from flows.ingest.sources.registry import preannotation_origins
from flows.runtime.settings import Settings, load_settings
from flows.stages.params import AnnotateParams
from schemas.records import Organ
from schemas.vocabulary import registered_organs

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class AnnotateSummary(StageCounter):
    """Every ingested image of the organ is out (in its reader projects); `imported`: tasks new this run."""

    stage: str = "annotate"
    organ: str
    imported: int = 0

    @property
    def images(self) -> int:
        return self.out


def _organs(organ: str | None) -> tuple[str, ...]:
    return (organ,) if organ else registered_organs()


def image_tasks(catalog: Catalog, organ: str, *, preannotate: bool, prefix: str) -> dict[str, dict]:
    """image_id → task for every ingested image of the organ."""
    tasks = {}
    origins = preannotation_origins()
    for image in catalog.iter_images(organ=organ):
        boxes = None
        if preannotate:
            annotations = catalog.source_annotations(image.image_id)
            boxes = [a.box for a in annotations if a.box is not None and a.origin in origins]
        tasks[image.image_id] = image_task(
            image_id=image.image_id,
            organ=organ,
            storage_key=f"{prefix}/{image.storage_key}",
            size=(image.width, image.height),
            boxes=boxes,
        )
    return tasks


def push_organ(
    client: LabelStudioClient, catalog: Catalog, settings: Settings, organ: str, *, preannotate: bool
) -> AnnotateSummary:
    """Create the organ's projects and import the images they do not hold yet."""
    tasks = image_tasks(catalog, organ, preannotate=preannotate, prefix=settings.label_studio_image_prefix)
    config = label_config(organ)
    imported = 0
    for role in (*READER_ROLES, "adjudication"):
        project_id = client.ensure_project(project_title(organ, role), config)
        client.ensure_local_storage(project_id, settings.resolved_image_store_url)
        if role == "adjudication":
            continue  # receives only disputed tasks, from the pull stage
        present = client.task_ids_by_image(project_id)
        missing = [task for image_id, task in tasks.items() if image_id not in present]
        imported += client.import_tasks(project_id, missing)
    summary = AnnotateSummary(organ=organ, imported=imported)
    for image_id in tasks:
        summary.count_out(image_id, record_key=image_id)
    summary.record(catalog)
    log.info("annotate %s: %d images, %d tasks imported", organ, summary.images, imported)
    return summary.check()


@task
def push_organ_task(organ: str, params: AnnotateParams) -> AnnotateSummary:
    settings = load_settings()
    with open_catalog(settings) as catalog:
        return push_organ(admin_client(settings), catalog, settings, organ, preannotate=params.preannotate)


@flow(name="annotate")
def annotate_flow(params: AnnotateParams | None = None) -> list[AnnotateSummary]:
    """Push ingested images to the reader projects of every organ."""
    params = params or AnnotateParams()
    with stage_lock(load_settings().resolved_catalog_url, "annotate"):
        return [push_organ_task(organ, params) for organ in _organs(params.organ)]


# ------------------------------------------------------------------------------------------ simulated readers
def simulate_organ(
    settings: Settings, catalog: Catalog, assignment: ReaderAssignment, organ: str, noise: ReaderNoise
) -> int:
    """Both readers annotate every unannotated task of their project from the phantom truth; returns posts."""
    posted = 0
    for seed, role in enumerate(READER_ROLES):
        account = assignment.reader_for(organ, role)
        client = reader_client(settings, account.email)
        project_id = client.ensure_project(project_title(organ, role), label_config(organ))
        for ls_task in client.export_tasks(project_id):
            if ls_task.get("annotations"):
                continue
            image = catalog.get_image(ls_task["data"]["image_id"])
            if image is None:
                continue
            difficulties = image.source_metadata.get("lesion_difficulty", [])
            truth = [
                (a.box, a.attributes, difficulties[k] if k < len(difficulties) else 0.5)
                for k, a in enumerate(catalog.source_annotations(image.image_id))
                if a.box is not None
            ]
            if not truth:
                continue
            size = (image.width, image.height)
            lesions = simulate_reading(truth, organ, size, reader_seed=seed, image_key=image.image_id, config=noise)
            client.create_annotation(int(ls_task["id"]), result_from_reading(organ, lesions, size), lead_time=1.0)
            posted += 1
    return posted


@flow(name="simulate-readers")
def simulate_readers_flow(organ: Organ | None = None) -> int:
    """Demo only: the simulated sonographers read every pushed phantom image."""
    settings = load_settings()
    with open_catalog(settings) as catalog:
        assignment = load_assignment(settings)
        return sum(simulate_organ(settings, catalog, assignment, o, ReaderNoise()) for o in _organs(organ))

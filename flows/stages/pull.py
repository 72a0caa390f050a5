"""Pull stage: finished readings from Label Studio into the catalog, disputes to adjudication (Prefect flow).

One export snapshot per reader project (not a call per task). Each exported annotation is keyed by
project, annotation id and update time: an unchanged annotation is skipped on the next pull, an
edited one is pulled again and replaces the reader's earlier lesions. Unusable annotations are
quarantined by reason. Tasks on which the two readers disagree go, once, to the organ's
adjudication project with both readings shown as predictions.

A reading the catalog holds from an annotation the export no longer has (deleted, emptied, or its
task deleted) is withdrawn: it leaves the active readings (consensus decides that image again) and
is kept in the catalog's audit trail. The ledger counts it out, keyed by the emptied annotation's
version or `project:annotation id:<reason>`, so a second pull finds nothing more to withdraw.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prefect import flow, task

from annotation.access import admin_client, load_assignment
from annotation.client import LabelStudioClient
from annotation.consensus import readers_disagree
from annotation.label_config import label_config, result_from_reading
from annotation.projects import READER_ROLES, ReaderAssignment, image_task, project_title
from annotation.readings import export_state, readings_from_export
from flows.catalog import Catalog, StageCounter, open_catalog
from flows.catalog.locks import stage_lock
from flows.catalog.readings import Withdrawal
from flows.runtime.retries import SERVICE_RETRIES
from flows.runtime.settings import load_settings
from flows.stages.params import PullParams
from schemas.records import ReaderAnnotation
from schemas.vocabulary import registered_organs

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class PullSummary(StageCounter):
    """Exported annotations: out = pulled + withdrawn, skipped = unchanged since the last pull; disputes routed.

    A withdrawn reading (its annotation deleted or emptied, its task deleted) is counted out: it settles as a
    withdrawal, never as a quarantine.
    """

    stage: str = "pull"
    organ: str
    disputed: int = 0
    withdrawn: int = 0

    @property
    def pulled(self) -> int:
        return self.out - self.withdrawn

    def count_withdrawn(self, item_key: str, *, record_key: str) -> None:
        """A reading the export no longer has left the active readings (`record_key`: its image)."""
        self.count_out(item_key, record_key=record_key)
        self.withdrawn += 1


def pull_reader_projects(
    client: LabelStudioClient, catalog: Catalog, assignment: ReaderAssignment, organ: str
) -> PullSummary:
    """Export both reader projects and the adjudication project; store new or changed annotations."""
    summary = PullSummary(organ=organ)
    settled = catalog.stage_item_keys("pull")
    emails = client.users()
    for role in (*READER_ROLES, "adjudication"):
        project_id = client.ensure_project(project_title(organ, role), label_config(organ))
        tasks = client.export_tasks(project_id)
        held = catalog.held_readings(project_id)  # annotation id → the active reading pulled from it
        readings: list[ReaderAnnotation] = []
        withdrawals: list[Withdrawal] = []
        pseudonym = lambda uid: assignment.pseudonym(emails.get(uid, ""))  # noqa: E731
        for pulled in readings_from_export(project_id, organ, tasks, pseudonym, adjudication=role == "adjudication"):
            if pulled.item_key in settled:
                summary.count_skipped()
            elif pulled.emptied and pulled.annotation_id in held:  # the reader emptied an annotation we hold
                withdrawals.append(Withdrawal(project_id, pulled.annotation_id, "annotation_emptied"))
                summary.count_withdrawn(pulled.item_key, record_key=held[pulled.annotation_id].image_id)
            elif pulled.reason:
                summary.count_quarantined(pulled.reason, pulled.item_key)
            else:
                summary.count_out(pulled.item_key, record_key=pulled.readings[0].image_id)
                readings.extend(pulled.readings)
        state = export_state(tasks)
        repulled = {(r.image_id, r.reader) for r in readings}  # another annotation of the reader replaces it
        withdrawn_now = {w.ls_annotation_id for w in withdrawals}
        for annotation_id, reading in sorted(held.items()):
            reason = state.withdrawal_reason(reading.ls_task_id, annotation_id)
            if reason is None or annotation_id in withdrawn_now or (reading.image_id, reading.reader) in repulled:
                continue
            withdrawals.append(Withdrawal(project_id, annotation_id, reason))
            summary.count_withdrawn(f"{project_id}:{annotation_id}:{reason}", record_key=reading.image_id)
        catalog.save_pulled(readings, summary.take_ledger(), withdrawals)
    return summary.check()


def route_disputes(
    client: LabelStudioClient,
    catalog: Catalog,
    assignment: ReaderAssignment,
    organ: str,
    *,
    min_box_iou: float,
    prefix: str,
) -> int:
    """Import each disputed image (once) into the adjudication project, both readings as predictions."""
    first, second = (assignment.reader_for(organ, role).pseudonym for role in READER_ROLES)
    project_id = client.ensure_project(project_title(organ, "adjudication"), label_config(organ))
    present = client.task_ids_by_image(project_id)
    tasks = []
    for image_id, by_reader in catalog.readings_by_image(organ).items():
        if image_id in present or first not in by_reader or second not in by_reader:
            continue
        if not readers_disagree({r: by_reader[r] for r in (first, second)}, min_box_iou=min_box_iou):
            continue
        image = catalog.get_image(image_id)
        if image is None:
            continue
        size = (image.width, image.height)
        key = f"{prefix}/{image.storage_key}"
        task = image_task(image_id=image_id, organ=organ, storage_key=key, size=size)
        task["predictions"] = [
            {
                "model_version": f"reader {reader}",
                "score": 0.5,
                "result": result_from_reading(organ, [(r.box, r.attributes) for r in by_reader[reader]], size),
            }
            for reader in (first, second)
        ]
        tasks.append(task)
    return client.import_tasks(project_id, tasks)


# the client retries single calls with backoff; a longer outage of Label Studio or the catalog fails the task,
# which runs again (settled annotations are skipped, disputes are imported once); a wrong token fails at once
@task(**SERVICE_RETRIES)
def pull_organ(organ: str, params: PullParams) -> PullSummary:
    settings = load_settings()
    with open_catalog(settings) as catalog:
        client, assignment = admin_client(settings), load_assignment(settings)
        summary = pull_reader_projects(client, catalog, assignment, organ)
        summary.disputed = route_disputes(
            client,
            catalog,
            assignment,
            organ,
            min_box_iou=params.min_box_iou,
            prefix=settings.label_studio_image_prefix,
        )
        log.info("pull %s: %s", organ, summary)
        return summary


@flow(name="pull")
def pull_flow(params: PullParams | None = None) -> list[PullSummary]:
    """Pull finished readings of every organ and route disagreements to adjudication."""
    params = params or PullParams()
    with stage_lock(load_settings().resolved_catalog_url, "pull"):
        return [pull_organ(organ, params) for organ in ((params.organ,) if params.organ else registered_organs())]

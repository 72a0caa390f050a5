"""Label Studio exports → `ReaderAnnotation`s, with every unusable annotation quarantined by reason.

The server accepts results that violate the label config and more annotations than asked for, so
nothing from an export is trusted: each annotation is checked against the organ's config, mapped
from its account to a configured pseudonym, and converted from percent to original pixels.

What an export no longer has is a withdrawal: `export_state(...).withdrawal_reason` says why a reading
pulled earlier is not in the export any more (annotation deleted, emptied or cancelled; task deleted).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from annotation.label_config import reading_from_result, validate_result
from schemas.records import ReaderAnnotation


@dataclass
class PulledAnnotation:
    """One exported annotation: the readings it gives, or why it is quarantined."""

    item_key: str  # project:annotation id:updated_at: a changed annotation is pulled again
    readings: list[ReaderAnnotation] = field(default_factory=list)
    reason: str | None = None
    annotation_id: int | None = None
    emptied: bool = False  # its result is empty: the reader took back what the annotation said


LIVE, EMPTIED, CANCELLED = "live", "emptied", "cancelled"


@dataclass(frozen=True)
class ExportState:
    """What one export holds: its task ids, and each annotation's state (live, emptied or cancelled)."""

    task_ids: frozenset[int]
    annotations: dict[int, str]

    def withdrawal_reason(self, task_id: int | None, annotation_id: int) -> str | None:
        """Why a reading pulled from this annotation (of this task) is withdrawn; None while it is live."""
        state = self.annotations.get(annotation_id)
        if state == LIVE:
            return None
        if state is not None:
            return f"annotation_{state}"
        return "annotation_deleted" if task_id in self.task_ids else "task_deleted"


def export_state(tasks: list[dict[str, Any]]) -> ExportState:
    """The tasks and annotations of an export, as far as withdrawals are concerned."""
    states = {}
    for task in tasks:
        for annotation in task.get("annotations", []):
            cancelled, empty = annotation.get("was_cancelled"), not annotation.get("result")
            states[int(annotation["id"])] = CANCELLED if cancelled else EMPTIED if empty else LIVE
    return ExportState(frozenset(int(t["id"]) for t in tasks), states)


def _image_size(result: list[dict[str, Any]]) -> tuple[int, int] | None:
    for region in result:
        if "original_width" in region and "original_height" in region:
            return int(region["original_width"]), int(region["original_height"])
    return None


def readings_from_export(
    project_id: int,
    organ: str,
    tasks: list[dict[str, Any]],
    pseudonym_of: Callable[[int], str | None],
    *,
    adjudication: bool = False,
) -> Iterator[PulledAnnotation]:
    """Every annotation of a reader (or adjudication) project's export, converted or quarantined.

    Such a project holds one reading per task: the reader's own, or the adjudicator's answer.
    """
    for task in tasks:
        annotations = sorted(
            (a for a in task.get("annotations", []) if not a.get("was_cancelled")), key=lambda a: int(a["id"])
        )
        for position, annotation in enumerate(annotations):
            key = f"{project_id}:{annotation['id']}:{annotation.get('updated_at', '')}"
            pulled = _convert(key, task, organ, annotation, position, pseudonym_of, adjudication, project_id)
            pulled.annotation_id, pulled.emptied = int(annotation["id"]), not annotation.get("result")
            yield pulled


def _convert(
    key: str,
    task: dict[str, Any],
    organ: str,
    annotation: dict[str, Any],
    position: int,
    pseudonym_of: Callable[[int], str | None],
    adjudication: bool,
    project_id: int,
) -> PulledAnnotation:
    if position > 0:  # a reader project holds one reading per task; a second one is not silently merged
        return PulledAnnotation(key, reason="extra_annotation")
    reader = pseudonym_of(int(annotation["completed_by"]))
    if reader is None:
        return PulledAnnotation(key, reason="unknown_reader")
    if (image_id := task.get("data", {}).get("image_id")) is None:
        return PulledAnnotation(key, reason="task_without_image_id")
    result = annotation.get("result") or []
    if reasons := validate_result(organ, result):
        return PulledAnnotation(key, reason=reasons[0])
    size = _image_size(result)
    if size is None:
        return PulledAnnotation(key, reason="no_lesion_box")
    try:
        readings = [
            ReaderAnnotation(
                image_id=image_id,
                organ=organ,
                reader=reader,
                adjudication=adjudication,
                lesion_index=lesion["lesion_index"],
                box=lesion["box"],
                attributes=lesion["attributes"],
                image_width=size[0],
                image_height=size[1],
                lead_time=annotation.get("lead_time"),
                ls_project_id=int(task.get("project") or project_id),
                ls_task_id=int(task["id"]),
                ls_annotation_id=int(annotation["id"]),
            )
            for lesion in reading_from_result(organ, result)
        ]
    except ValidationError:
        return PulledAnnotation(key, reason="invalid_reading")
    return PulledAnnotation(key, readings=readings)

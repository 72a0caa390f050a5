"""Readers' annotations pulled from Label Studio (the pull stage writes them, consensus reads them).

A reading its reader withdrew (the annotation deleted or emptied in Label Studio, or its task deleted)
leaves `reader_annotations`, which is all consensus ever reads, and is kept in `withdrawn_readings`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from flows.catalog.base import CatalogBase, LedgerItem, record
from flows.catalog.tables import (
    ReaderAnnotationRow,
    WithdrawnReadingRow,
)
from schemas.records import (
    ReaderAnnotation,
)


@dataclass(frozen=True)
class HeldReading:
    """Where an active reading came from in Label Studio: what the pull checks against each export."""

    image_id: str
    reader: str
    ls_task_id: int | None


@dataclass(frozen=True)
class Withdrawal:
    """The readings of one Label Studio annotation leave the active readings, for `reason`."""

    ls_project_id: int
    ls_annotation_id: int
    reason: str  # annotation_deleted, annotation_emptied, annotation_cancelled, task_deleted


class ReadingsRepository(CatalogBase):
    def save_pulled(
        self,
        readings: Iterable[ReaderAnnotation],
        ledger: Iterable[LedgerItem],
        withdrawals: Iterable[Withdrawal] = (),
    ) -> None:
        """Move withdrawn readings to the audit trail, replace each (image, reader)'s lesions with the pulled
        ones, and record the pull ledger, atomically."""
        now = datetime.now(UTC)
        rows = [r.model_dump(mode="json") for r in readings]
        with Session(self.engine) as session, session.begin():
            for withdrawal in withdrawals:
                self._withdraw(session, withdrawal, now)
            for image_id, reader in {(r["image_id"], r["reader"]) for r in rows}:
                session.execute(
                    delete(ReaderAnnotationRow).where(
                        ReaderAnnotationRow.image_id == image_id, ReaderAnnotationRow.reader == reader
                    )
                )
            self._upsert(session, ReaderAnnotationRow.__table__, rows, ["image_id", "reader", "lesion_index"])
            self._record_items(session, "pull", ledger, now)

    def _withdraw(self, session: Session, withdrawal: Withdrawal, now: datetime) -> None:
        match = (
            ReaderAnnotationRow.ls_project_id == withdrawal.ls_project_id,
            ReaderAnnotationRow.ls_annotation_id == withdrawal.ls_annotation_id,
        )
        columns = [c.name for c in ReaderAnnotationRow.__table__.columns if c.name != "id"]
        moved: list[dict[str, Any]] = [
            {name: getattr(row, name) for name in columns} | {"reason": withdrawal.reason, "withdrawn_at": now}
            for row in session.scalars(select(ReaderAnnotationRow).where(*match))
        ]
        session.add_all(WithdrawnReadingRow(**values) for values in moved)
        session.execute(delete(ReaderAnnotationRow).where(*match))

    def held_readings(self, ls_project_id: int) -> dict[int, HeldReading]:
        """Label Studio annotation id → the active reading pulled from it, for one project."""
        query = select(ReaderAnnotationRow.ls_annotation_id, ReaderAnnotationRow.image_id, ReaderAnnotationRow.reader)
        query = query.add_columns(ReaderAnnotationRow.ls_task_id).where(
            ReaderAnnotationRow.ls_project_id == ls_project_id, ReaderAnnotationRow.ls_annotation_id.is_not(None)
        )
        with Session(self.engine) as session:
            return {int(a): HeldReading(image_id, reader, task) for a, image_id, reader, task in session.execute(query)}

    def readings_by_image(self, organ: str) -> dict[str, dict[str, list[ReaderAnnotation]]]:
        """image id → reader pseudonym → that reader's lesions, for one organ (withdrawn readings are not here)."""
        query = select(ReaderAnnotationRow).where(ReaderAnnotationRow.organ == organ)
        result: dict[str, dict[str, list[ReaderAnnotation]]] = defaultdict(lambda: defaultdict(list))
        with Session(self.engine) as session:
            for row in session.scalars(query.order_by(ReaderAnnotationRow.image_id, ReaderAnnotationRow.lesion_index)):
                result[row.image_id][row.reader].append(reader_annotation(row))
        return {image_id: dict(readers) for image_id, readers in result.items()}

    def reader_annotations(self, image_id: str) -> list[ReaderAnnotation]:
        query = select(ReaderAnnotationRow).where(ReaderAnnotationRow.image_id == image_id)
        with Session(self.engine) as session:
            order = query.order_by(ReaderAnnotationRow.reader, ReaderAnnotationRow.lesion_index)
            return [reader_annotation(row) for row in session.scalars(order)]

    def withdrawn_readings(self, image_id: str | None = None) -> list[dict[str, Any]]:
        """The audit trail of withdrawn readings (of one image), oldest first: each lesion with reason and time."""
        query = select(WithdrawnReadingRow).order_by(WithdrawnReadingRow.id)
        if image_id is not None:
            query = query.where(WithdrawnReadingRow.image_id == image_id)
        with Session(self.engine) as session:
            return [
                {c.name: getattr(row, c.name) for c in WithdrawnReadingRow.__table__.columns}
                for row in session.scalars(query)
            ]


def reader_annotation(row: ReaderAnnotationRow) -> ReaderAnnotation:
    return record(ReaderAnnotation, row)

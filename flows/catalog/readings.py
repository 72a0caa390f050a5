"""Readers' annotations pulled from Label Studio (the pull stage writes them, consensus reads them)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from flows.catalog.base import CatalogBase, LedgerItem, record
from flows.catalog.tables import (
    ReaderAnnotationRow,
)
from schemas.records import (
    ReaderAnnotation,
)


class ReadingsRepository(CatalogBase):
    def save_pulled(self, readings: Iterable[ReaderAnnotation], ledger: Iterable[LedgerItem]) -> None:
        """Replace each (image, reader)'s lesions with the pulled ones, and record the pull ledger, atomically."""
        rows = [r.model_dump(mode="json") for r in readings]
        with Session(self.engine) as session, session.begin():
            for image_id, reader in {(r["image_id"], r["reader"]) for r in rows}:
                session.execute(
                    delete(ReaderAnnotationRow).where(
                        ReaderAnnotationRow.image_id == image_id, ReaderAnnotationRow.reader == reader
                    )
                )
            self._upsert(session, ReaderAnnotationRow.__table__, rows, ["image_id", "reader", "lesion_index"])
            self._record_items(session, "pull", ledger, datetime.now(UTC))

    def readings_by_image(self, organ: str) -> dict[str, dict[str, list[ReaderAnnotation]]]:
        """image id → reader pseudonym → that reader's lesions, for one organ."""
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


def reader_annotation(row: ReaderAnnotationRow) -> ReaderAnnotation:
    return record(ReaderAnnotation, row)

"""Images and their sources: de-identified image records, the sources they came from (hashed refs) and the
sources' own annotations (the ingest stage writes them)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from flows.catalog.base import UPSERT_BATCH, CatalogBase, LedgerItem, record
from flows.catalog.tables import (
    ImageRow,
    ImageSourceRow,
    ReaderAnnotationRow,
    SourceAnnotationRow,
)
from flows.ingest.splits import KnownImage
from schemas.records import (
    ImageRecord,
    ReaderAnnotation,
    RecordStatus,
    SourceAnnotation,
)


class ImagesRepository(CatalogBase):
    def save_ingested(
        self,
        images: Iterable[ImageRecord],
        annotations: Iterable[SourceAnnotation],
        ledger: Iterable[LedgerItem],
        *,
        sources: Iterable[tuple[str, str, str]] = (),
        readings: Iterable[ReaderAnnotation] = (),
    ) -> None:
        """Upsert images, their source refs `(source, ref_id, image_id)`, annotations, readings and the
        ingest ledger in one transaction: a batch is in the catalog entirely or not at all."""
        now = datetime.now(UTC)
        image_rows = [image.model_dump(mode="python") for image in images]
        for row in image_rows:
            row["status"] = str(row["status"])
        source_rows = [{"source": s, "ref_id": r, "image_id": i} for s, r, i in sources]
        annotation_rows = [a.model_dump(mode="json") for a in annotations]
        reading_rows = [r.model_dump(mode="json") for r in readings]
        with Session(self.engine) as session, session.begin():
            self._upsert(session, ImageRow.__table__, image_rows, ["image_id"], keep=("created_at", "split"))
            self._upsert(session, ImageSourceRow.__table__, source_rows, ["source", "ref_id"])
            self._upsert(
                session, SourceAnnotationRow.__table__, annotation_rows, ["image_id", "origin", "lesion_index"]
            )
            self._upsert(session, ReaderAnnotationRow.__table__, reading_rows, ["image_id", "reader", "lesion_index"])
            self._record_items(session, "ingest", ledger, now)

    def get_image(self, image_id: str) -> ImageRecord | None:
        with Session(self.engine) as session:
            row = session.get(ImageRow, image_id)
            return image_record(row) if row else None

    def iter_images(
        self, *, organ: str | None = None, status: RecordStatus | None = RecordStatus.ok
    ) -> Iterator[ImageRecord]:
        query = select(ImageRow).order_by(ImageRow.image_id)
        if organ:
            query = query.where(ImageRow.organ == organ)
        if status:
            query = query.where(ImageRow.status == str(status))
        with Session(self.engine) as session:
            for row in session.scalars(query.execution_options(yield_per=UPSERT_BATCH)):
                yield image_record(row)

    def known_images(self) -> Iterator[KnownImage]:
        """The facts split assignment needs about every ingested image, oldest first."""
        query = select(
            ImageRow.image_id, ImageRow.organ, ImageRow.patient_key, ImageRow.phash, ImageRow.split, ImageRow.dup_group
        ).order_by(ImageRow.created_at, ImageRow.image_id)
        with Session(self.engine) as session:
            for row in session.execute(query.execution_options(yield_per=5000)):
                yield KnownImage(*row)

    def image_refs(self, image_id: str) -> list[tuple[str, str]]:
        """Every `(source, ref_id)` that brought this image."""
        query = select(ImageSourceRow.source, ImageSourceRow.ref_id).where(ImageSourceRow.image_id == image_id)
        with Session(self.engine) as session:
            return sorted((source, ref) for source, ref in session.execute(query))

    def source_annotations(self, image_id: str) -> list[SourceAnnotation]:
        query = (
            select(SourceAnnotationRow)
            .where(SourceAnnotationRow.image_id == image_id)
            .order_by(SourceAnnotationRow.origin, SourceAnnotationRow.lesion_index)
        )
        with Session(self.engine) as session:
            return [record(SourceAnnotation, row) for row in session.scalars(query)]


def image_record(row: ImageRow) -> ImageRecord:
    return record(ImageRecord, row, source_metadata=row.source_metadata or {})  # NULL before revision 0003

"""The teacher's rationales, its reply cache and the diversity marks of the synthesis stage."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from flows.catalog.base import UPSERT_BATCH, CatalogBase, LedgerItem, record
from flows.catalog.tables import (
    DiversityMarkRow,
    RationaleRow,
    StageItemRow,
    TeacherCacheRow,
)
from schemas.records import (
    Rationale,
)


class TeacherRepository(CatalogBase):
    def save_synthesis(
        self,
        *,
        cache_rows: Iterable[dict[str, Any]] = (),
        rationales: Iterable[Rationale] = (),
        ledger: Iterable[LedgerItem] = (),
        forget: Iterable[str] = (),
    ) -> None:
        """One transaction: teacher replies into the cache, settled rationales and their ledger entries.

        `forget` names items whose earlier rationale no longer matches their record and could not be
        replaced this time (teacher unreachable): it must not be published.
        """
        now = datetime.now(UTC)
        with Session(self.engine) as session, session.begin():
            cache = [{**row, "created_at": now} for row in cache_rows]
            self._upsert(session, TeacherCacheRow.__table__, cache, ["cache_key"], keep=("created_at",))
            rows = [r.model_dump(mode="json") | {"created_at": r.created_at} for r in rationales]
            self._upsert(session, RationaleRow.__table__, rows, ["image_id", "attribute"])
            for key in forget:
                image_id, attribute = key.split(":", 1)
                session.execute(
                    delete(RationaleRow).where(RationaleRow.image_id == image_id, RationaleRow.attribute == attribute)
                )
            self._record_items(session, "synthesize", ledger, now)

    def cached_replies(self, item_keys: Iterable[str]) -> dict[str, list[str]]:
        """cache_key → replies for every cached teacher reply of these items."""
        keys, result = sorted(set(item_keys)), {}
        with Session(self.engine) as session:
            for start in range(0, len(keys), UPSERT_BATCH):
                query = select(TeacherCacheRow.cache_key, TeacherCacheRow.replies).where(
                    TeacherCacheRow.item_key.in_(keys[start : start + UPSERT_BATCH])
                )
                result.update({key: list(replies) for key, replies in session.execute(query)})
        return result

    def cache_index(self) -> list[dict[str, Any]]:
        """What the teacher cache holds, without the replies: item, seed, repair, generator."""
        query = select(
            TeacherCacheRow.item_key, TeacherCacheRow.seed, TeacherCacheRow.repair, TeacherCacheRow.generator
        )
        with Session(self.engine) as session:
            return [row._asdict() for row in session.execute(query)]

    def rationales(self, organ: str | None = None) -> list[Rationale]:
        query = select(RationaleRow).order_by(RationaleRow.image_id, RationaleRow.attribute)
        if organ:
            query = query.where(RationaleRow.organ == organ)
        with Session(self.engine) as session:
            return [record(Rationale, row) for row in session.scalars(query)]

    def forget_rationales(self, item_keys: Iterable[str]) -> None:
        """Drop the rationales (and their ledger entries) of records that no longer have a consensus."""
        keys = list(item_keys)
        with Session(self.engine) as session, session.begin():
            for key in keys:
                image_id, attribute = key.split(":", 1)
                session.execute(
                    delete(RationaleRow).where(RationaleRow.image_id == image_id, RationaleRow.attribute == attribute)
                )
                session.execute(
                    delete(StageItemRow).where(StageItemRow.stage == "synthesize", StageItemRow.item_key == key)
                )

    def diversity_marks(self) -> dict[str, str]:
        with Session(self.engine) as session:
            return dict(session.execute(select(DiversityMarkRow.group_key, DiversityMarkRow.digest)).all())

    def save_diversity_mark(self, group_key: str, digest: str) -> None:
        with Session(self.engine) as session, session.begin():
            row = {"group_key": group_key, "digest": digest, "checked_at": datetime.now(UTC)}
            self._upsert(session, DiversityMarkRow.__table__, [row], ["group_key"])

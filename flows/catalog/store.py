"""The catalog: records in, records out, and the stage ledger behind `lookcloser status`.

One repository per record type (images, readings, decisions, teacher, reviews: each its own module),
all behind `Catalog`, one instance per process. Writes are upserts keyed by each record's stable id, so a
re-run rewrites the same rows instead of adding new ones. The database URL may carry a password: it is only
ever shown masked. `with open_catalog(settings) as catalog:` opens one and always closes it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from flows.catalog.base import STAGES, CatalogBase, LedgerItem, Outcome, masked_url
from flows.catalog.decisions import DecisionsRepository
from flows.catalog.images import ImagesRepository
from flows.catalog.readings import ReadingsRepository
from flows.catalog.reviews import ReviewsRepository
from flows.catalog.tables import (
    Base,
    ConsensusRow,
    ImageRow,
    ReleaseRow,
    StageItemRow,
)
from flows.catalog.teacher import TeacherRepository

__all__ = ["STAGES", "Catalog", "Outcome", "masked_url", "open_catalog"]


class Catalog(
    ImagesRepository, ReadingsRepository, DecisionsRepository, TeacherRepository, ReviewsRepository, CatalogBase
):
    """All catalog reads and writes; one instance per process."""

    def save_release(
        self,
        *,
        name: str,
        version: str,
        rows: int,
        git_sha: str | None,
        path: str,
        ledger: Iterable[LedgerItem],
    ) -> None:
        """Record a release and what became of every record in it (the publish stage's ledger)."""
        now = datetime.now(UTC)
        with Session(self.engine) as session, session.begin():
            row = {"name": name, "version": version, "rows": rows, "git_sha": git_sha, "path": path, "created_at": now}
            self._upsert(session, ReleaseRow.__table__, [row], ["name", "version"], keep=("created_at",))
            session.execute(delete(StageItemRow).where(StageItemRow.stage == "publish"))
            self._record_items(session, "publish", ledger, now)

    def releases(self) -> list[str]:
        with Session(self.engine) as session:
            rows = session.scalars(select(ReleaseRow).order_by(ReleaseRow.created_at))
            return [f"{r.name}@{r.version}" for r in rows]

    def organ_counts(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = defaultdict(lambda: {"images": 0, "c1": 0, "c0": 0})
        with Session(self.engine) as session:
            images = session.execute(
                select(ImageRow.organ, func.count()).where(ImageRow.status == "ok").group_by(ImageRow.organ)
            )
            for organ, n in images:
                result[organ]["images"] = n
            consensus = session.execute(
                select(ConsensusRow.organ, ConsensusRow.confidence, func.count()).group_by(
                    ConsensusRow.organ, ConsensusRow.confidence
                )
            )
            for organ, c, n in consensus:
                result[organ][f"c{c}"] = n
        return dict(sorted(result.items()))

    def status(self) -> dict[str, Any]:
        """The `lookcloser status --json` object of DESIGN §9."""
        return {"stages": self.stage_counts(), "organs": self.organ_counts(), "releases": self.releases()}

    def table_counts(self) -> Counter[str]:
        with Session(self.engine) as session:
            return Counter(
                {
                    table.name: session.scalar(select(func.count()).select_from(table)) or 0
                    for table in Base.metadata.sorted_tables
                }
            )


class CatalogSettings(Protocol):
    """What opening the catalog needs from the settings (flows' `Settings` has it)."""

    @property
    def resolved_catalog_url(self) -> str: ...


@contextmanager
def open_catalog(settings: CatalogSettings, *, migrate: bool = True) -> Iterator[Catalog]:
    """`with open_catalog(settings) as catalog:` — the catalog of these settings, closed on the way out."""
    catalog = Catalog(settings.resolved_catalog_url, migrate=migrate)
    try:
        yield catalog
    finally:
        catalog.close()

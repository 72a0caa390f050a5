"""The catalog: records in, records out, and the stage ledger behind `lookcloser status`.

Writes are upserts keyed by each record's stable id, so a re-run rewrites the same rows instead of
adding new ones. The database URL may carry a password: it is only ever shown masked.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, Table, create_engine, delete, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from flows.catalog.tables import (
    Base,
    ConsensusDecisionRow,
    ConsensusRow,
    DiversityMarkRow,
    ImageRow,
    ImageSourceRow,
    RationaleReviewRow,
    RationaleRow,
    ReaderAnnotationRow,
    ReleaseRow,
    SourceAnnotationRow,
    StageItemRow,
    TeacherCacheRow,
)
from flows.ingest.splits import KnownImage
from schemas.records import (
    ConsensusRecord,
    ImageRecord,
    Rationale,
    ReaderAnnotation,
    Record,
    RecordStatus,
    SourceAnnotation,
)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
R = TypeVar("R", bound=Record)
STAGES = ("ingest", "annotate", "pull", "consensus", "synthesize", "publish")
UPSERT_BATCH = 500


class Outcome(StrEnum):
    out = "out"
    quarantined = "quarantined"


def masked_url(url: str) -> str:
    """The URL with any password replaced by ***, safe for logs and error messages."""
    return make_url(url).render_as_string(hide_password=True)


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return config


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (status) never block the writer
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Catalog:
    """All catalog reads and writes; one instance per process."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        if migrate:
            self.upgrade()

    def __repr__(self) -> str:
        return f"Catalog({masked_url(self.url)})"

    # ------------------------------------------------------------------ schema
    def revision(self) -> str | None:
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str:
        return ScriptDirectory.from_config(alembic_config(self.engine)).get_current_head() or ""

    def upgrade(self, revision: str = "head") -> None:
        """Bring the schema to `revision` in place (a no-op when it is already there)."""
        if revision == "head" and self.revision() == self.head_revision():
            return
        with self.engine.begin() as conn:
            config = alembic_config(self.engine)
            config.attributes["connection"] = conn
            command.upgrade(config, revision)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ writes
    def _upsert(
        self, session: Session, table: Table, rows: list[dict[str, Any]], keys: list[str], keep: tuple[str, ...] = ()
    ) -> None:
        """Insert, or update every column but `keys` and `keep` (e.g. the first-seen timestamp)."""
        if not rows:
            return
        insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        statement = insert(table)
        updates = {c: statement.excluded[c] for c in rows[0] if c not in keys and c not in keep}
        statement = statement.on_conflict_do_update(index_elements=keys, set_=updates)
        for start in range(0, len(rows), UPSERT_BATCH):
            # executemany of one compiled statement: far less Python per row than a multi-VALUES literal
            session.execute(statement, rows[start : start + UPSERT_BATCH])

    def save_ingested(
        self,
        images: Iterable[ImageRecord],
        annotations: Iterable[SourceAnnotation],
        ledger: Iterable[tuple[str, Outcome, str | None, str | None]],
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

    def save_pulled(
        self, readings: Iterable[ReaderAnnotation], ledger: Iterable[tuple[str, Outcome, str | None, str | None]]
    ) -> None:
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

    def consensus_hashes(self) -> dict[str, str]:
        """`image_id:attribute` → hash of the inputs its current consensus decision was taken from."""
        query = select(StageItemRow.item_key, StageItemRow.record_key).where(StageItemRow.stage == "consensus")
        with Session(self.engine) as session:
            return {key: digest or "" for key, digest in session.execute(query)}

    def save_consensus(
        self, decisions: Iterable[tuple[str, str, ConsensusRecord | None, str | None, str | None, str]]
    ) -> None:
        """Apply `(image_id, attribute, record, rule, reason, inputs_hash)` decisions atomically.

        A record is upserted; a quarantined decision removes an earlier record; every decision is
        appended to the audit trail and settles the ledger entry (keyed by its inputs hash).
        """
        now = datetime.now(UTC)
        decisions = list(decisions)
        with Session(self.engine) as session, session.begin():
            records = [record.model_dump(mode="json") for _, _, record, _, _, _ in decisions if record is not None]
            self._upsert(session, ConsensusRow.__table__, records, ["image_id", "attribute"])
            for image_id, attribute, record, _, _, _ in decisions:
                if record is None:
                    session.execute(
                        delete(ConsensusRow).where(
                            ConsensusRow.image_id == image_id, ConsensusRow.attribute == attribute
                        )
                    )
            session.add_all(
                ConsensusDecisionRow(
                    image_id=image_id,
                    attribute=attribute,
                    label=record.label if record else None,
                    confidence=record.confidence if record else None,
                    rule=rule,
                    reason=reason,
                    inputs_hash=digest,
                    decided_at=now,
                )
                for image_id, attribute, record, rule, reason, digest in decisions
            )
            ledger = [
                (
                    f"{image_id}:{attribute}",
                    Outcome.out if record else Outcome.quarantined,
                    reason if not record else None,
                    digest,
                )
                for image_id, attribute, record, rule, reason, digest in decisions
            ]
            self._record_items(session, "consensus", ledger, now)

    def consensus_records(self, organ: str | None = None) -> list[ConsensusRecord]:
        query = select(ConsensusRow).order_by(ConsensusRow.image_id, ConsensusRow.attribute)
        if organ:
            query = query.where(ConsensusRow.organ == organ)
        with Session(self.engine) as session:
            return [_record(ConsensusRecord, row) for row in session.scalars(query)]

    def decisions(self, image_id: str) -> list[dict[str, Any]]:
        """The audit trail of one image, oldest first."""
        query = select(ConsensusDecisionRow).where(ConsensusDecisionRow.image_id == image_id)
        with Session(self.engine) as session:
            return [
                {c.name: getattr(row, c.name) for c in ConsensusDecisionRow.__table__.columns}
                for row in session.scalars(query.order_by(ConsensusDecisionRow.id))
            ]

    # ------------------------------------------------------------------ teacher synthesis
    def save_synthesis(
        self,
        *,
        cache_rows: Iterable[dict[str, Any]] = (),
        rationales: Iterable[Rationale] = (),
        ledger: Iterable[tuple[str, Outcome, str | None, str | None]] = (),
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
            return [_record(Rationale, row) for row in session.scalars(query)]

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

    def reviews(self) -> list[dict[str, Any]]:
        """Every rationale sampled for expert review, with its verdict (None while pending)."""
        with Session(self.engine) as session:
            return [
                {c.name: getattr(row, c.name) for c in RationaleReviewRow.__table__.columns}
                for row in session.scalars(select(RationaleReviewRow).order_by(RationaleReviewRow.image_id))
            ]

    def save_review_tasks(self, rows: Iterable[dict[str, Any]]) -> None:
        """Rationales sent to review (`image_id, attribute, cache_key, organ, confidence, ls_*`), verdict pending.

        A regenerated rationale (new cache key) sent again starts a new review: the old verdict was not about it.
        """
        now = datetime.now(UTC)
        rows = [{**row, "sampled_at": now, "verdict": None, "reason": None, "reviewer": None} for row in rows]
        with Session(self.engine) as session, session.begin():
            self._upsert(session, RationaleReviewRow.__table__, rows, ["image_id", "attribute"])

    def save_review_verdicts(self, verdicts: Iterable[tuple[str, str, str, str | None, str | None]]) -> int:
        """Apply `(image_id:attribute, cache_key, verdict, reason, reviewer)`; a rejection quarantines the rationale.

        A verdict for a rationale that has since been regenerated (another cache key) is kept on the review
        row but does not touch the new rationale. Returns how many rationales were rejected now.
        """
        now, rejected = datetime.now(UTC), 0
        with Session(self.engine) as session, session.begin():
            for key, cache_key, verdict, reason, reviewer in verdicts:
                image_id, attribute = key.split(":", 1)
                review = session.get(RationaleReviewRow, (image_id, attribute))
                if review is None or review.cache_key != cache_key:
                    continue
                review.verdict, review.reason, review.reviewer, review.reviewed_at = verdict, reason, reviewer, now
                rationale = session.get(RationaleRow, (image_id, attribute))
                if verdict != "reject" or rationale is None or rationale.cache_key != cache_key or not rationale.valid:
                    continue
                rationale.valid = False
                rationale.validation_errors = ["expert_rejected", reason or "no_reason_given"]
                self._record_items(
                    session, "synthesize", [(key, Outcome.quarantined, "expert_rejected", rationale.base_key)], now
                )
                rejected += 1
        return rejected

    def save_release(
        self,
        *,
        name: str,
        version: str,
        rows: int,
        git_sha: str | None,
        path: str,
        ledger: Iterable[tuple[str, Outcome, str | None, str | None]],
    ) -> None:
        """Record a release and what became of every record in it (the publish stage's ledger)."""
        now = datetime.now(UTC)
        with Session(self.engine) as session, session.begin():
            row = {"name": name, "version": version, "rows": rows, "git_sha": git_sha, "path": path, "created_at": now}
            self._upsert(session, ReleaseRow.__table__, [row], ["name", "version"], keep=("created_at",))
            session.execute(delete(StageItemRow).where(StageItemRow.stage == "publish"))
            self._record_items(session, "publish", ledger, now)

    def diversity_marks(self) -> dict[str, str]:
        with Session(self.engine) as session:
            return dict(session.execute(select(DiversityMarkRow.group_key, DiversityMarkRow.digest)).all())

    def save_diversity_mark(self, group_key: str, digest: str) -> None:
        with Session(self.engine) as session, session.begin():
            row = {"group_key": group_key, "digest": digest, "checked_at": datetime.now(UTC)}
            self._upsert(session, DiversityMarkRow.__table__, [row], ["group_key"])

    def record_stage_items(self, stage: str, items: Iterable[tuple[str, Outcome, str | None, str | None]]) -> None:
        """Ledger rows `(item_key, outcome, reason, record_key)` for one stage."""
        with Session(self.engine) as session, session.begin():
            self._record_items(session, stage, items, datetime.now(UTC))

    def _record_items(
        self,
        session: Session,
        stage: str,
        items: Iterable[tuple[str, Outcome, str | None, str | None]],
        now: datetime,
    ) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        rows = []
        for item_key, outcome, reason, record_key in items:
            if (outcome == Outcome.quarantined) != (reason is not None):
                raise ValueError(f"{stage} item {item_key}: a reason is given exactly when quarantined")
            rows.append(
                {
                    "stage": stage,
                    "item_key": item_key,
                    "outcome": str(outcome),
                    "reason": reason,
                    "record_key": record_key,
                    "updated_at": now,
                }
            )
        self._upsert(session, StageItemRow.__table__, rows, ["stage", "item_key"])

    # ------------------------------------------------------------------ reads
    def get_image(self, image_id: str) -> ImageRecord | None:
        with Session(self.engine) as session:
            row = session.get(ImageRow, image_id)
            return _image_record(row) if row else None

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
                yield _image_record(row)

    def stage_item_keys(self, stage: str) -> set[str]:
        """Keys of the items a stage has already settled (out or quarantined)."""
        with Session(self.engine) as session:
            return set(session.scalars(select(StageItemRow.item_key).where(StageItemRow.stage == stage)))

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

    def readings_by_image(self, organ: str) -> dict[str, dict[str, list[ReaderAnnotation]]]:
        """image id → reader pseudonym → that reader's lesions, for one organ."""
        query = select(ReaderAnnotationRow).where(ReaderAnnotationRow.organ == organ)
        result: dict[str, dict[str, list[ReaderAnnotation]]] = defaultdict(lambda: defaultdict(list))
        with Session(self.engine) as session:
            for row in session.scalars(query.order_by(ReaderAnnotationRow.image_id, ReaderAnnotationRow.lesion_index)):
                result[row.image_id][row.reader].append(_reader_annotation(row))
        return {image_id: dict(readers) for image_id, readers in result.items()}

    def reader_annotations(self, image_id: str) -> list[ReaderAnnotation]:
        query = select(ReaderAnnotationRow).where(ReaderAnnotationRow.image_id == image_id)
        with Session(self.engine) as session:
            order = query.order_by(ReaderAnnotationRow.reader, ReaderAnnotationRow.lesion_index)
            return [_reader_annotation(row) for row in session.scalars(order)]

    def source_annotations(self, image_id: str) -> list[SourceAnnotation]:
        query = (
            select(SourceAnnotationRow)
            .where(SourceAnnotationRow.image_id == image_id)
            .order_by(SourceAnnotationRow.origin, SourceAnnotationRow.lesion_index)
        )
        with Session(self.engine) as session:
            return [_record(SourceAnnotation, row) for row in session.scalars(query)]

    def stage_counts(self) -> dict[str, dict[str, Any]]:
        """Per stage: {"in", "out", "quarantined": {reason: n}} from the ledger."""
        counts: dict[str, dict[str, Any]] = {s: {"in": 0, "out": 0, "quarantined": {}} for s in STAGES}
        query = select(StageItemRow.stage, StageItemRow.outcome, StageItemRow.reason, func.count()).group_by(
            StageItemRow.stage, StageItemRow.outcome, StageItemRow.reason
        )
        with Session(self.engine) as session:
            for stage, outcome, reason, n in session.execute(query):
                entry = counts.setdefault(stage, {"in": 0, "out": 0, "quarantined": {}})
                entry["in"] += n
                if outcome == Outcome.out:
                    entry["out"] += n
                else:
                    entry["quarantined"][reason] = entry["quarantined"].get(reason, 0) + n
            latest = session.scalars(select(ReleaseRow).order_by(ReleaseRow.created_at.desc())).first()
        if latest is not None:
            counts["publish"]["out"] = latest.rows
        return counts

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

    def releases(self) -> list[str]:
        with Session(self.engine) as session:
            rows = session.scalars(select(ReleaseRow).order_by(ReleaseRow.created_at))
            return [f"{r.name}@{r.version}" for r in rows]

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


def _record(model: type[R], row: Base, **overrides: Any) -> R:
    """The pydantic record of a catalog row: the same field names, minus the surrogate key."""
    values = {column.name: getattr(row, column.name) for column in row.__table__.columns if column.name != "id"}
    return model.model_validate({**values, **overrides})


def _reader_annotation(row: ReaderAnnotationRow) -> ReaderAnnotation:
    return _record(ReaderAnnotation, row)


def _image_record(row: ImageRow) -> ImageRecord:
    return _record(ImageRecord, row, source_metadata=row.source_metadata or {})  # NULL before revision 0003

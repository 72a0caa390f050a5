"""The catalog's connection, schema migrations, upserts and the stage ledger's table (`in = out + quarantined`
per stage, each quarantined item with its reason; the ledger's rules live in `ledger.py`): what every
repository of the catalog builds on."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import DateTime, Engine, String, Table, Text, create_engine, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Mapped, Session, mapped_column

from flows.catalog.ledger import STAGES, LedgerItem, Outcome, ledger_rows
from flows.catalog.tables import Base, ReleaseRow, StageItemRow
from schemas.environment import ENV_PREFIX
from schemas.records import Record

__all__ = [
    "STAGES",
    "UPSERT_BATCH",
    "CatalogBase",
    "CatalogSettingRow",
    "LedgerItem",
    "Outcome",
    "SaltMismatchError",
    "masked_url",
    "record",
]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
UPSERT_BATCH = 500


class SaltMismatchError(Exception):
    """The catalog was keyed with another patient-key salt than the one given now (one-line message)."""


class CatalogSettingRow(Base):
    """Facts about the catalog itself, one value per key (e.g. `salt_fingerprint`); never a secret."""

    __tablename__ = "catalog_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


SALT_FINGERPRINT_KEY = "salt_fingerprint"


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


class CatalogBase:
    """The connection and what every repository shares; `Catalog` (store.py) is the whole catalog."""

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

    def bind_salt_fingerprint(self, fingerprint: str) -> None:
        """Tie the catalog to a patient-key salt: store its fingerprint the first time, and raise
        SaltMismatchError when a later run brings another one (its patient keys would not match the catalog's).
        Concurrent first binds are safe: the first stored fingerprint wins and the others are checked against it."""
        if not fingerprint:
            raise ValueError("an empty salt fingerprint")
        insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        row = {"key": SALT_FINGERPRINT_KEY, "value": fingerprint, "created_at": datetime.now(UTC)}
        with Session(self.engine) as session, session.begin():
            session.execute(insert(CatalogSettingRow).values(row).on_conflict_do_nothing(index_elements=["key"]))
            stored = session.scalar(
                select(CatalogSettingRow.value).where(CatalogSettingRow.key == SALT_FINGERPRINT_KEY)
            )
        if stored != fingerprint:
            raise SaltMismatchError(
                f"the catalog {masked_url(self.url)} was keyed with another patient-key salt (fingerprint {stored}, "
                f"this salt's is {fingerprint}): set {ENV_PREFIX}PATIENT_KEY_SALT to the salt it was keyed with, or "
                "restore the workspace's salt file patient_key_salt.secret (formerly .patient_key_salt) from a backup"
            )

    def bound_salt_fingerprint(self) -> str | None:
        """The fingerprint of the patient-key salt the catalog is keyed with; None before the first bind."""
        with Session(self.engine) as session:
            return session.scalar(select(CatalogSettingRow.value).where(CatalogSettingRow.key == SALT_FINGERPRINT_KEY))

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

    def record_stage_items(self, stage: str, items: Iterable[LedgerItem]) -> None:
        """Ledger rows `(item_key, outcome, reason, record_key)` for one stage."""
        with Session(self.engine) as session, session.begin():
            self._record_items(session, stage, items, datetime.now(UTC))

    def _record_items(self, session: Session, stage: str, items: Iterable[LedgerItem], now: datetime) -> None:
        self._upsert(session, StageItemRow.__table__, ledger_rows(stage, items, now), ["stage", "item_key"])

    def stage_item_keys(self, stage: str) -> set[str]:
        """Keys of the items a stage has already settled (out or quarantined)."""
        with Session(self.engine) as session:
            return set(session.scalars(select(StageItemRow.item_key).where(StageItemRow.stage == stage)))

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


R = TypeVar("R", bound=Record)


def record(model: type[R], row: Base, **overrides: Any) -> R:
    """The pydantic record of a catalog row: the same field names, minus the surrogate key."""
    values = {column.name: getattr(row, column.name) for column in row.__table__.columns if column.name != "id"}
    return model.model_validate({**values, **overrides})

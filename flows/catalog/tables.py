"""SQLAlchemy 2 tables of the catalog; one per record type plus the stage ledger and releases.

The same models run on SQLite (embedded default) and PostgreSQL (URL setting). Schema changes go
through Alembic revisions in `migrations/versions`; a test checks the two never drift apart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ID_LENGTH = 64


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {dict[str, Any]: JSON, list[Any]: JSON}


class ImageRow(Base):
    __tablename__ = "images"

    image_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    organ: Mapped[str] = mapped_column(String(16), index=True)
    source: Mapped[str] = mapped_column(String(64))
    source_ref: Mapped[str] = mapped_column(Text)
    patient_key: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    phash: Mapped[str] = mapped_column(String(16))
    split: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    quarantine_reason: Mapped[str | None] = mapped_column(String(128))
    storage_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    dup_group: Mapped[str | None] = mapped_column(String(ID_LENGTH), index=True)
    source_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    deidentification: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ImageSourceRow(Base):
    """Every source item that brought an image: exact duplicates become one image with several refs."""

    __tablename__ = "image_sources"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    ref_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.image_id"), index=True)


class SourceAnnotationRow(Base):
    __tablename__ = "source_annotations"
    __table_args__ = (UniqueConstraint("image_id", "origin", "lesion_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.image_id"), index=True)
    organ: Mapped[str] = mapped_column(String(16))
    origin: Mapped[str] = mapped_column(String(32))
    lesion_index: Mapped[int] = mapped_column(Integer)
    box: Mapped[list[Any] | None] = mapped_column(JSON)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON)
    confidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    image_width: Mapped[int] = mapped_column(Integer)
    image_height: Mapped[int] = mapped_column(Integer)


class ReaderAnnotationRow(Base):
    __tablename__ = "reader_annotations"
    __table_args__ = (UniqueConstraint("image_id", "reader", "lesion_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.image_id"), index=True)
    organ: Mapped[str] = mapped_column(String(16))
    reader: Mapped[str] = mapped_column(String(64))
    adjudication: Mapped[bool] = mapped_column(Boolean, server_default=false())
    lesion_index: Mapped[int] = mapped_column(Integer)
    box: Mapped[list[Any] | None] = mapped_column(JSON)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON)
    image_width: Mapped[int] = mapped_column(Integer)
    image_height: Mapped[int] = mapped_column(Integer)
    lead_time: Mapped[float | None] = mapped_column(Float)
    ls_project_id: Mapped[int | None] = mapped_column(Integer)
    ls_task_id: Mapped[int | None] = mapped_column(Integer)
    ls_annotation_id: Mapped[int | None] = mapped_column(Integer)


class WithdrawnReadingRow(Base):
    """A reading its reader withdrew (annotation deleted or emptied, task deleted): out of the readings, kept here."""

    __tablename__ = "withdrawn_readings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    image_id: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)
    organ: Mapped[str] = mapped_column(String(16))
    reader: Mapped[str] = mapped_column(String(64))
    adjudication: Mapped[bool] = mapped_column(Boolean)
    lesion_index: Mapped[int] = mapped_column(Integer)
    box: Mapped[list[Any] | None] = mapped_column(JSON)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON)
    image_width: Mapped[int] = mapped_column(Integer)
    image_height: Mapped[int] = mapped_column(Integer)
    lead_time: Mapped[float | None] = mapped_column(Float)
    ls_project_id: Mapped[int | None] = mapped_column(Integer)
    ls_task_id: Mapped[int | None] = mapped_column(Integer)
    ls_annotation_id: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(32))  # annotation_deleted, annotation_emptied, task_deleted...
    withdrawn_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ConsensusRow(Base):
    __tablename__ = "consensus"

    image_id: Mapped[str] = mapped_column(ForeignKey("images.image_id"), primary_key=True)
    attribute: Mapped[str] = mapped_column(String(64), primary_key=True)
    organ: Mapped[str] = mapped_column(String(16), index=True)
    label: Mapped[str] = mapped_column(String(128))
    confidence: Mapped[int] = mapped_column(Integer)
    agreement: Mapped[float] = mapped_column(Float)
    reader_labels: Mapped[dict[str, Any]] = mapped_column(JSON)
    box: Mapped[list[Any]] = mapped_column(JSON)
    box_iou: Mapped[float | None] = mapped_column(Float)
    confidence_source: Mapped[str] = mapped_column(String(16))
    needs_review: Mapped[bool] = mapped_column(Boolean)
    image_width: Mapped[int] = mapped_column(Integer)
    image_height: Mapped[int] = mapped_column(Integer)


class ConsensusDecisionRow(Base):
    """Every consensus decision ever taken (audit trail): which rule, from which inputs, when."""

    __tablename__ = "consensus_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    image_id: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)
    attribute: Mapped[str] = mapped_column(String(64))
    label: Mapped[str | None] = mapped_column(String(128))
    confidence: Mapped[int | None] = mapped_column(Integer)
    rule: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(128))
    inputs_hash: Mapped[str] = mapped_column(String(64))
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RationaleRow(Base):
    """The teacher's prose for one consensus record, with what it was generated from and by."""

    __tablename__ = "rationales"

    image_id: Mapped[str] = mapped_column(ForeignKey("images.image_id"), primary_key=True)
    attribute: Mapped[str] = mapped_column(String(64), primary_key=True)
    organ: Mapped[str] = mapped_column(String(16), index=True)
    question: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(String(128))
    confidence: Mapped[int] = mapped_column(Integer)
    bbox_2d: Mapped[list[Any]] = mapped_column(JSON)
    box: Mapped[list[Any]] = mapped_column(JSON)
    search: Mapped[str] = mapped_column(Text)
    diagnosis: Mapped[str] = mapped_column(Text)
    generator: Mapped[str] = mapped_column(String(256))
    backend: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(256))
    prompt_version: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(Integer)
    regenerations: Mapped[int] = mapped_column(Integer)
    base_key: Mapped[str] = mapped_column(String(64))
    cache_key: Mapped[str] = mapped_column(String(128))
    valid: Mapped[bool] = mapped_column(Boolean)
    validation_errors: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TeacherCacheRow(Base):
    """Every teacher reply ever received, keyed by what determines it: a re-run asks for none of them again."""

    __tablename__ = "teacher_cache"

    cache_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    item_key: Mapped[str] = mapped_column(String(256), index=True)
    generator: Mapped[str] = mapped_column(String(256))
    seed: Mapped[int] = mapped_column(Integer)
    repair: Mapped[bool] = mapped_column(Boolean)
    replies: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DiversityMarkRow(Base):
    """A (organ, attribute) group whose rationales were last found free of near-duplicates, by content digest."""

    __tablename__ = "diversity_marks"

    group_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RationaleReviewRow(Base):
    """A rationale sampled for expert review, and the sonographer's verdict once given."""

    __tablename__ = "rationale_reviews"

    image_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    attribute: Mapped[str] = mapped_column(String(64), primary_key=True)
    cache_key: Mapped[str] = mapped_column(String(128))
    organ: Mapped[str] = mapped_column(String(16))
    confidence: Mapped[int] = mapped_column(Integer)
    ls_project_id: Mapped[int | None] = mapped_column(Integer)
    ls_task_id: Mapped[int | None] = mapped_column(Integer)
    verdict: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    reviewer: Mapped[str | None] = mapped_column(String(64))
    sampled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StageItemRow(Base):
    """One row per item a stage has seen: where it went (out or quarantined, and why)."""

    __tablename__ = "stage_items"

    stage: Mapped[str] = mapped_column(String(32), primary_key=True)
    item_key: Mapped[str] = mapped_column(String(256), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(128))
    record_key: Mapped[str | None] = mapped_column(String(256))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ReleaseRow(Base):
    __tablename__ = "releases"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(32), primary_key=True)
    rows: Mapped[int] = mapped_column(Integer)
    git_sha: Mapped[str | None] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


RECORD_TABLES = ("images", "image_sources", "source_annotations", "reader_annotations", "consensus", "rationales")
LEDGER_TABLES = ("stage_items", "releases", "teacher_cache", "diversity_marks", "rationale_reviews")

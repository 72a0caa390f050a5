"""The record tables: images, source and reader annotations, consensus, rationales.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("image_id", sa.String(64), primary_key=True),
        sa.Column("organ", sa.String(16), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("source_ref", sa.Text(), nullable=False),
        sa.Column("patient_key", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("phash", sa.String(16), nullable=False),
        sa.Column("split", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("quarantine_reason", sa.String(128), nullable=True),
        sa.Column("storage_key", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_images_organ", "images", ["organ"])
    op.create_index("ix_images_patient_key", "images", ["patient_key"])
    for table in ("source_annotations", "reader_annotations"):
        who = (
            [sa.Column("origin", sa.String(32), nullable=False)]
            if table == "source_annotations"
            else [sa.Column("reader", sa.String(64), nullable=False)]
        )
        extra = (
            [sa.Column("confidence", sa.JSON(), nullable=False)]
            if table == "source_annotations"
            else [
                sa.Column("lead_time", sa.Float(), nullable=True),
                sa.Column("ls_project_id", sa.Integer(), nullable=True),
                sa.Column("ls_task_id", sa.Integer(), nullable=True),
                sa.Column("ls_annotation_id", sa.Integer(), nullable=True),
            ]
        )
        op.create_table(
            table,
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("image_id", sa.String(64), sa.ForeignKey("images.image_id"), nullable=False),
            sa.Column("organ", sa.String(16), nullable=False),
            *who,
            sa.Column("lesion_index", sa.Integer(), nullable=False),
            sa.Column("box", sa.JSON(), nullable=True),
            sa.Column("attributes", sa.JSON(), nullable=False),
            *extra,
            sa.Column("image_width", sa.Integer(), nullable=False),
            sa.Column("image_height", sa.Integer(), nullable=False),
            sa.UniqueConstraint("image_id", who[0].name, "lesion_index"),
        )
        op.create_index(f"ix_{table}_image_id", table, ["image_id"])
    op.create_table(
        "consensus",
        sa.Column("image_id", sa.String(64), sa.ForeignKey("images.image_id"), primary_key=True),
        sa.Column("attribute", sa.String(64), primary_key=True),
        sa.Column("organ", sa.String(16), nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("confidence", sa.Integer(), nullable=False),
        sa.Column("agreement", sa.Float(), nullable=False),
        sa.Column("reader_labels", sa.JSON(), nullable=False),
        sa.Column("box", sa.JSON(), nullable=False),
        sa.Column("box_iou", sa.Float(), nullable=True),
        sa.Column("confidence_source", sa.String(16), nullable=False),
        sa.Column("needs_review", sa.Boolean(), nullable=False),
        sa.Column("image_width", sa.Integer(), nullable=False),
        sa.Column("image_height", sa.Integer(), nullable=False),
    )
    op.create_index("ix_consensus_organ", "consensus", ["organ"])
    op.create_table(
        "rationales",
        sa.Column("image_id", sa.String(64), sa.ForeignKey("images.image_id"), primary_key=True),
        sa.Column("attribute", sa.String(64), primary_key=True),
        sa.Column("search", sa.Text(), nullable=False),
        sa.Column("diagnosis", sa.Text(), nullable=False),
        sa.Column("generator", sa.String(256), nullable=False),
        sa.Column("cache_key", sa.String(128), nullable=False),
        sa.Column("valid", sa.Boolean(), nullable=False),
        sa.Column("validation_errors", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    for table in ("rationales", "consensus", "reader_annotations", "source_annotations", "images"):
        op.drop_table(table)

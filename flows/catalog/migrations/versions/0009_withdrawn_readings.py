"""Audit trail of withdrawn readings: a reader's annotation deleted or emptied in Label Studio (or its task deleted).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "withdrawn_readings",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("image_id", sa.String(64), nullable=False),
        sa.Column("organ", sa.String(16), nullable=False),
        sa.Column("reader", sa.String(64), nullable=False),
        sa.Column("adjudication", sa.Boolean(), nullable=False),
        sa.Column("lesion_index", sa.Integer(), nullable=False),
        sa.Column("box", sa.JSON(), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("image_width", sa.Integer(), nullable=False),
        sa.Column("image_height", sa.Integer(), nullable=False),
        sa.Column("lead_time", sa.Float(), nullable=True),
        sa.Column("ls_project_id", sa.Integer(), nullable=True),
        sa.Column("ls_task_id", sa.Integer(), nullable=True),
        sa.Column("ls_annotation_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_withdrawn_readings_image_id", "withdrawn_readings", ["image_id"])


def downgrade() -> None:
    op.drop_table("withdrawn_readings")

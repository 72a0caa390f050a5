"""Teacher synthesis: full rationale rows, the durable reply cache, diversity marks, expert reviews.

The `rationales` table of 0001 was never written by any stage, so it is recreated with the columns
the synthesis stage needs.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("rationales")
    op.create_table(
        "rationales",
        sa.Column("image_id", sa.String(64), sa.ForeignKey("images.image_id"), primary_key=True),
        sa.Column("attribute", sa.String(64), primary_key=True),
        sa.Column("organ", sa.String(16), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("confidence", sa.Integer(), nullable=False),
        sa.Column("bbox_2d", sa.JSON(), nullable=False),
        sa.Column("box", sa.JSON(), nullable=False),
        sa.Column("search", sa.Text(), nullable=False),
        sa.Column("diagnosis", sa.Text(), nullable=False),
        sa.Column("generator", sa.String(256), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("prompt_version", sa.String(64), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("regenerations", sa.Integer(), nullable=False),
        sa.Column("base_key", sa.String(64), nullable=False),
        sa.Column("cache_key", sa.String(128), nullable=False),
        sa.Column("valid", sa.Boolean(), nullable=False),
        sa.Column("validation_errors", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_rationales_organ", "rationales", ["organ"])
    op.create_table(
        "teacher_cache",
        sa.Column("cache_key", sa.String(64), primary_key=True),
        sa.Column("item_key", sa.String(256), nullable=False),
        sa.Column("generator", sa.String(256), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("repair", sa.Boolean(), nullable=False),
        sa.Column("replies", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_teacher_cache_item_key", "teacher_cache", ["item_key"])
    op.create_table(
        "diversity_marks",
        sa.Column("group_key", sa.String(128), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "rationale_reviews",
        sa.Column("image_id", sa.String(64), primary_key=True),
        sa.Column("attribute", sa.String(64), primary_key=True),
        sa.Column("cache_key", sa.String(128), nullable=False),
        sa.Column("organ", sa.String(16), nullable=False),
        sa.Column("confidence", sa.Integer(), nullable=False),
        sa.Column("ls_project_id", sa.Integer(), nullable=True),
        sa.Column("ls_task_id", sa.Integer(), nullable=True),
        sa.Column("verdict", sa.String(16), nullable=True),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("reviewer", sa.String(64), nullable=True),
        sa.Column("sampled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("rationale_reviews")
    op.drop_table("diversity_marks")
    op.drop_index("ix_teacher_cache_item_key", "teacher_cache")
    op.drop_table("teacher_cache")
    op.drop_index("ix_rationales_organ", "rationales")
    op.drop_table("rationales")
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

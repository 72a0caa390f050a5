"""Audit trail of consensus decisions.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consensus_decisions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("image_id", sa.String(64), nullable=False),
        sa.Column("attribute", sa.String(64), nullable=False),
        sa.Column("label", sa.String(128), nullable=True),
        sa.Column("confidence", sa.Integer(), nullable=True),
        sa.Column("rule", sa.String(64), nullable=True),
        sa.Column("reason", sa.String(128), nullable=True),
        sa.Column("inputs_hash", sa.String(64), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_consensus_decisions_image_id", "consensus_decisions", ["image_id"])


def downgrade() -> None:
    op.drop_table("consensus_decisions")

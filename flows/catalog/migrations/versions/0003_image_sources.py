"""Near-duplicate groups, allow-listed source metadata, and every source ref of an image.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("dup_group", sa.String(64), nullable=True))
        batch.add_column(sa.Column("source_metadata", sa.JSON(), nullable=True))
        batch.create_index("ix_images_dup_group", ["dup_group"])
    op.create_table(
        "image_sources",
        sa.Column("source", sa.String(64), primary_key=True),
        sa.Column("ref_id", sa.String(64), primary_key=True),
        sa.Column("image_id", sa.String(64), sa.ForeignKey("images.image_id"), nullable=False),
    )
    op.create_index("ix_image_sources_image_id", "image_sources", ["image_id"])
    # images ingested before this revision were each their own group, found by their own source ref
    op.execute("UPDATE images SET dup_group = image_id WHERE dup_group IS NULL")
    op.execute("INSERT INTO image_sources (source, ref_id, image_id) SELECT source, source_ref, image_id FROM images")


def downgrade() -> None:
    op.drop_table("image_sources")
    with op.batch_alter_table("images") as batch:
        batch.drop_index("ix_images_dup_group")
        batch.drop_column("source_metadata")
        batch.drop_column("dup_group")

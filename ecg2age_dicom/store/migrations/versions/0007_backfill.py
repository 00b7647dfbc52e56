"""Backfill: the studies of each source already listed, and each ECG instance found there with
its state (pending, retrieved, scored, refused, already done), so that a stopped or killed
backfill resumes without querying, retrieving or scoring anything twice.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

STATES = ("pending", "retrieved", "scored", "refused", "already_done")


def upgrade() -> None:
    op.create_table(
        "backfill_studies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("study_date", sa.String(8), nullable=False),
        sa.Column("queried_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("source", "study_instance_uid"),
    )
    op.create_table(
        "backfill_items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("series_instance_uid", sa.String(64), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("study_date", sa.String(8), nullable=False),
        sa.Column(
            "state",
            sa.Enum(*STATES, name="backfill_state", native_enum=False, length=20),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("found_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retrieved_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("source", "sop_instance_uid"),
    )
    op.create_index("ix_backfill_items_sop_instance_uid", "backfill_items", ["sop_instance_uid"])
    op.create_index("ix_backfill_items_state", "backfill_items", ["state"])


def downgrade() -> None:
    op.drop_table("backfill_items")
    op.drop_table("backfill_studies")

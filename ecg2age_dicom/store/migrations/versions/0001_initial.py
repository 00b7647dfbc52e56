"""Initial schema: received instances, predictions, reports, deliveries.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UID = sa.String(64)
TIMESTAMP = sa.DateTime(timezone=True)


def _status(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, length=20)


def upgrade() -> None:
    op.create_table(
        "received_instances",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sop_instance_uid", UID, nullable=False, unique=True),
        sa.Column("study_instance_uid", UID, nullable=False),
        sa.Column("series_instance_uid", UID, nullable=False),
        sa.Column("sop_class_uid", UID, nullable=False),
        sa.Column("calling_ae_title", sa.String(16), nullable=False),
        sa.Column("peer_address", sa.String(64), nullable=False),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.Column("spool_path", sa.Text, nullable=False),
        sa.Column(
            "status",
            _status("instance_status", "received", "processing", "predicted", "failed"),
            nullable=False,
        ),
        sa.Column("error", sa.Text),
        sa.Column("claimed_by", sa.String(128)),
        sa.Column("claimed_at", TIMESTAMP),
    )
    op.create_index("ix_received_instances_status", "received_instances", ["status"])
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "instance_id", sa.Integer, sa.ForeignKey("received_instances.id"), nullable=False
        ),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("predicted_age_years", sa.Float, nullable=False),
        sa.Column("chronological_age_years", sa.Float),
        sa.Column("age_gap_years", sa.Float),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.UniqueConstraint("instance_id", "model_name", "model_version"),
    )
    op.create_index("ix_predictions_instance_id", "predictions", ["instance_id"])
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "prediction_id",
            sa.Integer,
            sa.ForeignKey("predictions.id"),
            nullable=False,
            unique=True,
        ),
        sa.Column("sr_sop_instance_uid", UID, nullable=False, unique=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("report_id", sa.Integer, sa.ForeignKey("reports.id"), nullable=False),
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column(
            "status",
            _status("delivery_status", "pending", "sending", "delivered", "delivery_failed"),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", TIMESTAMP),
        sa.Column("last_error", sa.Text),
        sa.Column("delivered_at", TIMESTAMP),
        sa.Column("claimed_at", TIMESTAMP),
        sa.UniqueConstraint("report_id", "destination"),
    )
    op.create_index("ix_deliveries_report_id", "deliveries", ["report_id"])
    op.create_index("ix_deliveries_status", "deliveries", ["status"])


def downgrade() -> None:
    op.drop_table("deliveries")
    op.drop_table("reports")
    op.drop_table("predictions")
    op.drop_table("received_instances")

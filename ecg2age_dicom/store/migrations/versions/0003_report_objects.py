"""One report row per object (an SR, a PDF...) of a prediction, each with its deliveries.

``reports.kind`` ("sr" for every existing row), ``sr_sop_instance_uid`` renamed
``sop_instance_uid``, and one report of each kind per prediction instead of one report.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UID = sa.String(64)
# SQLite reflects the unnamed UNIQUE of 0001 without a name: batch mode names it by this.
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _prediction_unique() -> str:
    """The name of 0001's UNIQUE (prediction_id): PostgreSQL's default, or NAMING's."""
    postgres = op.get_context().dialect.name == "postgresql"
    return "reports_prediction_id_key" if postgres else "uq_reports_prediction_id"


def upgrade() -> None:
    with op.batch_alter_table("reports", naming_convention=NAMING) as table:
        table.add_column(sa.Column("kind", sa.String(8), nullable=False, server_default="sr"))
        table.alter_column(
            "sr_sop_instance_uid",
            new_column_name="sop_instance_uid",
            existing_type=UID,
            existing_nullable=False,
        )
        table.drop_constraint(_prediction_unique(), type_="unique")
        table.create_unique_constraint("uq_reports_prediction_id_kind", ["prediction_id", "kind"])


def downgrade() -> None:
    op.execute(
        "DELETE FROM deliveries WHERE report_id IN (SELECT id FROM reports WHERE kind != 'sr')"
    )
    op.execute("DELETE FROM reports WHERE kind != 'sr'")
    with op.batch_alter_table("reports", naming_convention=NAMING) as table:
        table.drop_constraint("uq_reports_prediction_id_kind", type_="unique")
        table.create_unique_constraint(_prediction_unique(), ["prediction_id"])
        table.alter_column(
            "sop_instance_uid",
            new_column_name="sr_sop_instance_uid",
            existing_type=UID,
            existing_nullable=False,
        )
        table.drop_column("kind")

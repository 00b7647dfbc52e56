"""What the web console searches and filters on, and its login lockout.

Each received instance keeps its Patient ID, Accession Number and Patient's Sex (cleaned to
their VR) for the worklist's search and the cohort page; indexes make the worklist's filters
fast at 100,000 rows. (Not on deliveries.destination: SQLite would then scan a destination's
every delivery for each ECG instead of the ECG's few.) Each user counts failed logins since
the last success and may be locked until a time.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SEARCHED = ("patient_id", "accession_number", "received_at", "calling_ae_title")


def upgrade() -> None:
    with op.batch_alter_table("received_instances") as table:
        table.add_column(sa.Column("patient_id", sa.String(64), nullable=False, server_default=""))
        table.add_column(
            sa.Column("accession_number", sa.String(16), nullable=False, server_default="")
        )
        table.add_column(sa.Column("patient_sex", sa.String(16), nullable=False, server_default=""))
    for column in SEARCHED:
        op.create_index(f"ix_received_instances_{column}", "received_instances", [column])
    with op.batch_alter_table("users") as table:
        table.add_column(sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"))
        table.add_column(sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as table:
        table.drop_column("locked_until")
        table.drop_column("failed_logins")
    for column in SEARCHED:
        op.drop_index(f"ix_received_instances_{column}", "received_instances")
    with op.batch_alter_table("received_instances") as table:
        table.drop_column("patient_sex")
        table.drop_column("accession_number")
        table.drop_column("patient_id")

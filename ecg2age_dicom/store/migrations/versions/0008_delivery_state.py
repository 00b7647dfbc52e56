"""Each predicted instance keeps where its reports are (pending, delivered, delivery_failed,
or none), so that the console's status filters and counts read one indexed column instead of
testing every ECG's deliveries (the "predicted" filter tested all 100,000). Filled here from
the deliveries; kept by the store's queries from then on.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# One aggregate per instance, reached from its predictions by index (as
# ecg2age_dicom.store.queries.refresh_delivery_state does).
_STATE = """(SELECT CASE WHEN count(d.id) = 0 THEN 'none'
WHEN sum(CASE WHEN d.status = 'delivery_failed' THEN 1 ELSE 0 END) > 0 THEN 'delivery_failed'
WHEN sum(CASE WHEN d.status <> 'delivered' THEN 1 ELSE 0 END) > 0 THEN 'pending'
ELSE 'delivered' END
FROM predictions p JOIN reports r ON r.prediction_id = p.id JOIN deliveries d ON d.report_id = r.id
WHERE p.instance_id = received_instances.id)"""


def upgrade() -> None:
    with op.batch_alter_table("received_instances") as table:
        table.add_column(
            sa.Column("delivery_state", sa.String(20), nullable=False, server_default="")
        )
    op.create_index(
        "ix_received_instances_delivery_state", "received_instances", ["delivery_state"]
    )
    op.execute(
        f"UPDATE received_instances SET delivery_state = {_STATE} WHERE status = 'predicted'"
    )


def downgrade() -> None:
    op.drop_index("ix_received_instances_delivery_state", "received_instances")
    with op.batch_alter_table("received_instances") as table:
        table.drop_column("delivery_state")

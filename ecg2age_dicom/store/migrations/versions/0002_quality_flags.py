"""Each prediction keeps the signal-quality gate's flags (a JSON list, empty when clean).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as table:  # batch: SQLite cannot ALTER in place
        table.add_column(sa.Column("quality_flags", sa.JSON, nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("predictions") as table:
        table.drop_column("quality_flags")

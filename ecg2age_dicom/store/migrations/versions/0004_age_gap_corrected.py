"""Each prediction keeps the age gap corrected for age, where the model card defines one.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as table:  # batch: SQLite cannot ALTER in place
        table.add_column(sa.Column("age_gap_corrected_years", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("predictions") as table:
        table.drop_column("age_gap_corrected_years")

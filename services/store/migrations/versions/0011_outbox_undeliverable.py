"""outbox: outputs the broker will not take (too large) are set aside, not retried forever

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 10:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Why the relay gave up on a row (it also has sent_at, so nothing waits behind it); NULL for delivered rows.
    op.add_column('outbox', sa.Column('undeliverable', sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('outbox') as batch:
        batch.drop_column('undeliverable')

"""drop the single-column key-account indexes of alerts and notices

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 06:30:00
"""
from alembic import op


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Each is the first column of a wider index (ix_alerts_key_account_status, ix_notices_key_account_created,
    # migration 0009) that answers every query by key account as well. Every alert and notice written kept
    # both up to date: a tenth of the pages a small SQLite batch wrote to its log, and index work on PostgreSQL.
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index('ix_alerts_key_account_id')
    with op.batch_alter_table('notices', schema=None) as batch_op:
        batch_op.drop_index('ix_notices_key_account_id')


def downgrade() -> None:
    with op.batch_alter_table('notices', schema=None) as batch_op:
        batch_op.create_index('ix_notices_key_account_id', ['key_account_id'], unique=False)
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.create_index('ix_alerts_key_account_id', ['key_account_id'], unique=False)

"""drop the plain index on alerts.fingerprint

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 20:30:00
"""
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No query filters on the fingerprint: alerts are read by key account, evidence or reference and
    # their fingerprints compared in Python; uq_alerts_open_fingerprint keeps one open alert per
    # fingerprint. Every alert written maintained this index for nothing.
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index('ix_alerts_fingerprint')


def downgrade() -> None:
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.create_index('ix_alerts_fingerprint', ['fingerprint'], unique=False)

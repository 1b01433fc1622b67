"""notifications: delivery log and preferences (services/notify)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 21:00:00
"""
import sqlalchemy as sa
from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'notify_deliveries',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('subject_id', sa.String(length=128), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('recipient', sa.String(length=160), nullable=False),
        sa.Column('channel', sa.String(length=16), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('severity', sa.String(length=16), nullable=True),
        sa.Column('key_account_id', sa.String(length=128), nullable=True),
        sa.Column('payload', sa.String(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.String(), nullable=False),
        sa.Column('lease_owner', sa.String(length=64), nullable=True),
        sa.Column('lease_until', sa.String(), nullable=True),
        sa.Column('last_error', sa.String(), nullable=True),
        sa.Column('created_at', sa.String(), nullable=False),
        sa.Column('sent_at', sa.String(), nullable=True),
        sa.UniqueConstraint('subject_id', 'status', 'recipient', 'channel', name='uq_notify_deliveries_key'),
    )
    op.create_index('ix_notify_deliveries_due', 'notify_deliveries', ['state', 'next_attempt_at'])
    op.create_index('ix_notify_deliveries_recipient', 'notify_deliveries', ['recipient', 'created_at'])
    op.create_table(
        'notify_alerts',
        sa.Column('alert_id', sa.String(length=64), primary_key=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('severity', sa.String(length=16), nullable=False),
        sa.Column('key_account_id', sa.String(length=128), nullable=False),
        sa.Column('assignee', sa.String(length=128), nullable=False),
        sa.Column('recipients', sa.String(), nullable=False),
        sa.Column('version_key', sa.String(length=40), nullable=False),
        sa.Column('payload', sa.String(), nullable=False),
        sa.Column('remind_at', sa.String(), nullable=True),
        sa.Column('reminded', sa.Boolean(), nullable=False),
    )
    op.create_index('ix_notify_alerts_remind', 'notify_alerts', ['remind_at'])
    op.create_table(
        'notify_preferences',
        sa.Column('person_id', sa.String(length=128), primary_key=True),
        sa.Column('channels', sa.String(), nullable=False),
        sa.Column('severities', sa.String(), nullable=False),
        sa.Column('notices', sa.Boolean(), nullable=False),
        sa.Column('digest', sa.Boolean(), nullable=False),
        sa.Column('language', sa.String(length=8), nullable=True),
        sa.Column('email', sa.String(length=254), nullable=True),
        sa.Column('updated_at', sa.String(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('notify_preferences')
    op.drop_index('ix_notify_alerts_remind', 'notify_alerts')
    op.drop_table('notify_alerts')
    op.drop_index('ix_notify_deliveries_recipient', 'notify_deliveries')
    op.drop_index('ix_notify_deliveries_due', 'notify_deliveries')
    op.drop_table('notify_deliveries')

"""alert history, decision outcomes, notices, and the content digest of processed events

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 21:00:00
"""
import sqlalchemy as sa
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The same (source, id) with other content is a duplicate_conflict (CONTRACT §2); rows claimed
    # before this migration have no digest and count as the same content.
    with op.batch_alter_table('processed_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('digest', sa.String(length=64), nullable=True))
    op.create_table(
        'alert_history',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('alert_id', sa.String(length=64), nullable=False),
        sa.Column('status', sa.String(), nullable=False),
        sa.Column('assignee', sa.String(), nullable=False),
        sa.Column('caused_by', sa.String(), nullable=False),
        sa.Column('decided_by', sa.String(), nullable=True),
        sa.Column('comment', sa.String(), nullable=True),
        sa.Column('at', sa.String(), nullable=False),
    )
    op.create_index('ix_alert_history_alert_id', 'alert_history', ['alert_id'])
    op.create_table(
        'decision_outcomes',
        sa.Column('source', sa.String(length=300), primary_key=True),
        sa.Column('event_id', sa.String(length=300), primary_key=True),
        sa.Column('alert_id', sa.String(length=300), nullable=False),
        sa.Column('decision', sa.String(), nullable=False),
        sa.Column('decided_by', sa.String(), nullable=False),
        sa.Column('status', sa.String(), nullable=False),
        sa.Column('code', sa.String(), nullable=True),
        sa.Column('message', sa.String(), nullable=True),
        sa.Column('at', sa.String(), nullable=False),
    )
    op.create_table(
        'notices',
        sa.Column('notice_id', sa.String(length=64), primary_key=True),
        sa.Column('kind', sa.String(), nullable=False),
        sa.Column('key_account_id', sa.String(length=128), nullable=False),
        sa.Column('account_id', sa.String(), nullable=False),
        sa.Column('about', sa.String(), nullable=False),
        sa.Column('recipients', sa.String(), nullable=False),
        sa.Column('title', sa.String(), nullable=False),
        sa.Column('detail', sa.String(), nullable=False),
        sa.Column('caused_by', sa.String(), nullable=False),
        sa.Column('created_at', sa.String(), nullable=False),
    )
    op.create_index('ix_notices_key_account_id', 'notices', ['key_account_id'])


def downgrade() -> None:
    op.drop_table('notices')
    op.drop_table('decision_outcomes')
    op.drop_index('ix_alert_history_alert_id', 'alert_history')
    op.drop_table('alert_history')
    with op.batch_alter_table('processed_events', schema=None) as batch_op:
        batch_op.drop_column('digest')

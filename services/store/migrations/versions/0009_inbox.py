"""the KAM inbox: access tokens, sessions, decisions sent, notice read state (services/web), and the
indexes its queries need

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 21:00:00
"""
import sqlalchemy as sa
from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

# The inbox lists alerts most urgent first: severity, then the escalation time (else creation), then id.
# The same text is services/web/queries.py's URGENCY_RANK / URGENCY_TIME: PostgreSQL and SQLite use an
# expression index only for an identical expression.
URGENCY_RANK = "(CASE severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END)"
URGENCY_TIME = "(COALESCE(due_at, created_at))"


def upgrade() -> None:
    op.create_table(
        'web_tokens',
        sa.Column('token_id', sa.String(length=32), primary_key=True),
        sa.Column('digest', sa.String(length=64), nullable=False, unique=True),
        sa.Column('person_id', sa.String(length=128), nullable=False),
        sa.Column('admin', sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column('created_at', sa.String(), nullable=False),
        sa.Column('expires_at', sa.String(), nullable=True),
        sa.Column('revoked_at', sa.String(), nullable=True),
        sa.Column('last_used_at', sa.String(), nullable=True),
    )
    op.create_index('ix_web_tokens_person_id', 'web_tokens', ['person_id'])
    op.create_table(
        'web_sessions',
        sa.Column('digest', sa.String(length=64), primary_key=True),
        sa.Column('person_id', sa.String(length=128), nullable=False),
        sa.Column('admin', sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column('token_id', sa.String(length=32), nullable=True),
        sa.Column('csrf', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.String(), nullable=False),
        sa.Column('expires_at', sa.String(), nullable=False),
    )
    op.create_index('ix_web_sessions_token_id', 'web_sessions', ['token_id'])
    op.create_table(
        'web_decisions',
        sa.Column('event_id', sa.String(length=64), primary_key=True),
        sa.Column('source', sa.String(length=300), nullable=False),
        sa.Column('alert_id', sa.String(length=128), nullable=False),
        sa.Column('decision', sa.String(length=16), nullable=False),
        sa.Column('decided_by', sa.String(length=128), nullable=False),
        sa.Column('comment', sa.String(), nullable=True),
        sa.Column('sent_at', sa.String(), nullable=False),
    )
    op.create_index('ix_web_decisions_alert', 'web_decisions', ['alert_id', 'sent_at'])
    op.create_table(
        'web_notice_reads',
        sa.Column('person_id', sa.String(length=128), primary_key=True),
        sa.Column('notice_id', sa.String(length=64), primary_key=True),
        sa.Column('read_at', sa.String(), nullable=False),
    )
    op.create_table(
        'web_failed_sign_ins',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('client', sa.String(length=128), nullable=False),
        sa.Column('at', sa.String(), nullable=False),
    )
    op.create_index('ix_web_failed_sign_ins_client_at', 'web_failed_sign_ins', ['client', 'at'])

    # The inbox's reads of the pipeline's tables: my alerts, a key account's alerts, everything by urgency,
    # a person's team assignments, recent notices.
    op.create_index('ix_alerts_assignee_status', 'alerts', ['assignee', 'status'])
    op.create_index('ix_alerts_key_account_status', 'alerts', ['key_account_id', 'status'])
    op.create_index('ix_alerts_urgency', 'alerts', [sa.text(URGENCY_RANK), sa.text(URGENCY_TIME), 'alert_id'])
    op.create_index('ix_team_members_person_id', 'team_members', ['person_id'])
    op.create_index('ix_notices_key_account_created', 'notices', ['key_account_id', 'created_at'])
    op.create_index('ix_notices_created_at', 'notices', ['created_at'])


def downgrade() -> None:
    op.drop_index('ix_notices_created_at', 'notices')
    op.drop_index('ix_notices_key_account_created', 'notices')
    op.drop_index('ix_team_members_person_id', 'team_members')
    op.drop_index('ix_alerts_urgency', 'alerts')
    op.drop_index('ix_alerts_key_account_status', 'alerts')
    op.drop_index('ix_alerts_assignee_status', 'alerts')
    op.drop_table('web_failed_sign_ins')
    op.drop_table('web_notice_reads')
    op.drop_index('ix_web_decisions_alert', 'web_decisions')
    op.drop_table('web_decisions')
    op.drop_index('ix_web_sessions_token_id', 'web_sessions')
    op.drop_table('web_sessions')
    op.drop_index('ix_web_tokens_person_id', 'web_tokens')
    op.drop_table('web_tokens')

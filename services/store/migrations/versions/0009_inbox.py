"""the KAM inbox: access tokens, sessions, notice read state (services/web)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 21:00:00
"""
from alembic import op  # noqa: F401


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # tables of this feature are added here


def downgrade() -> None:
    pass

"""notifications: delivery log and preferences (services/notify)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 21:00:00
"""
from alembic import op  # noqa: F401


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # tables of this feature are added here


def downgrade() -> None:
    pass

"""a store-wide count of committed transactions that wrote state

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 19:20:00
"""
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Bumped by every transaction that writes state: what a transaction read before its locks is
    # still current under them if this did not move in between (StateRepository.validate_keys).
    op.execute("INSERT INTO versions (name, value) VALUES ('commits', 0)")


def downgrade() -> None:
    op.execute("DELETE FROM versions WHERE name = 'commits'")

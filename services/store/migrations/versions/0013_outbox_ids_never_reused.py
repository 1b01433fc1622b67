"""outbox: ids never reused on SQLite (AUTOINCREMENT), now that published rows are deleted

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 13:15:00
"""
from alembic import op


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # An outbox id names its output in Kafka (the relay's header) and in the relay's memory of what it
    # published. Without AUTOINCREMENT SQLite gives a new row the highest id + 1, so once every row is
    # deleted (published, or pruned) ids start again at 1 and a new output could be taken for an old one
    # and never published. PostgreSQL's sequence never goes back.
    if op.get_bind().dialect.name == "sqlite":
        # Copying the rows sets sqlite_sequence to the highest id kept. Ids of rows pruned before this
        # may come again, harmlessly: no relay running after the upgrade remembers them, and a takeover
        # reads Kafka only after the offsets the last one recorded.
        with op.batch_alter_table('outbox', recreate='always', table_kwargs={'sqlite_autoincrement': True}) as batch:
            pass


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table('outbox', recreate='always', table_kwargs={'sqlite_autoincrement': False}) as batch:
            pass

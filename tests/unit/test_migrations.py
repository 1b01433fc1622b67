"""The Alembic migrations build exactly the schema the SQLModel tables describe."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from services.store.db import create_tables, make_engine
import services.notify.tables  # noqa: F401  (features declare their tables beside their code)
import services.web.tables  # noqa: F401
from services.store.tables import metadata


def test_migrations_match_the_models(sqlite_url):
    engine = make_engine(sqlite_url)
    create_tables(engine)
    create_tables(engine)  # idempotent
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    engine.dispose()

"""Fresh databases for tests that need a store of their own.

Import the fixture into a test module (``from tests.support.databases import postgres_database``)
to get a new, empty database on the session's PostgreSQL server for each test; it is dropped
(with its connections) afterwards. ``fresh_postgres_database`` is the same as a context manager.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text


@contextmanager
def fresh_postgres_database(server_url: str, prefix: str = "t") -> Iterator[str]:
    """A plain ``postgresql://…/<new db>`` URL on the server of ``server_url``; dropped on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url.replace("postgresql://", "postgresql+psycopg://", 1),
                          isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        try:
            yield server_url.rsplit("/", 1)[0] + f"/{name}"
        finally:
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    finally:
        admin.dispose()


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[str]:
    """A fresh database on the session's PostgreSQL server for one test."""
    with fresh_postgres_database(postgres_url) as url:
        yield url

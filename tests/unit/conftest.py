"""Fixtures shared by the unit tests that drive the store or the processor on both databases."""

import pytest


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request):
    """A fresh store: a SQLite file, then a PostgreSQL database of the session's server."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_database")

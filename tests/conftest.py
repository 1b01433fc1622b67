"""Shared pytest fixtures. Add yours below the platform section."""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# =============================================================================
# Platform: real Apache Kafka and PostgreSQL for the test session
# (owner: "Platform" issue; services/devkit/broker.py, tests/support/postgres.py).
#
#   kafka_broker     session  KafkaBroker(bootstrap, port, data_dir) — data_dir None when external
#   kafka_bootstrap  session  "127.0.0.1:<port>": $ONEVOICE_KAFKA_BOOTSTRAP if reachable, else a
#                             broker of our own on a free port (stopped at session end)
#   postgres_url     session  "postgresql://postgres@127.0.0.1:<port>/onevoice" ($ONEVOICE_TEST_DATABASE_URL
#                             or a throwaway cluster, stopped at session end)
#   sqlite_url       function "sqlite:///<tmp_path>/onevoice.db"
#   unique_id        function callable: unique_id("alert") -> "alert-<test>-<hex>"
#   topic_prefix     function "t-<test>-<hex>" — prefix for topics/groups private to one test
# =============================================================================

REPO_ROOT = Path(__file__).resolve().parent.parent

# One jar cache per checkout, whatever the current directory of pytest (or of the
# processes tests spawn) is.
os.environ.setdefault("ONEVOICE_CACHE_DIR", str(REPO_ROOT / ".onevoice" / "cache"))


@dataclass(frozen=True)
class KafkaBroker:
    bootstrap: str
    port: int
    data_dir: Path | None  # None: an external broker from $ONEVOICE_KAFKA_BOOTSTRAP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reachable(bootstrap: str) -> bool:
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2):
                return True
        except (OSError, ValueError):
            continue
    return False


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    external = os.environ.get("ONEVOICE_KAFKA_BOOTSTRAP")
    if external and _reachable(external):
        port = int(external.split(",")[0].rpartition(":")[2])
        yield KafkaBroker(bootstrap=external, port=port, data_dir=None)
        return

    from services.devkit.broker import start_broker, stop_broker

    data_dir = tmp_path_factory.mktemp("kafka")
    port = _free_port()
    bootstrap = start_broker(port, data_dir, quiet=True)
    try:
        yield KafkaBroker(bootstrap=bootstrap, port=port, data_dir=data_dir)
    finally:
        stop_broker(data_dir, port)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    return kafka_broker.bootstrap


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    from tests.support.postgres import start_postgres

    # Without durability (fast=True): this shared server is never crashed, so only its speed matters.
    # Tests that crash PostgreSQL, and the benchmarks, start durable clusters of their own.
    url, stop = start_postgres(fast=True)
    try:
        yield url
    finally:
        stop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'onevoice.db'}"


@pytest.fixture
def store(sqlite_url):
    """An engine on a fresh SQLite store with every table (a module that needs data in it overrides this)."""
    from services.store.db import create_tables, make_engine

    engine = make_engine(sqlite_url)
    create_tables(engine)
    yield engine
    engine.dispose()


def _slug(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name).strip("-").lower()[:40]


@pytest.fixture
def unique_id(request: pytest.FixtureRequest) -> Callable[[str], str]:
    slug = _slug(request)

    def make(prefix: str = "id") -> str:
        return f"{prefix}-{slug}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    return f"t-{_slug(request)}-{uuid.uuid4().hex[:8]}"


# =============================================================================
# (other fixtures below)
# =============================================================================

_MARK_BY_FIXTURE = {"postgres_url": "postgres", "postgres_database": "postgres",
                    "kafka_bootstrap": "kafka", "kafka_broker": "kafka"}


@pytest.hookimpl(tryfirst=True)  # before `-m` selects on the markers
def pytest_collection_modifyitems(config, items):
    """Every test that asks for the real PostgreSQL or Kafka (directly or through its fixtures) carries the
    `postgres` / `kafka` marker, so `-m "not postgres"` really leaves them out. A database asked for at run
    time (`request.getfixturevalue`) cannot be seen here: `postgres_database` fails such a test instead."""
    for item in items:
        for fixture in set(getattr(item, "fixturenames", ())) & _MARK_BY_FIXTURE.keys():
            if item.get_closest_marker(_MARK_BY_FIXTURE[fixture]) is None:
                item.add_marker(getattr(pytest.mark, _MARK_BY_FIXTURE[fixture]))


@pytest.fixture
def postgres_database(postgres_url: str, request: pytest.FixtureRequest):
    """A fresh, empty database on the session's PostgreSQL server for one test (dropped afterwards)."""
    from tests.support.databases import fresh_postgres_database

    if request.node.get_closest_marker("postgres") is None:  # asked for through request.getfixturevalue
        pytest.fail(f"{request.node.nodeid} uses PostgreSQL without the `postgres` marker: "
                    "use pytest.param(..., marks=pytest.mark.postgres) for its parameter", pytrace=False)

    with fresh_postgres_database(postgres_url) as url:
        yield url

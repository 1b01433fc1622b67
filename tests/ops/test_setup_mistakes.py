"""Every setup mistake a user can make ends in a short message naming the setting, a non-zero exit and
no traceback (unless --debug); no password ever appears."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from sqlalchemy import text

from services.config import Settings
from services.store.db import create_tables, make_engine
from tests.ops.support import REPO_ROOT, StoppablePostgres, free_port, service_env

SECRET = "s3cret-Pa55word"


def onevoice(*args: str, timeout: float = 120, **settings) -> tuple[int, str]:
    env = service_env(**settings)
    if "startup_wait_s" in Settings.model_fields and "startup_wait_s" not in settings:
        env["ONEVOICE_STARTUP_WAIT_S"] = "0"  # a missing server is a mistake to report, not to wait for
    done = subprocess.run([sys.executable, "-m", "consumers.cli", *args], cwd=REPO_ROOT, env=env, timeout=timeout,
                          capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr


def assert_short_message(rc: int, output: str, *needles: str) -> str:
    assert rc != 0, output
    assert "Traceback" not in output, output
    assert SECRET not in output, output
    message = output[output.index("error: "):]
    assert len(message.strip().splitlines()) <= 2, message
    for needle in needles:
        assert needle in message, message
    return message


@pytest.fixture
def migrated_sqlite(sqlite_url):
    engine = make_engine(sqlite_url)
    create_tables(engine)
    engine.dispose()
    return sqlite_url


def test_unreachable_broker(migrated_sqlite):
    rc, out = onevoice("status", kafka_bootstrap=f"127.0.0.1:{free_port()}", database_url=migrated_sqlite)
    assert_short_message(rc, out, "cannot reach the Kafka broker", "ONEVOICE_KAFKA_BOOTSTRAP")


def test_unreachable_broker_at_run(sqlite_url):
    """`onevoice run` waits ONEVOICE_STARTUP_WAIT_S for its servers (services/outages.py), then says which."""
    bootstrap = f"127.0.0.1:{free_port()}"
    rc, out = onevoice("run", kafka_bootstrap=bootstrap, database_url=sqlite_url)
    assert_short_message(rc, out, "Kafka", bootstrap)


def test_unreachable_database():
    url = f"postgresql://onevoice:{SECRET}@127.0.0.1:{free_port()}/onevoice"
    rc, out = onevoice("alerts", database_url=url)
    message = assert_short_message(rc, out, "cannot reach the database", "ONEVOICE_DATABASE_URL")
    assert "onevoice:***@127.0.0.1" in message


@pytest.mark.postgres
def test_wrong_database_password():
    server = StoppablePostgres(password="the-right-one")
    try:
        url = f"postgresql://postgres:{SECRET}@127.0.0.1:{server.port}/postgres"
        rc, out = onevoice("alerts", database_url=url)
        assert_short_message(rc, out, "refused the login of user postgres", "ONEVOICE_DATABASE_URL")
    finally:
        server.destroy()


def test_busy_metrics_port(sqlite_url):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc, out = onevoice("run", metrics_port=port, database_url=sqlite_url,
                           kafka_bootstrap=f"127.0.0.1:{free_port()}")
    assert_short_message(rc, out, f"ONEVOICE_METRICS_PORT={port}", "already in use")


@pytest.mark.parametrize("url", [f"mysql://kam:{SECRET}@db/onevoice", "not a url at all"])
def test_bad_database_url(url):
    rc, out = onevoice("alerts", database_url=url)
    assert_short_message(rc, out, "ONEVOICE_DATABASE_URL")


def test_store_without_the_schema(sqlite_url):
    rc, out = onevoice("alerts", database_url=sqlite_url)
    assert_short_message(rc, out, "no onevoice schema", "onevoice run")


def test_store_behind_a_migration(migrated_sqlite):
    engine = make_engine(migrated_sqlite)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0007'"))
    engine.dispose()
    rc, out = onevoice("report", "--out", "/dev/null", database_url=migrated_sqlite)
    assert_short_message(rc, out, "revision 0007", "onevoice run")


@pytest.mark.parametrize("name,value", [("log_format", "xml"), ("partitions", "many"), ("log_level", "loud")])
def test_unknown_setting_value(name, value, sqlite_url):
    rc, out = onevoice("run", database_url=sqlite_url, **{name: value})
    assert_short_message(rc, out, f"ONEVOICE_{name.upper()}")


def test_debug_shows_the_traceback():
    rc, out = onevoice("--debug", "alerts", database_url=f"postgresql://kam@127.0.0.1:{free_port()}/x")
    assert rc != 0 and "Traceback" in out

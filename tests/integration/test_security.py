"""Kafka security through a real `--secure` broker: SASL_SSL with SCRAM, and ACLs that hold.

The broker is `onevoice broker start --secure` itself (certificates, SCRAM users, ACLs), on a
free port and a data directory of this module. The service runs as the `onevoice` principal;
the scenario runner's own clients (publishing inputs and decisions, reading outputs) as `admin`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka.errors import TopicAuthorizationFailedError

from services import kafka_clients
from services.devkit import broker_secure
from services.config import Settings
from consumers.live_scenarios import run_scenario_live
from services.scenarios import bundled_scenarios, normalised_expectation

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = {s["name"]: s for s in bundled_scenarios()}
pytestmark = pytest.mark.kafka


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory):
    """(bootstrap, data_dir) of a `--secure` broker, started with the real command line."""
    data_dir = tmp_path_factory.mktemp("kafka-secure")
    port = _free_port()
    proc = subprocess.run([sys.executable, "-m", "consumers.cli", "broker", "start", "--secure", "--quiet",
                           "--port", str(port), "--data-dir", str(data_dir)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    yield proc.stdout, f"127.0.0.1:{port}", data_dir
    subprocess.run([sys.executable, "-m", "consumers.cli", "broker", "stop", "--port", str(port), "--data-dir",
                    str(data_dir)], cwd=REPO_ROOT, capture_output=True, timeout=120)


def principal_settings(data_dir: Path, bootstrap: str, principal: str, **extra) -> Settings:
    env = broker_secure.client_environment(data_dir, bootstrap, principal)
    return Settings(kafka_bootstrap=bootstrap, kafka_security_protocol=env["ONEVOICE_KAFKA_SECURITY_PROTOCOL"],
                    kafka_sasl_mechanism=env["ONEVOICE_KAFKA_SASL_MECHANISM"], kafka_sasl_username=principal,
                    kafka_sasl_password=env["ONEVOICE_KAFKA_SASL_PASSWORD"],
                    kafka_ssl_cafile=env["ONEVOICE_KAFKA_SSL_CAFILE"], **extra)


def test_start_prints_the_address_then_each_principal_with_its_settings(secure_broker):
    output, bootstrap, data_dir = secure_broker
    lines = output.splitlines()
    assert lines[0] == bootstrap
    principals = [line.removeprefix("# principal ") for line in lines if line.startswith("# principal ")]
    assert principals == list(broker_secure.PRINCIPALS)
    block = lines[lines.index("# principal inbox") + 1:lines.index("# principal erp")]
    env = dict(line.split("=", 1) for line in block)
    assert env["ONEVOICE_KAFKA_BOOTSTRAP"] == bootstrap
    assert env["ONEVOICE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["ONEVOICE_KAFKA_SASL_USERNAME"] == "inbox"
    assert Path(env["ONEVOICE_KAFKA_SSL_CAFILE"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    # the settings load as they are printed
    assert Settings(**{k.removeprefix("ONEVOICE_").lower(): v for k, v in env.items()}).kafka_sasl_username == "inbox"


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_scenario_end_to_end_over_sasl_ssl(name, secure_broker, sqlite_url):
    _, bootstrap, data_dir = secure_broker
    run = await run_scenario_live(SCENARIOS[name], bootstrap=bootstrap, database_url=sqlite_url,
                                  group_id=f"onevoice-secure-{uuid.uuid4().hex[:8]}",
                                  kafka=principal_settings(data_dir, bootstrap, "admin"),
                                  service_kafka=principal_settings(data_dir, bootstrap, "onevoice"))
    assert run.summary == normalised_expectation(SCENARIOS[name])


async def _write(settings: Settings, topic: str) -> None:
    producer = kafka_clients.producer(settings, enable_idempotence=True)
    await producer.start()
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, b'{"probe": true}', key=b"probe"), 30)
    finally:
        await producer.stop()


async def test_only_the_inbox_may_write_decisions(secure_broker):
    _, bootstrap, data_dir = secure_broker
    from consumers.topics import ensure_topics

    await ensure_topics(principal_settings(data_dir, bootstrap, "onevoice"), 1)  # the service's own right
    await _write(principal_settings(data_dir, bootstrap, "inbox"), "kam.decisions")
    for principal in ("erp", "crm", "finance", "onevoice"):
        with pytest.raises(TopicAuthorizationFailedError):
            await _write(principal_settings(data_dir, bootstrap, principal), "kam.decisions")
    await _write(principal_settings(data_dir, bootstrap, "erp"), "erp.stock")  # its own topic: allowed
    with pytest.raises(TopicAuthorizationFailedError):
        await _write(principal_settings(data_dir, bootstrap, "erp"), "crm.accounts")


def test_a_wrong_password_ends_the_start_in_one_line_without_the_password(secure_broker, tmp_path):
    _, bootstrap, data_dir = secure_broker
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONEVOICE_")}
    wrong = "Wrong-" + uuid.uuid4().hex
    env.update(broker_secure.client_environment(data_dir, bootstrap, "onevoice"),
               ONEVOICE_KAFKA_SASL_PASSWORD=wrong, ONEVOICE_DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}",
               ONEVOICE_STARTUP_WAIT_S="4")
    proc = subprocess.run([sys.executable, "-m", "consumers.cli", "run"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert wrong not in output
    assert "Traceback" not in output
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: gave up after 4 s") and "Kafka" in last, output[-2000:]

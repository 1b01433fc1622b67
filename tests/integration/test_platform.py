"""Real infrastructure: the local Apache Kafka broker and the throwaway PostgreSQL."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from services.devkit.broker import broker_status, start_broker, stop_broker
from services.devkit.cli_broker import broker_app
from tests.conftest import KafkaBroker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.kafka
def test_broker_start_is_idempotent(kafka_broker: KafkaBroker) -> None:
    if kafka_broker.data_dir is None:
        pytest.skip("external broker from ONEVOICE_KAFKA_BOOTSTRAP")
    before = broker_status(kafka_broker.data_dir, kafka_broker.port)
    assert before.running and before.bootstrap == kafka_broker.bootstrap
    started = time.monotonic()
    assert start_broker(kafka_broker.port, kafka_broker.data_dir, quiet=True) == kafka_broker.bootstrap
    assert time.monotonic() - started < 5
    assert broker_status(kafka_broker.data_dir, kafka_broker.port).pid == before.pid
    assert (kafka_broker.data_dir / "broker.log").stat().st_size > 0  # log4j2 binding + config work


@pytest.mark.kafka
async def test_produce_and_consume_on_fresh_topic(kafka_bootstrap: str, topic_prefix: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"{topic_prefix}-roundtrip"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        for _ in range(100):  # wait for metadata, not a fixed sleep
            described = await admin.describe_topics([topic])
            parts = described[0]["partitions"] if described else []
            if len(parts) == 3 and all(p["leader"] >= 0 for p in parts):
                break
            await asyncio.sleep(0.1)
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, b'{"hello": "kafka"}', key=b"ACME")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, group_id=f"{topic_prefix}-g", auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        msg = await asyncio.wait_for(consumer.getone(), timeout=30)
        await consumer.commit()
        committed = await consumer.committed(TopicPartition(msg.topic, msg.partition))
    finally:
        await consumer.stop()
    assert (msg.key, msg.value) == (b"ACME", b'{"hello": "kafka"}')
    assert (msg.partition, msg.offset) == (meta.partition, meta.offset)
    assert committed == msg.offset + 1


@pytest.mark.postgres
def test_postgres_round_trip(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql://")
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
            conn.execute(sa.text("CREATE TEMP TABLE t (id text PRIMARY KEY, n int)"))
            conn.execute(sa.text("INSERT INTO t VALUES ('a', 41)"))
            assert conn.execute(sa.text("SELECT n + 1 FROM t WHERE id = 'a'")).scalar_one() == 42
            assert int(conn.execute(sa.text("SHOW max_connections")).scalar_one()) >= 100
    finally:
        engine.dispose()


def test_sqlite_url_is_private(sqlite_url: str, tmp_path: Path) -> None:
    assert sqlite_url == f"sqlite:///{tmp_path / 'onevoice.db'}"


@pytest.mark.kafka
def test_second_broker_start_and_stop_via_cli(tmp_path: Path) -> None:
    port, data_dir = _free_port(), tmp_path / "kafka-b"
    runner = CliRunner()
    try:
        result = runner.invoke(broker_app, ["start", "--port", str(port), "--data-dir", str(data_dir), "--quiet"])
        assert result.exit_code == 0, result.output
        assert result.stdout.strip().splitlines()[-1] == f"127.0.0.1:{port}"
        assert broker_status(data_dir, port).running and _port_open(port)

        again = runner.invoke(broker_app, ["start", "--port", str(port), "--data-dir", str(data_dir), "--quiet"])
        assert again.exit_code == 0 and again.stdout.strip().splitlines()[-1] == f"127.0.0.1:{port}"

        stopped = runner.invoke(broker_app, ["stop", "--port", str(port), "--data-dir", str(data_dir)])
        assert stopped.exit_code == 0, stopped.output
        assert not broker_status(data_dir, port).running
        assert not (data_dir / "broker.pid").exists()
        assert not _port_open(port)
        assert stop_broker(data_dir, port) is False  # nothing left to stop
    finally:
        stop_broker(data_dir, port)


@pytest.mark.kafka
def test_port_taken_by_something_else_is_a_clear_error(tmp_path: Path) -> None:
    from services.devkit.broker import BrokerError

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(BrokerError, match="already in use"):
            start_broker(port, tmp_path / "kafka-c", quiet=True)

"""A real `onevoice run`: /readyz follows the database and the broker within seconds; /metrics holds real
Prometheus counters; the batch log line is one JSON object with stable keys."""

from __future__ import annotations

import json
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.devkit.broker import start_broker, stop_broker
from tests.ops.support import (StoppablePostgres, free_port, get, publish, scenario_messages, service_env,
                               wait_for)
from tests.support.service_process import ServiceProcess

READY_WITHIN_S = 5.0


def ready(base: str) -> bool:
    return get(f"{base}/readyz")[0] == 200


def unready(base: str) -> bool:
    return get(f"{base}/readyz")[0] == 503


def metric_families(base: str) -> dict:
    status, body = get(f"{base}/metrics")
    assert status == 200
    return {family.name: family for family in text_string_to_metric_families(body)}


def applied(database_url: str, messages) -> bool:
    """Whether the service has recorded every one of these events as processed."""
    import json

    from sqlalchemy import select, tuple_

    from services.store import tables as t
    from services.store.db import make_engine

    keys = [(e["source"], e["id"]) for e in (json.loads(value) for _, _, value in messages)]
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            c = t.processed_events.c
            found = conn.execute(select(c.source, c.event_id).where(tuple_(c.source, c.event_id).in_(keys))).all()
    except Exception:  # the schema may not exist yet
        return False
    finally:
        engine.dispose()
    return len(found) == len(set(keys))


def sample(families: dict, name: str, **labels) -> float:
    family = families[name]
    return sum(s.value for s in family.samples
               if s.name == f"{name}_total" and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.fixture
def postgres():
    server = StoppablePostgres()
    yield server
    server.destroy()


@pytest.mark.kafka
@pytest.mark.postgres
def test_readiness_follows_the_database_and_metrics_are_prometheus_counters(kafka_bootstrap, postgres, tmp_path,
                                                                             topic_prefix):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    service = ServiceProcess(service_env(kafka_bootstrap=kafka_bootstrap, database_url=postgres.url,
                                         group_id=topic_prefix, metrics_port=port, ops_interval_s=1,
                                         log_format="json"), tmp_path / "service.log")
    service.start()
    try:
        wait_for(lambda: ready(base), 90, what="first readiness")
        assert get(f"{base}/healthz")[0] == 200
        assert get(f"{base}/nothing-here")[0] == 404

        messages = scenario_messages("key-account-dunning", topic_prefix)
        # Master data first: across topics Kafka keeps no order, and a dunning applied before its key
        # account is known is (rightly) no key-account exception.
        accounts = [m for m in messages if m[0] == "crm.accounts"]
        publish(kafka_bootstrap, accounts)
        # The new group reads every topic from the start, other tests' events too: wait for these ones.
        wait_for(lambda: applied(postgres.url, accounts), 120, what="master data applied")
        publish(kafka_bootstrap, [m for m in messages if m[0] != "crm.accounts"])
        wait_for(lambda: applied(postgres.url, messages), 120, what="events applied")
        families, _ = wait_for(lambda: (f := metric_families(base)) and sample(f, "onevoice_alerts_opened",
                                                                            rule="key_account_dunning") >= 1 and f,
                               30, what="events counted")
        for name in ("onevoice_events_processed", "onevoice_dead_letters", "onevoice_alerts_opened",
                     "onevoice_instructions", "onevoice_batches", "onevoice_database_retries"):
            assert families[name].type == "counter", name
        assert sample(families, "onevoice_alerts_opened", rule="key_account_dunning") >= 1
        assert sample(families, "onevoice_instructions", action="hold") >= 1
        assert families["onevoice_batch_duration_seconds"].type == "histogram"
        latency, _ = wait_for(lambda: [s.value for s in metric_families(base)["onevoice_end_to_end_latency_seconds"]
                                       .samples if s.name.endswith("_count") and s.value > 0], 30,
                              what="an end-to-end latency observed")
        lag_family, _ = wait_for(lambda: (f := metric_families(base)["onevoice_consumer_lag_messages"]).samples and f,
                                 30, what="lag per partition")
        assert lag_family.type == "gauge"
        assert {s.labels["topic"] for s in lag_family.samples} >= {"crm.accounts", "finance.dunning"}

        batch_lines = [json.loads(line) for line in (tmp_path / "service.log").read_text().splitlines()
                       if line.startswith("{") and '"onevoice.batch"' in line]
        assert batch_lines, "no JSON batch line"
        assert {"ts", "level", "logger", "message", "events", "alerts_opened", "alerts_resolved", "alerts_escalated",
                "instructions", "dead_letters", "duration_ms"} <= set(batch_lines[0])
        assert sum(line["events"] for line in batch_lines) >= len(messages)

        postgres.stop()
        _, took = wait_for(lambda: unready(base), READY_WITHIN_S + 5, interval=0.1, what="unready without database")
        assert took < READY_WITHIN_S, f"/readyz turned unready {took:.1f} s after the database stopped"
        assert "store unreachable" in get(f"{base}/readyz")[1]
        assert get(f"{base}/healthz")[0] == 200  # alive all along

        postgres.start()
        _, took = wait_for(lambda: ready(base), 30, interval=0.1, what="ready again with the database back")
        assert took < READY_WITHIN_S, f"/readyz ready again only {took:.1f} s after the database came back"
    finally:
        assert service.terminate() == 0, service.tail()


@pytest.mark.kafka
def test_readiness_follows_the_broker(tmp_path, sqlite_url, topic_prefix):
    kafka_port, port = free_port(), free_port()
    data_dir = tmp_path / "kafka"
    bootstrap = start_broker(kafka_port, data_dir, quiet=True)
    base = f"http://127.0.0.1:{port}"
    service = ServiceProcess(service_env(kafka_bootstrap=bootstrap, database_url=sqlite_url, group_id=topic_prefix,
                                         metrics_port=port), tmp_path / "service.log")
    service.start()
    try:
        wait_for(lambda: ready(base), 90, what="first readiness")
        stop_broker(data_dir, kafka_port)
        _, took = wait_for(lambda: unready(base), READY_WITHIN_S + 5, interval=0.1, what="unready without broker")
        assert took < READY_WITHIN_S, f"/readyz turned unready {took:.1f} s after the broker stopped"
        assert "broker unreachable" in get(f"{base}/readyz")[1]

        began = time.monotonic()
        start_broker(kafka_port, data_dir, quiet=True)
        print(f"broker restarted in {time.monotonic() - began:.1f} s")
        _, took = wait_for(lambda: ready(base), 60, interval=0.1, what="ready again with the broker back")
        print(f"ready {took:.1f} s after the broker accepted connections again")
        assert took < 30  # the consumer must rejoin its group (session timeout and rebalance)
    finally:
        try:
            assert service.terminate() == 0, service.tail()
        finally:
            stop_broker(data_dir, kafka_port)

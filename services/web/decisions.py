"""A KAM's decision leaves the inbox as a `decision.made` CloudEvent on kam.decisions, nothing else.

The pipeline is the only writer of alert state: it checks the decision again (the same policy,
services/rules/alerts.py), applies or rejects it and records the outcome in decision_outcomes,
which the inbox reads back by event id. The inbox remembers what it sent (web_decisions) so
the person who decided can follow it, and so that nobody else can.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import datetime, timezone

from aiokafka import AIOKafkaProducer
from sqlalchemy import Engine

from services import kafka_clients
from services.kafka_clients import KafkaTarget
from services.web.tables import web_decisions
from services.web.tokens import now_iso

DECISIONS_TOPIC = "kam.decisions"
log = logging.getLogger("onevoice.web.decisions")


class BrokerUnavailable(RuntimeError):
    """Kafka did not take the decision; nothing was sent and nothing recorded."""


def decision_event(*, alert_id: str, decision: str, decided_by: str, comment: str | None, source: str,
                   now: datetime | None = None) -> dict:
    """The structured-mode CloudEvent (CONTRACT §2, §3) of one decision, with a fresh id."""
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": source, "type": "decision.made",
            "time": (now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "subject": alert_id, "datacontenttype": "application/json",
            "data": {"alert_id": alert_id, "decision": decision, "decided_by": decided_by, "comment": comment}}


class DecisionPublisher:
    """One idempotent Kafka producer per web process, started on first use so the pages work without Kafka."""

    def __init__(self, target: KafkaTarget, *, timeout_s: float = 15.0):
        self.target = target  # Settings (with the cluster's SASL/TLS) or a plaintext bootstrap address
        self.timeout_s = timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = kafka_clients.producer(self.target, enable_idempotence=True, acks="all",
                                                  request_timeout_ms=int(self.timeout_s * 1000))
                try:
                    await asyncio.wait_for(producer.start(), self.timeout_s)
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def publish(self, event: dict) -> None:
        """Send one decision, keyed by its alert id, and wait until Kafka has it (acks=all)."""
        try:
            producer = await self._started()
            await asyncio.wait_for(producer.send_and_wait(DECISIONS_TOPIC, json.dumps(event).encode(),
                                                          key=event["data"]["alert_id"].encode()), self.timeout_s)
        except Exception as exc:  # any Kafka failure: the caller answers 503 and the person may try again
            log.warning("could not publish decision %s: %s", event["id"], type(exc).__name__)
            raise BrokerUnavailable(str(type(exc).__name__)) from exc

    async def reachable(self) -> bool:
        """Whether the broker answers a metadata request now (for /readyz)."""
        try:
            producer = await self._started()
            await asyncio.wait_for(producer.client.fetch_all_metadata(), 5)
            return True
        except Exception:
            return False

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


async def send_decision(engine: Engine, publisher: DecisionPublisher, event: dict) -> None:
    """Record, then publish; a decision Kafka refused is forgotten again (BrokerUnavailable is raised)."""
    data = event["data"]
    row = {"event_id": event["id"], "source": event["source"], "alert_id": data["alert_id"],
           "decision": data["decision"], "decided_by": data["decided_by"], "comment": data["comment"],
           "sent_at": now_iso()}
    await asyncio.to_thread(_insert, engine, row)
    try:
        await publisher.publish(event)
    except BrokerUnavailable:
        await asyncio.to_thread(_delete, engine, event["id"])
        raise


def _insert(engine: Engine, row: dict) -> None:
    with engine.begin() as conn:
        conn.execute(web_decisions.insert().values(**row))


def _delete(engine: Engine, event_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(web_decisions.delete().where(web_decisions.c.event_id == event_id))

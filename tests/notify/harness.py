"""Helpers shared by the notification tests: private topics, publishing, running notifiers, expectations."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from zoneinfo import ZoneInfo

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import select

from services.config import Settings
from services.notify.service import Notifier
from services.notify.tables import notify_deliveries
from services.store import tables as t
from services.store.db import make_engine

BASE_URL = "https://onevoice.example"
SENDER = "onevoice <alerts@corp.example>"
DOMAIN = "corp.example"


async def create_topics(bootstrap: str, *names: str, partitions: int = 3) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names])
        for _ in range(100):
            described = await admin.describe_topics(list(names))
            if all(d.get("partitions") and all(p.get("leader", -1) >= 0 for p in d["partitions"]) for d in described):
                return
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def publish(bootstrap: str, topic: str, messages: list[dict], key_field: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for m in messages:
            await producer.send(topic, json.dumps(m).encode(), key=str(m[key_field]).encode())
        await producer.flush()
    finally:
        await producer.stop()


def quiet_digest_hour(time_zone: str = "Europe/Berlin") -> int:
    """A digest hour at which no digest falls due while a test runs: the last one came 13 hours ago (a
    notifier skips a digest more than 12 hours late) and the next comes in 11. With the default hour a
    notifier started between 07:00 and 19:00 Berlin time sent a digest among the mails a test counted."""
    return (datetime.now(ZoneInfo(time_zone)).hour + 11) % 24


def settings_for(*, database_url: str, bootstrap: str, prefix: str, smtp_url: str, **extra) -> Settings:
    values = dict(database_url=database_url, kafka_bootstrap=bootstrap, notify_group_id=f"{prefix}-notify",
                  notify_alerts_topic=f"{prefix}.alerts", notify_notices_topic=f"{prefix}.notices",
                  smtp_url=smtp_url, smtp_from=SENDER, web_base_url=BASE_URL, notify_retry_base_s=0.2,
                  notify_retry_max_s=1.0, notify_lease_s=10, session_timeout_ms=6000,
                  notify_digest_hour=quiet_digest_hour())
    values.update(extra)
    return Settings(**values)


async def run_notifiers(settings: Settings, until, *, count: int = 1, timeout: float = 90.0, settle: float = 1.0):
    """Run `count` notifiers side by side until `until()` holds (then `settle` seconds more), then stop them."""
    notifiers = [Notifier(settings) for _ in range(count)]
    tasks = [asyncio.create_task(n.run()) for n in notifiers]
    try:
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                raise AssertionError("notifiers did not finish in time")
            for task in tasks:
                if task.done():
                    task.result()
            await asyncio.sleep(0.1)
        await asyncio.sleep(settle)
    finally:
        for n in notifiers:
            n.request_stop()
        await asyncio.gather(*tasks)
        for n in notifiers:
            n.engine.dispose()
    return notifiers


def account_names(database_url: str) -> dict[str, str]:
    engine = make_engine(database_url)
    with engine.connect() as conn:
        names = dict(conn.execute(select(t.accounts.c.account_id, t.accounts.c.name)).all())
    engine.dispose()
    return names


def people_with_address(database_url: str) -> set[str]:
    engine = make_engine(database_url)
    with engine.connect() as conn:
        people = {p for (p,) in conn.execute(select(t.team_members.c.person_id).where(t.team_members.c.email.is_not(None)))}
    engine.dispose()
    return people


def delivery_states(database_url: str) -> list:
    engine = make_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(select(notify_deliveries)).all()
    engine.dispose()
    return rows


def expected_alert_mails(alerts: list[dict], has_address) -> dict[tuple[str, str, str], dict]:
    """(alert id, status, person) → alert message for every e-mail the defaults call for: one per change and
    person concerned (assignee; every recipient for open/escalated/resolved), severities medium and above."""
    out = {}
    for alert in alerts:
        people = [alert["assignee"]]
        if alert["status"] in ("open", "escalated", "resolved"):
            people += alert["recipients"]
        for person in set(people):
            if alert["severity"] != "low" and has_address(person):
                out[(alert["alert_id"], alert["status"], person)] = alert
    return out


def mail_key(mail) -> tuple[str, str, str]:
    """(alert id, status, person) of a received alert e-mail, from its headers and its To address."""
    return (mail["X-Onevoice-Alert-Id"], mail["X-Onevoice-Alert-Status"],
            mail["To"].addresses[0].addr_spec.split("@")[0])

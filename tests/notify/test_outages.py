"""A refusing SMTP server or a failing webhook delays notifications but loses none and doubles none."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from services.notify.metrics import FAILED, RETRIED
from tests.notify.harness import create_topics, delivery_states, publish, run_notifiers, settings_for
from tests.notify.servers import SmtpServer, WebhookReceiver

pytestmark = [pytest.mark.kafka]


def team_and_alerts(database_url: str, count: int) -> list[dict]:
    """A key account with a KAM who has an address, and `count` new high alerts for her."""
    from services.store.db import create_tables, make_engine
    from services.store import tables as t

    engine = make_engine(database_url)
    create_tables(engine)
    with engine.begin() as conn:
        conn.execute(t.accounts.insert().values(account_id="KA", name="Kappa AG", country="DE", tier="key",
                                                root_id="KA", event_time="2027-01-01T00:00:00Z", event_id="e0"))
        conn.execute(t.team_members.insert().values(account_id="KA", person_id="p-kim", role="global_kam",
                                                    name="Kim", email="p-kim@example.test", present=True,
                                                    event_time="2027-01-01T00:00:00Z", event_id="e1"))
    engine.dispose()
    return [{"alert_id": f"alert-{i:03d}", "fingerprint": f"f{i}", "rule": "local_price_below_global",
             "severity": "high", "status": "open", "key_account_id": "KA", "account_id": "KA",
             "title": f"Local price below global (P-{i}, IT)", "detail": f"IT price for P-{i} is 6 % below global",
             "evidence": [f"G-{i}", f"L-{i}"], "assignee": "p-kim", "recipients": ["p-kim"], "due_at": None,
             "caused_by": "erp/x", "created_at": "2027-01-01T00:00:00Z", "updated_at": "2027-01-01T00:00:00Z",
             "data": {}} for i in range(count)]


async def test_refusing_smtp_server_and_failing_webhook_delay_but_lose_nothing(sqlite_url, kafka_bootstrap, topic_prefix):
    alerts = team_and_alerts(sqlite_url, 12)
    await create_topics(kafka_bootstrap, f"{topic_prefix}.alerts", f"{topic_prefix}.notices")
    await publish(kafka_bootstrap, f"{topic_prefix}.alerts", alerts, "assignee")
    retried_before = RETRIED.labels("email")._value.get() + RETRIED.labels("slack")._value.get()
    failed_before = FAILED.labels("email")._value.get()
    with SmtpServer() as smtp, WebhookReceiver() as hooks:
        smtp.mailbox.refuse_first = 30  # 451 for the first 30 messages: every alert is refused at least twice
        hooks.fail_first = 20
        settings = settings_for(database_url=sqlite_url, bootstrap=kafka_bootstrap, prefix=topic_prefix,
                                smtp_url=smtp.url, notify_max_attempts=50,
                                notify_webhooks={"*": {"kind": "slack", "url": hooks.url("/hook")}})
        began = time.monotonic()

        def done():
            return len(smtp.mailbox.messages) >= len(alerts) and len(hooks.posts) >= len(alerts)

        await run_notifiers(settings, done, timeout=120, settle=2.0)
        assert smtp.mailbox.refused == 30 and hooks.failed == 20
        received = Counter(m["X-Onevoice-Alert-Id"] for m in smtp.mailbox.messages)
        assert received == Counter(a["alert_id"] for a in alerts)  # each once
        assert sorted(b["text"] for _, b in hooks.posts) == sorted(set(b["text"] for _, b in hooks.posts))
        assert len(hooks.posts) == len(alerts)
    assert RETRIED.labels("email")._value.get() + RETRIED.labels("slack")._value.get() > retried_before
    assert FAILED.labels("email")._value.get() == failed_before
    assert Counter(r.state for r in delivery_states(sqlite_url)) == Counter({"sent": 2 * len(alerts)})


async def test_after_the_configured_attempts_a_notification_is_recorded_failed(sqlite_url, kafka_bootstrap, topic_prefix,
                                                                                caplog):
    alerts = team_and_alerts(sqlite_url, 2)
    await create_topics(kafka_bootstrap, f"{topic_prefix}.alerts", f"{topic_prefix}.notices")
    await publish(kafka_bootstrap, f"{topic_prefix}.alerts", alerts, "assignee")
    failed_before = FAILED.labels("email")._value.get()
    with SmtpServer() as smtp:
        smtp.mailbox.refuse_until = time.monotonic() + 3600
        settings = settings_for(database_url=sqlite_url, bootstrap=kafka_bootstrap, prefix=topic_prefix,
                                smtp_url=smtp.url, notify_max_attempts=3, notify_retry_base_s=0.1)
        await run_notifiers(settings, lambda: sum(r.state == "failed" for r in delivery_states(sqlite_url)) == 2,
                            timeout=60, settle=0.5)
        assert smtp.mailbox.refused == 6 and not smtp.mailbox.messages
    rows = delivery_states(sqlite_url)
    assert [(r.state, r.attempts) for r in rows] == [("failed", 3), ("failed", 3)]
    assert all("451" in r.last_error for r in rows)
    assert FAILED.labels("email")._value.get() - failed_before == 2
    assert "gave up alert alert-000/open to p-kim via email after 3 attempt(s)" in caplog.text

    # `onevoice notify retry-failed` once the server is fixed: sent, once
    from services.notify.deliveries import DeliveryLog
    from services.store.db import make_engine
    from datetime import datetime, timezone
    engine = make_engine(sqlite_url)
    assert DeliveryLog(engine, webhooks=[]).retry_failed(datetime.now(timezone.utc)) == 2
    engine.dispose()
    with SmtpServer() as smtp:
        settings = settings_for(database_url=sqlite_url, bootstrap=kafka_bootstrap, prefix=topic_prefix,
                                smtp_url=smtp.url)
        await run_notifiers(settings, lambda: len(smtp.mailbox.messages) >= 2, timeout=60, settle=1.0)
        assert sorted(m["X-Onevoice-Alert-Id"] for m in smtp.mailbox.messages) == ["alert-000", "alert-001"]

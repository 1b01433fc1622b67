"""Reminders halfway to the deadline, once; preferences set on the command line steer channel and language."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from typer.testing import CliRunner

from consumers.cli import app
from services.notify.deliveries import DeliveryLog
from tests.notify.harness import delivery_states
from tests.notify.servers import SmtpServer
from tests.notify.test_digest import notifier, send_all
from tests.notify.test_outages import team_and_alerts

T0 = datetime(2027, 1, 4, 9, 0, tzinfo=timezone.utc)


def stamped(alert: dict, severity: str, status: str = "open", at: datetime = T0, window_h: int = 48) -> dict:
    return dict(alert, severity=severity, status=status, created_at=T0.isoformat(), updated_at=at.isoformat(),
                due_at=(T0 + timedelta(hours=window_h)).isoformat())


async def test_reminder_halfway_to_the_deadline_once_and_only_while_undecided(sqlite_url):
    a, b, c = team_and_alerts(sqlite_url, 3)
    with SmtpServer() as smtp:
        now = [T0]
        n = notifier(sqlite_url, smtp.url, now)
        log = DeliveryLog(n.engine, webhooks=[])
        log.record([stamped(a, "critical"), stamped(b, "high"), stamped(c, "medium")], [], T0)
        log.record([stamped(b, "high", "acknowledged", at=T0 + timedelta(hours=2))], [], T0 + timedelta(hours=2))
        now[0] = T0 + timedelta(hours=2)
        await send_all(n)
        def not_digests():  # the day's digest comes too (07:00 Berlin passes during the test)
            return [m for m in smtp.mailbox.messages if not m["X-Onevoice-Digest"]]

        assert len(not_digests()) == 4  # three new alerts, one acknowledgement, to the assignee
        now[0] = T0 + timedelta(hours=23, minutes=59)
        await n.schedule_once()
        await send_all(n)
        assert len(not_digests()) == 4
        now[0] = T0 + timedelta(hours=24, seconds=1)
        await n.schedule_once()
        await n.schedule_once()
        await send_all(n)
        reminders = [m for m in smtp.mailbox.messages if m["X-Onevoice-Reminder"]]
        assert [m["X-Onevoice-Alert-Id"] for m in reminders] == [a["alert_id"]]  # not b (acknowledged), not c (medium)
        assert reminders[0]["Subject"] == f"[onevoice] Reminder: CRITICAL · Kappa AG · {a['title']}"
        assert "Half of the time to decide" in reminders[0].get_body(("plain",)).get_content()
        first = next(m for m in smtp.mailbox.messages if m["X-Onevoice-Alert-Id"] == a["alert_id"]
                     and m["X-Onevoice-Alert-Status"] == "open" and not m["X-Onevoice-Reminder"])
        assert reminders[0]["In-Reply-To"] == first["Message-ID"]  # threads under the alert's first mail
        now[0] = T0 + timedelta(hours=40)
        await n.schedule_once()
        await send_all(n)
        n.engine.dispose()
        assert len([m for m in smtp.mailbox.messages if m["X-Onevoice-Reminder"]]) == 1


async def test_preferences_from_the_command_line(sqlite_url, monkeypatch):
    a, b, c = team_and_alerts(sqlite_url, 3)
    monkeypatch.setenv("ONEVOICE_DATABASE_URL", sqlite_url)
    runner = CliRunner()
    result = runner.invoke(app, ["notify", "prefs", "set", "p-kim", "--severities", "critical", "--language", "de",
                                 "--notices"])
    assert result.exit_code == 0, result.output
    assert "severities=critical" in result.output
    assert runner.invoke(app, ["notify", "prefs", "set", "p-kim", "--language", "fr"]).exit_code == 2
    shown = runner.invoke(app, ["notify", "prefs", "show", "p-kim"])
    assert "critical" in shown.output and "de" in shown.output
    notice = {"notice_id": "N-1", "kind": "commitment_made", "key_account_id": "KA", "account_id": "KA", "about": "AG-1",
              "recipients": ["p-kim"], "title": "p-sam agreed AG-1 with Kappa AG", "detail": "…", "caused_by": "erp/n",
              "created_at": T0.isoformat()}
    with SmtpServer() as smtp:
        n = notifier(sqlite_url, smtp.url, [T0])
        DeliveryLog(n.engine, webhooks=[], default_language="en").record(
            [stamped(a, "critical"), stamped(b, "high")], [notice], T0)
        await send_all(n)
        n.engine.dispose()
        mails = smtp.mailbox.messages
    assert sorted(m["X-Onevoice-Alert-Id"] or m["X-Onevoice-Notice-Id"] for m in mails) == sorted([a["alert_id"], "N-1"])
    critical = next(m for m in mails if m["X-Onevoice-Alert-Id"])
    assert critical["Subject"] == f"[onevoice] CRITICAL · Kappa AG · {a['title']}"
    assert critical.get_body(("plain",)).get_content().startswith("Hallo Kim,")
    held = {(r.subject_id, r.channel) for r in delivery_states(sqlite_url) if r.state == "held"}
    assert held == {(b["alert_id"], "digest")}
    # a desk without a team address gets one through its preferences
    assert runner.invoke(app, ["notify", "prefs", "set", "kam-desk", "--email", "desk@corp.example"]).exit_code == 0
    assert runner.invoke(app, ["notify", "prefs", "reset", "p-kim"]).exit_code == 0
    assert "(defaults)" in runner.invoke(app, ["notify", "prefs", "show", "p-kim"]).output

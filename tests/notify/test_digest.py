"""The daily digest: scheduled once per day at the local hour, and readable for a KAM with 200 open alerts."""

from __future__ import annotations

import asyncio

from datetime import datetime, timedelta
from email import message_from_bytes, policy as email_policy

import pytest

from services.config import Settings
from services.notify.service import Notifier
from services.notify.smtp import SmtpSender
from services.notify.webhooks import WebhookSender
from tests.notify.digest_fixture import BERLIN, DAY, KEY_ACCOUNTS, build_digest_store
from tests.notify.harness import BASE_URL, SENDER
from tests.notify.screenshots import screenshot_html
from tests.notify.servers import SmtpServer


def notifier(database_url: str, smtp_url: str, now: list[datetime]) -> Notifier:
    settings = Settings(database_url=database_url, smtp_url=smtp_url, smtp_from=SENDER, web_base_url=BASE_URL,
                        notify_digest_hour=7, notify_time_zone="Europe/Berlin")
    return Notifier(settings, clock=lambda: now[0])


async def send_all(n: Notifier) -> None:
    smtp, hooks = SmtpSender(n.smtp_target), WebhookSender()
    try:
        while await n.send_round(smtp, hooks):
            pass
    finally:
        await smtp.close()
        await hooks.close()


async def digest_mails(database_url: str, language: str | None = None):
    expected = build_digest_store(database_url, language)
    with SmtpServer() as smtp:
        now = [datetime(DAY.year, DAY.month, DAY.day, 6, 59, tzinfo=BERLIN)]
        n = notifier(database_url, smtp.url, now)
        await n.schedule_once()
        await send_all(n)
        before_hour = list(smtp.mailbox.messages)
        now[0] += timedelta(minutes=1, seconds=30)  # 07:00:30 local: today's digest is due
        await n.schedule_once()
        await n.schedule_once()  # a second scheduler round (or process) adds nothing
        await send_all(n)
        n.engine.dispose()
        digests = [m for m in smtp.mailbox.messages if m["X-Onevoice-Digest"]]
    return expected, before_hour, digests


async def test_digest_for_a_kam_with_200_open_alerts(sqlite_url, tmp_path):
    expected, before_hour, digests = await digest_mails(sqlite_url)
    # before 07:00 only yesterday's digest could be due, and it has no notifications in its period
    assert [m["X-Onevoice-Digest"] for m in before_hour if m["X-Onevoice-Digest"]] in ([], ["2027-03-09"])
    todays = [m for m in digests if m["X-Onevoice-Digest"] == DAY.isoformat()]
    assert len(todays) == 1
    mail = todays[0]
    assert mail["To"].addresses[0].addr_spec == "p-kam@example.test"
    assert mail["Subject"] == "[onevoice] Daily digest for 2027-03-10: 205 open, 5 escalated, 7 resolved"
    html = mail.get_body(("html",)).get_content()
    text = mail.get_body(("plain",)).get_content()
    for body in (html, text):
        assert "Open alerts (205)" in body and "Escalated since yesterday (5)" in body
        assert "Resolved or waived since yesterday (7)" in body and "Notices (3)" in body
        for a in expected["open"] + expected["resolved"]:
            assert a["title"] in body and f"{BASE_URL}/alerts/{a['alert_id']}" in body
        for n in expected["notices"]:
            assert n["title"] in body
        assert expected["old"]["title"] not in body  # resolved before the period
        assert all(name in body for name in KEY_ACCOUNTS.values())
    open_part = text.split("== Escalated")[0]
    assert open_part.count("/alerts/") == 205
    # most urgent first: every critical before every high, before medium, before low
    order = [line.split("]")[0].strip(" [") for line in open_part.splitlines() if line.startswith("  [")]
    assert order == sorted(order, key=["CRITICAL", "HIGH", "MEDIUM", "LOW"].index)
    assert "Covers 2027-03-09 07:00 CET to 2027-03-10 07:00 CET (Europe/Berlin)." in text
    assert text.count("(new)") == 200  # opened during the period; the escalated ones are older

    shown = await asyncio.to_thread(screenshot_html, html, tmp_path / "digest.png")
    assert "Open alerts (205)" in shown and expected["open"][0]["title"] in shown  # Chromium rendered the mail
    assert (tmp_path / "digest.png").stat().st_size > 20_000


async def test_digest_in_german(sqlite_url):
    _, _, digests = await digest_mails(sqlite_url, language="de")
    mail = [m for m in digests if m["X-Onevoice-Digest"] == DAY.isoformat()][0]
    assert mail["Subject"] == "[onevoice] Tägliche Übersicht vom 2027-03-10: 205 offen, 5 eskaliert, 7 erledigt"
    assert "Offene Alarme (205)" in mail.get_body(("plain",)).get_content()


def test_the_sample_email_in_docs_is_a_real_one():
    from pathlib import Path
    sample = Path(__file__).resolve().parents[2] / "docs" / "sample-alert-email.eml"
    mail = message_from_bytes(sample.read_bytes(), policy=email_policy.default)
    assert mail["Subject"].startswith("[onevoice] HIGH · ACME Group · ")
    assert mail["X-Onevoice-Alert-Id"] and mail["X-Onevoice-Alert-Status"] == "open"
    assert f"/alerts/{mail['X-Onevoice-Alert-Id']}" in mail.get_body(("plain",)).get_content()


pytest.importorskip("playwright")

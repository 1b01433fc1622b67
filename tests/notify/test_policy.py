"""Who is told what, on which channel, and when (pure policy)."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from services.notify import policy
from services.notify.policy import Preference, Webhook


def alert(status="open", severity="high", **extra):
    return {"alert_id": "A1", "status": status, "severity": severity, "assignee": "p-anna",
            "recipients": ["p-anna", "p-bob", "p-cem"], "key_account_id": "ACME", "rule": "local_price_below_global",
            "created_at": "2027-01-01T10:00:00Z", "updated_at": "2027-01-01T10:00:00Z",
            "due_at": "2027-01-03T10:00:00Z", "data": {}, **extra}


@pytest.mark.parametrize("status,people", [("open", ["p-anna", "p-bob", "p-cem"]), ("escalated", ["p-anna", "p-bob", "p-cem"]),
                                           ("resolved", ["p-anna", "p-bob", "p-cem"]), ("acknowledged", ["p-anna"]),
                                           ("waived", ["p-anna"])])
def test_assignee_always_other_recipients_for_open_escalated_resolved(status, people):
    assert policy.concerned(alert(status)) == people


def test_low_alerts_only_in_the_digest_by_default_and_preferences_change_that():
    low = policy.alert_deliveries(alert(severity="low"), {}, [])
    assert {(d.recipient, d.channel, d.held) for d in low} == {("p-anna", "digest", True), ("p-bob", "digest", True),
                                                               ("p-cem", "digest", True)}
    prefs = {"p-bob": Preference(severities=("low", "medium", "high", "critical")),
             "p-cem": Preference(channels=())}
    high = {d.recipient: d.channel for d in policy.alert_deliveries(alert(), prefs, [])}
    assert high == {"p-anna": "email", "p-bob": "email", "p-cem": "digest"}
    assert {d.recipient: d.channel for d in policy.alert_deliveries(alert(severity="low"), prefs, [])}["p-bob"] == "email"


def test_notices_wait_for_the_digest_unless_asked_for():
    notice = {"notice_id": "N1", "recipients": ["p-anna", "p-bob"], "key_account_id": "ACME"}
    prefs = {"p-bob": Preference(notices=True)}
    assert {(d.recipient, d.channel) for d in policy.notice_deliveries(notice, prefs, [])} == {
        ("p-anna", "digest"), ("p-bob", "email")}


def test_chat_channel_of_the_key_account_else_the_default_one():
    hooks = [Webhook("*", "slack", "https://hooks.example/s"), Webhook("ACME", "teams", "https://hooks.example/t")]
    assert [(d.recipient, d.channel) for d in policy.alert_deliveries(alert(), {}, hooks) if d.recipient.startswith("webhook:")] \
        == [("webhook:ACME", "teams")]
    other = alert(key_account_id="BETA")
    assert [(d.recipient, d.channel) for d in policy.alert_deliveries(other, {}, hooks) if d.recipient.startswith("webhook:")] \
        == [("webhook:*", "slack")]
    assert policy.webhooks_for("BETA", hooks[1:]) == []
    assert "hooks.example" not in repr(hooks)  # the URL holds the secret


def test_webhook_configuration_is_checked():
    with pytest.raises(ValueError):
        policy.parse_webhooks({"*": {"kind": "discord", "url": "https://x"}})
    assert policy.parse_webhooks({"ACME": {"kind": "Teams", "url": "https://x"}})[0].kind == "teams"


def test_reminder_halfway_for_high_and_critical_open_alerts_with_a_deadline():
    assert policy.remind_at(alert()) == "2027-01-02T10:00:00.000000Z"
    assert policy.remind_at(alert(severity="medium")) is None
    assert policy.remind_at(alert(due_at=None)) is None
    assert policy.remind_at(alert(status="resolved")) is None
    assert policy.still_undecided(alert()) and not policy.still_undecided(alert(status="acknowledged"))
    held_dunning = alert(status="acknowledged", rule="key_account_dunning", data={"action": "hold"})
    assert policy.still_undecided(held_dunning)


def test_newer_state_wins_whatever_the_arrival_order():
    assert policy.is_newer(alert("resolved", updated_at="2027-01-02T00:00:00Z"), "open", "2027-01-01T10:00:00Z")
    assert not policy.is_newer(alert("open"), "resolved", "2027-01-02T00:00:00Z")
    assert policy.is_newer(alert("escalated"), "open", "2027-01-01T10:00:00Z")  # same instant: later status


def test_backoff_doubles_up_to_the_cap():
    assert [policy.retry_delay(n, 2, 30) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]


def test_digest_day_and_period_in_local_time():
    berlin_0659 = datetime(2027, 3, 10, 5, 59, tzinfo=timezone.utc)  # 06:59 CET
    assert policy.digest_date_due(berlin_0659, 7, "Europe/Berlin") == date(2027, 3, 9)
    assert policy.digest_date_due(berlin_0659.replace(minute=0, hour=6), 7, "Europe/Berlin") == date(2027, 3, 10)
    assert policy.digest_period(date(2027, 3, 10), 7, "Europe/Berlin") == ("2027-03-09T06:00:00.000000Z",
                                                                             "2027-03-10T06:00:00.000000Z")
    # the summer-time switch (2027-03-28) keeps 07:00 local
    assert policy.digest_period(date(2027, 3, 28), 7, "Europe/Berlin")[1] == "2027-03-28T05:00:00.000000Z"


def test_message_id_is_derived_from_alert_status_and_recipient():
    one = policy.message_id("A1", "open", "p-anna", "corp.example")
    assert one == policy.message_id("A1", "open", "p-anna", "corp.example")
    assert len({one, policy.message_id("A1", "resolved", "p-anna", "corp.example"),
                policy.message_id("A1", "open", "p-bob", "corp.example")}) == 3
    assert one.startswith("<") and one.endswith("@corp.example>")

"""The public scenarios' alerts, fed through Kafka to `notify`, reach each person concerned exactly once."""

from __future__ import annotations

from collections import Counter

import pytest

from services.notify import policy
from services.notify.metrics import NO_ADDRESS
from tests.notify.harness import (BASE_URL, DOMAIN, account_names, create_topics, delivery_states,
                                  expected_alert_mails, mail_key, people_with_address, publish, run_notifiers, settings_for)
from tests.notify.scenario_alerts import all_public_outputs, public_scenarios
from tests.notify.servers import SmtpServer, WebhookReceiver

pytestmark = [pytest.mark.kafka]
NO_ADDRESS_PERSON = "p-gina"  # a dunning assignee: the team event names no e-mail for her


def _store(request, sqlite_url):
    return request.getfixturevalue("postgres_database") if request.param == "postgresql" else sqlite_url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request, sqlite_url):
    return _store(request, sqlite_url)


async def test_each_status_change_reaches_each_person_once(store_url, kafka_bootstrap, topic_prefix):
    alerts, notices = all_public_outputs(store_url, no_address=frozenset({NO_ADDRESS_PERSON}))
    # The processor made the scenarios' expected alerts (so these are the public scenarios' status changes).
    expected_changes = Counter((a["fingerprint"], s, who) for sc in public_scenarios() for a in sc["expect"]["alerts"]
                               for s, who in zip(a["statuses"], a["assignees"]))
    assert Counter((a["fingerprint"], a["status"], a["assignee"]) for a in alerts) == expected_changes
    names = account_names(store_url)
    addressed = people_with_address(store_url)
    assert NO_ADDRESS_PERSON not in addressed
    expected = expected_alert_mails(alerts, addressed.__contains__)
    assert len(expected) >= 20 and any(a["severity"] == "low" for a in alerts)

    await create_topics(kafka_bootstrap, f"{topic_prefix}.alerts", f"{topic_prefix}.notices")
    await publish(kafka_bootstrap, f"{topic_prefix}.alerts", alerts, "assignee")
    await publish(kafka_bootstrap, f"{topic_prefix}.notices", notices, "key_account_id")
    no_address_before = NO_ADDRESS._value.get()

    with SmtpServer() as smtp, WebhookReceiver() as hooks:
        settings = settings_for(database_url=store_url, bootstrap=kafka_bootstrap, prefix=topic_prefix,
                                smtp_url=smtp.url, notify_webhooks={"*": {"kind": "slack", "url": hooks.url("/slack")},
                                                                    "ACME": {"kind": "teams", "url": hooks.url("/teams")}})
        box = smtp.mailbox

        def alert_mails():
            return [m for m in box.messages if m["X-Onevoice-Alert-Id"] and not m["X-Onevoice-Reminder"]]

        # two notifiers in one group share the work
        await run_notifiers(settings, lambda: len(alert_mails()) >= len(expected)
                            and len(hooks.posts) >= len(alerts) + len(notices), count=2, settle=2.0)

        received = Counter(mail_key(m) for m in alert_mails())
        assert set(received) == set(expected), (set(expected) - set(received), set(received) - set(expected))
        assert max(received.values()) == 1, [k for k, n in received.items() if n > 1]
        for mail in alert_mails():
            alert = expected[mail_key(mail)]
            person = mail_key(mail)[2]
            subject = f"[onevoice] {alert['severity'].upper()} · {names[alert['key_account_id']]} · {alert['title']}"
            if alert["status"] != "open":
                subject += {"acknowledged": " — acknowledged", "escalated": " — escalated",
                            "resolved": " — resolved", "waived": " — waived"}[alert["status"]]
            assert mail["Subject"] == subject
            assert mail["Message-ID"] == policy.message_id(alert["alert_id"], alert["status"], person, DOMAIN)
            link = f"{BASE_URL}/alerts/{alert['alert_id']}"
            text = mail.get_body(("plain",)).get_content()
            html = mail.get_body(("html",)).get_content()
            assert link in text and f'href="{link}"' in html
            assert alert["detail"] in text
            assert mail["To"].addresses[0].addr_spec == f"{person}@example.test"
        assert len({m["Message-ID"] for m in alert_mails()}) == len(expected)

        # low alerts wait for the digest; the person without an address is counted, not skipped silently
        rows = delivery_states(store_url)
        held = {(r.subject_id, r.status, r.recipient) for r in rows if r.state == "held"}
        assert {(a["alert_id"], a["status"], a["assignee"]) for a in alerts if a["severity"] == "low"} <= held
        no_address = [r for r in rows if r.state == "no_address"]
        # p-gina's team event names no address, and the fallback assignee (kam-desk) is on no team
        assert no_address and {r.recipient for r in no_address} == {NO_ADDRESS_PERSON, "kam-desk"}
        assert NO_ADDRESS._value.get() - no_address_before == len(no_address)
        # notices: in the digest by default, not mailed
        assert not [m for m in box.messages if m["X-Onevoice-Notice-Id"]]
        assert {(n["notice_id"], p) for n in notices for p in n["recipients"]} == \
            {(r.subject_id, r.recipient) for r in rows if r.kind == "notice" and r.channel == "digest"}

        # chat: one card per alert change and notice, ACME's in its Teams channel, the rest in the default Slack one
        paths = Counter(path for path, _ in hooks.posts)
        assert paths["/teams"] == sum(1 for m in alerts + notices if m["key_account_id"] == "ACME")
        assert paths["/slack"] == sum(1 for m in alerts + notices if m["key_account_id"] != "ACME")
        for path, body in hooks.posts:
            text = str(body)
            assert BASE_URL in text
        alert_cards = [b for p, b in hooks.posts if p == "/slack" and "/alerts/" in b["text"]]
        assert len({b["text"] for b in alert_cards}) == len(alert_cards)

        # the same messages delivered again (a producer retry, a replay) and a restart send nothing more
        before, posts_before = len(box.messages), len(hooks.posts)
        await publish(kafka_bootstrap, f"{topic_prefix}.alerts", alerts, "assignee")
        await run_notifiers(settings, lambda: True, settle=4.0)
        assert len(box.messages) == before and len(hooks.posts) == posts_before

"""What people read: subjects, bodies in English and German, headers, chat cards, the SMTP URL."""

from __future__ import annotations

from email import message_from_bytes, policy as email_policy

import pytest

from services.notify.render import (Person, alert_subject, email_message, render_alert, slack_payload, teams_payload)
from services.notify.smtp import parse_smtp_url

ALERT = {"alert_id": "A-1", "fingerprint": "f", "rule": "local_price_below_global", "severity": "high", "status": "open",
         "key_account_id": "ACME", "account_id": "ACME-IT", "title": "Local price below global (P-100, IT)",
         "detail": "IT price 9.40 EUR is 6 % below the global 10.00 EUR <b>", "evidence": ["G-1", "L-1"],
         "assignee": "p-anna", "recipients": ["p-anna", "p-bob"], "due_at": "2027-01-03T10:00:00Z", "caused_by": "erp/e1",
         "created_at": "2027-01-01T10:00:00Z", "updated_at": "2027-01-01T10:00:00Z", "data": {"gap_pct": "6.00"}}


def test_subject_as_the_issue_shows_it():
    assert alert_subject(ALERT, "ACME Group", language="en") == \
        "[onevoice] HIGH · ACME Group · Local price below global (P-100, IT)"
    assert alert_subject(dict(ALERT, status="escalated"), "ACME Group", language="de").endswith(" — eskaliert")
    assert alert_subject(ALERT, "ACME Group", language="en", reminder=True).startswith("[onevoice] Reminder: HIGH · ")


def test_bodies_carry_evidence_deadline_and_link_in_the_person_s_language():
    de = render_alert(ALERT, Person("p-bob", "Bob", "bob@x.example", "de"), key_account_name="ACME Group",
                      base_url="https://ov.example/", tz="Europe/Berlin")
    assert "Hallo Bob," in de.text and "Entscheiden bis: 2027-01-03 11:00 CET" in de.text
    assert "https://ov.example/alerts/A-1" in de.text and 'href="https://ov.example/alerts/A-1"' in de.html
    assert "G-1" in de.html and "L-1" in de.text and "9.40 EUR" in de.text
    assert "Ihnen zugewiesen" not in de.text  # Bob is a recipient, not the assignee
    en = render_alert(ALERT, Person("p-anna", None, "anna@x.example", "en"), key_account_name="ACME Group",
                      base_url="https://ov.example", tz="Europe/Berlin")
    assert "Hello p-anna," in en.text and "assigned to you" in en.text


def test_html_escapes_what_came_from_events():
    mail = render_alert(ALERT, Person("p-anna", "<script>", "a@x.example", "en"), key_account_name="A & B",
                        base_url="https://ov.example", tz="UTC")
    assert "<script>" not in mail.html and "&lt;script&gt;" in mail.html and "A &amp; B" in mail.html
    assert "detail <b>" not in mail.html and "EUR &lt;b&gt;" in mail.html


def test_headers_and_message_id():
    person = Person("p-anna", "Anna Bürger", "anna@x.example", "de")
    mail = render_alert(ALERT, person, key_account_name="ACME Group", base_url="https://ov.example", tz="UTC")
    out = email_message(mail, sender="onevoice <alerts@corp.example>", person=person, subject_id="A-1", status="open",
                        headers={"X-Onevoice-Alert-Id": "A-1", "X-Onevoice-Alert-Status": "open"})
    raw = out.data
    assert (out.sender, out.recipient) == ("alerts@corp.example", "anna@x.example")
    assert b"\r\nX-Onevoice-Alert-Id: A-1\r\n" in raw and b"\r\nX-Onevoice-Alert-Status: open\r\n" in raw
    assert all(len(line) <= 998 for line in raw.split(b"\r\n")) and raw.isascii()  # 7-bit, RFC 2047 headers
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    received = message_from_bytes(raw, policy=email_policy.default)
    assert received["Subject"] == "[onevoice] HIGH · ACME Group · Local price below global (P-100, IT)"
    assert received["To"].addresses[0].display_name == "Anna Bürger"
    assert received["Message-ID"] == out.message_id and out.message_id.endswith("@corp.example>")
    assert received.get_body(("plain",)).get_content().replace("\r\n", "\n") == mail.text
    assert received.get_body(("html",)).get_content().replace("\r\n", "\n") == mail.html
    assert not received.defects and not any(part.defects for part in received.walk())


def test_chat_cards_link_the_alert():
    slack = slack_payload(ALERT, "ACME Group", "https://ov.example/alerts/A-1", heading="HIGH · open")
    assert "<https://ov.example/alerts/A-1|" in slack["blocks"][0]["text"]["text"] and "ACME Group" in slack["text"]
    teams = teams_payload(ALERT, "ACME Group", "https://ov.example/alerts/A-1", heading="HIGH · open")
    card = teams["attachments"][0]["content"]
    assert teams["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["actions"][0] == {"type": "Action.OpenUrl", "title": "Open in onevoice",
                                  "url": "https://ov.example/alerts/A-1"}


def test_smtp_url():
    t = parse_smtp_url("smtp://mailer:s%40cret@mail.example:587?starttls=true")
    assert (t.host, t.port, t.starttls, t.implicit_tls, t.username, t.password) == \
        ("mail.example", 587, True, False, "mailer", "s@cret")
    assert "s@cret" not in repr(t) and "cret" not in t.safe
    assert parse_smtp_url("smtps://mail.example").port == 465
    assert parse_smtp_url("smtp://127.0.0.1:2525").username is None
    with pytest.raises(ValueError):
        parse_smtp_url("http://mail.example")

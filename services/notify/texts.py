"""The words of every notification, in English and German; everything else is language-free."""

from __future__ import annotations

LANGUAGES = ("en", "de")

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "greeting": "Hello {name},",
        "status.open": "new", "status.acknowledged": "acknowledged", "status.escalated": "escalated",
        "status.resolved": "resolved", "status.waived": "waived",
        "lead.open": "A new alert needs a decision.",
        "lead.acknowledged": "This alert was acknowledged.",
        "lead.escalated": "This alert was not decided in time and has been escalated.",
        "lead.resolved": "This alert is resolved.",
        "lead.waived": "This alert was waived.",
        "lead.reminder": "Half of the time to decide this alert has passed, and it is still undecided.",
        "lead.notice": "For your information (no decision needed):",
        "reminder": "Reminder", "notice": "Notice",
        "status": "Status", "severity": "Severity", "rule": "Rule", "assignee": "Assignee",
        "key_account": "Key account", "account": "Account", "deadline": "Decide by", "no_deadline": "no deadline",
        "evidence": "Evidence", "details": "Details", "caused_by": "Caused by", "open_link": "Open in onevoice",
        "why.assignee": "You receive this because the alert is assigned to you.",
        "why.recipient": "You receive this because you are among the alert's recipients.",
        "why.notice": "You receive this because you are among the notice's recipients.",
        "prefs": "What you receive by mail and what waits for the daily digest: onevoice notify prefs set {person} …",
        "digest.subject": "Daily digest for {date}: {open} open, {escalated} escalated, {resolved} resolved",
        "digest.title": "Your onevoice digest for {date}",
        "digest.open": "Open alerts ({count})", "digest.short_open": "open", "digest.new_mark": "new",
        "digest.escalated": "Escalated since yesterday ({count})",
        "digest.resolved": "Resolved or waived since yesterday ({count})",
        "digest.notices": "Notices ({count})", "digest.none": "nothing", "digest.short_notices": "notices",
        "digest.period": "Covers {since} to {until} ({tz}).",
        "col.severity": "Severity", "col.key_account": "Key account", "col.title": "Alert", "col.status": "Status",
        "col.deadline": "Decide by", "col.assignee": "Assignee",
    },
    "de": {
        "greeting": "Hallo {name},",
        "status.open": "neu", "status.acknowledged": "zur Kenntnis genommen", "status.escalated": "eskaliert",
        "status.resolved": "erledigt", "status.waived": "verworfen",
        "lead.open": "Ein neuer Alarm wartet auf Ihre Entscheidung.",
        "lead.acknowledged": "Dieser Alarm wurde zur Kenntnis genommen.",
        "lead.escalated": "Über diesen Alarm wurde nicht rechtzeitig entschieden; er wurde eskaliert.",
        "lead.resolved": "Dieser Alarm ist erledigt.",
        "lead.waived": "Dieser Alarm wurde verworfen.",
        "lead.reminder": "Die Hälfte der Entscheidungsfrist ist vorbei, und der Alarm ist noch offen.",
        "lead.notice": "Zur Information (keine Entscheidung nötig):",
        "reminder": "Erinnerung", "notice": "Hinweis",
        "status": "Status", "severity": "Schweregrad", "rule": "Regel", "assignee": "Zuständig",
        "key_account": "Key Account", "account": "Kunde", "deadline": "Entscheiden bis", "no_deadline": "keine Frist",
        "evidence": "Belege", "details": "Einzelheiten", "caused_by": "Ausgelöst durch", "open_link": "In onevoice öffnen",
        "why.assignee": "Sie erhalten diese Nachricht, weil der Alarm Ihnen zugewiesen ist.",
        "why.recipient": "Sie erhalten diese Nachricht, weil Sie zu den Empfängern des Alarms gehören.",
        "why.notice": "Sie erhalten diese Nachricht, weil Sie zu den Empfängern des Hinweises gehören.",
        "prefs": "Was per Mail kommt und was auf die tägliche Übersicht wartet: onevoice notify prefs set {person} …",
        "digest.subject": "Tägliche Übersicht vom {date}: {open} offen, {escalated} eskaliert, {resolved} erledigt",
        "digest.title": "Ihre onevoice-Übersicht vom {date}",
        "digest.open": "Offene Alarme ({count})", "digest.short_open": "offen", "digest.new_mark": "neu",
        "digest.escalated": "Seit gestern eskaliert ({count})",
        "digest.resolved": "Seit gestern erledigt oder verworfen ({count})",
        "digest.notices": "Hinweise ({count})", "digest.none": "nichts", "digest.short_notices": "Hinweise",
        "digest.period": "Zeitraum {since} bis {until} ({tz}).",
        "col.severity": "Schweregrad", "col.key_account": "Key Account", "col.title": "Alarm", "col.status": "Status",
        "col.deadline": "Entscheiden bis", "col.assignee": "Zuständig",
    },
}


def words(language: str | None) -> dict[str, str]:
    return TEXTS.get(language or "en", TEXTS["en"])

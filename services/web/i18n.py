"""English and German for the pages: the English text is the key, German the translation.

The language is the one the person chose with the switch (a cookie), else the best of the
browser's Accept-Language, else English. A text without a German entry stays English.
"""

from __future__ import annotations

LANGUAGES = ("en", "de")
LANG_COOKIE = "onevoice_lang"

GERMAN = {
    "My inbox": "Mein Posteingang",
    "Alerts": "Meldungen",
    "Sign in": "Anmelden",
    "Sign out": "Abmelden",
    "Access token": "Zugangstoken",
    "Paste the personal access token that `onevoice token create` printed for you.":
        "Fügen Sie das persönliche Zugangstoken ein, das `onevoice token create` für Sie ausgegeben hat.",
    "That token is unknown, revoked or expired.": "Dieses Token ist unbekannt, widerrufen oder abgelaufen.",
    "Too many failed sign-ins. Try again later.": "Zu viele fehlgeschlagene Anmeldungen. Bitte später erneut versuchen.",
    "The form expired. Please try again.": "Das Formular ist abgelaufen. Bitte erneut versuchen.",
    "Open alerts assigned to me or naming me": "Offene Meldungen, die mir zugewiesen sind oder mich nennen",
    "Nothing waits for you.": "Nichts wartet auf Sie.",
    "Notices": "Hinweise",
    "No notices.": "Keine Hinweise.",
    "Mark read": "Als gelesen markieren",
    "Mark all read": "Alle als gelesen markieren",
    "unread": "ungelesen",
    "read": "gelesen",
    "Severity": "Schwere",
    "Status": "Status",
    "Rule": "Regel",
    "Key account": "Key Account",
    "Key accounts": "Key Accounts",
    "Assignee": "Zuständig",
    "Recipients": "Empfänger",
    "Title": "Titel",
    "Escalates": "Eskaliert",
    "Created": "Erstellt",
    "Updated": "Geändert",
    "Due": "Fällig",
    "any": "alle",
    "open (any)": "offen (alle)",
    "me": "ich",
    "Filter": "Filtern",
    "Next page": "Nächste Seite",
    "No alerts match.": "Keine passenden Meldungen.",
    "in %s": "in %s",
    "overdue by %s": "seit %s überfällig",
    "escalated": "eskaliert",
    "not due": "keine Frist",
    "Decide": "Entscheiden",
    "Comment (optional)": "Kommentar (optional)",
    "You may not decide this alert.": "Sie dürfen über diese Meldung nicht entscheiden.",
    "This alert is closed.": "Diese Meldung ist abgeschlossen.",
    "acknowledge": "zur Kenntnis nehmen",
    "resolve": "erledigen",
    "waive": "verzichten",
    "release": "freigeben",
    "proceed": "fortfahren lassen",
    "Decision sent; waiting for the pipeline…": "Entscheidung gesendet; warte auf die Verarbeitung…",
    "Decision applied.": "Entscheidung angewendet.",
    "Decision rejected": "Entscheidung abgelehnt",
    "pending": "ausstehend",
    "applied": "angewendet",
    "rejected": "abgelehnt",
    "Your decisions": "Ihre Entscheidungen",
    "Evidence": "Belege",
    "History": "Verlauf",
    "When": "Wann",
    "By": "Durch",
    "Caused by": "Ausgelöst durch",
    "Comment": "Kommentar",
    "Instruction to finance/ERP": "Anweisung an Finanzen/ERP",
    "Action": "Aktion",
    "Allocation": "Zuteilung",
    "Order": "Auftrag",
    "Quantity": "Menge",
    "Allocated": "Zugeteilt",
    "Available": "Verfügbar",
    "Agreement": "Vereinbarung",
    "Promotion": "Aktion (Promotion)",
    "Dunning": "Mahnung",
    "Shortage": "Engpass",
    "Account": "Konto",
    "Scope": "Geltung",
    "Country": "Land",
    "Product": "Produkt",
    "Service": "Leistung",
    "Price / terms": "Preis / Bedingungen",
    "Validity": "Gültigkeit",
    "Agreed by": "Vereinbart von",
    "Version": "Version",
    "version %s when raised": "Version %s bei Meldung",
    "active": "aktiv",
    "inactive": "inaktiv",
    "Invoice": "Rechnung",
    "Level": "Stufe",
    "Amount": "Betrag",
    "Due date": "Fälligkeitsdatum",
    "Proposed action": "Vorgeschlagene Maßnahme",
    "Hierarchy": "Hierarchie",
    "Team": "Team",
    "Name": "Name",
    "Role": "Rolle",
    "Active agreements": "Aktive Vereinbarungen",
    "Open alerts": "Offene Meldungen",
    "Recent notices": "Neueste Hinweise",
    "None.": "Keine.",
    "Tier": "Stufe",
    "admin": "Administrator",
    "Not found": "Nicht gefunden",
    "There is nothing here, or you may not see it.": "Hier gibt es nichts, oder Sie dürfen es nicht sehen.",
    "Language": "Sprache",
    "API reference": "API-Referenz",
    "open": "offen",
    "acknowledged": "zur Kenntnis genommen",
    "resolved": "erledigt",
    "waived": "verzichtet",
    "critical": "kritisch",
    "high": "hoch",
    "medium": "mittel",
    "low": "niedrig",
    "Kafka is not reachable; your decision was not sent. Try again.":
        "Kafka ist nicht erreichbar; Ihre Entscheidung wurde nicht gesendet. Bitte erneut versuchen.",
    "Reload to see the outcome.": "Neu laden, um das Ergebnis zu sehen.",
}

TRANSLATIONS = {"en": {}, "de": GERMAN}


def pick_language(cookie: str | None, accept_language: str | None) -> str:
    """The chosen language, else the browser's best supported one by q-value, else English."""
    if cookie in LANGUAGES:
        return cookie
    best, best_q = "en", -1.0
    for index, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        lang = tag.strip().lower().split("-")[0]
        if lang in LANGUAGES and q > best_q and q > 0:
            best, best_q = lang, q - index * 1e-6
    return best


def translator(lang: str):
    table = TRANSLATIONS.get(lang, {})

    def gettext(text: str, *args) -> str:
        translated = table.get(text, text)
        return translated % args if args else translated

    return gettext

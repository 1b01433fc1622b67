"""A KAM with 200 open alerts, a few escalations, resolutions and notices: the digest's worst ordinary day."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.notify.deliveries import DeliveryLog
from services.store import tables as t
from services.store.db import create_tables, make_engine

DAY = date(2027, 3, 10)
BERLIN = ZoneInfo("Europe/Berlin")
KEY_ACCOUNTS = {"ACME": "ACME Group", "BETA": "Beta SA", "GAMMA": "Gamma Holding plc", "DELTA": "Delta Retail GmbH"}
SEVERITIES = ("critical", "high", "medium", "low")


def at(hours_before_digest: float) -> datetime:
    return datetime.combine(DAY, time(7), BERLIN) - timedelta(hours=hours_before_digest)


def alert(i: int, status: str = "open", **extra) -> dict:
    ka = list(KEY_ACCOUNTS)[(i // 4) % len(KEY_ACCOUNTS)]
    severity = SEVERITIES[i % 4]
    created = at(20 + i % 30)
    due = (created + timedelta(hours=48)).isoformat() if severity in ("high", "critical") else None
    message = {"alert_id": f"al-{i:04d}", "fingerprint": f"rule:{ka}:{i}", "rule": "local_price_below_global",
               "severity": severity, "status": status, "key_account_id": ka, "account_id": f"{ka}-IT",
               "title": f"Local price below global (P-{i:04d}, IT)",
               "detail": f"IT price for P-{i:04d} is {3 + i % 9} % below the global price", "evidence": [f"G-{i}", f"L-{i}"],
               "assignee": "p-kam", "recipients": ["p-kam"], "due_at": due, "caused_by": "erp/x",
               "created_at": created.isoformat(), "updated_at": created.isoformat(), "data": {}}
    message.update(extra)
    return message


def build_digest_store(database_url: str, language: str | None = None) -> dict:
    """Store with the day's notifications for p-kam recorded as notify records them; returns what to expect."""
    engine = make_engine(database_url)
    create_tables(engine)
    with engine.begin() as conn:
        for ka, name in KEY_ACCOUNTS.items():
            conn.execute(t.accounts.insert().values(account_id=ka, name=name, country="DE", tier="key", root_id=ka,
                                                    event_time="2027-01-01T00:00:00Z", event_id=f"e-{ka}"))
        conn.execute(t.team_members.insert().values(account_id="ACME", person_id="p-kam", role="global_kam",
                                                    name="Karla Adler", email="p-kam@example.test", present=True,
                                                    event_time="2027-01-01T00:00:00Z", event_id="e-kam"))
    if language:
        from services.notify.prefs import set_preference
        set_preference(engine, "p-kam", language=language)
    log = DeliveryLog(engine, webhooks=[])
    open_alerts = [alert(i) for i in range(200)]
    log.record(open_alerts, [], at(10))
    escalated = [alert(i, "escalated", updated_at=at(5).isoformat()) for i in range(200, 205)]
    log.record([alert(i) for i in range(200, 205)], [], at(30))  # opened before the period
    log.record(escalated, [], at(5))
    resolved = [alert(i, "resolved", updated_at=at(3).isoformat()) for i in range(300, 307)]
    log.record([alert(i) for i in range(300, 307)], [], at(4))
    log.record(resolved, [], at(3))
    notices = [{"notice_id": f"n-{i}", "kind": "commitment_made", "key_account_id": "BETA", "account_id": "BETA",
                "about": f"AGR-{i}", "recipients": ["p-kam"], "title": f"p-sam agreed a local price AGR-{i} with Beta SA",
                "detail": "Local price agreed by sales.", "caused_by": "erp/y", "created_at": at(2).isoformat()}
               for i in range(3)]
    log.record([], notices, at(2))
    old = alert(400, "resolved")
    log.record([alert(400)], [], at(40))
    log.record([old], [], at(30))  # resolved before the period: not in this digest
    engine.dispose()
    return {"open": open_alerts + escalated, "escalated": escalated, "resolved": resolved, "notices": notices,
            "new": open_alerts + [a for a in resolved], "old": old}

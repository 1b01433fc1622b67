"""Rules are symmetric (CONTRACT §4–§5): whatever order agreement events arrive in, one event per
batch, the open alerts at the end are the same, and they are exactly the conflicts that hold for
the final state (the highest version of every agreement)."""

from __future__ import annotations

import json
import tempfile
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from services.config import Settings
from services.domain import Account, Agreement, KeyAccountView, Team, TeamMember
from services.inputs import InputRecord
from services.processor import Processor
from services.rules.agreements import evaluate_key_account
from services.store import tables as t
from services.store.db import create_tables, make_engine

NOW = datetime(2027, 1, 15, 12, 0, tzinfo=timezone.utc)
FALLBACK = "kam-desk"
TEAM = (("gk", "global_kam", None), ("sen", "senior_kam", None), ("lk-it", "local_kam", "IT"),
        ("cm-it", "country_manager", "IT"), ("tech", "technical", None))
ACCOUNTS = (("ACME", None, "DE", "strategic"), ("ACME-IT", "ACME", "IT", "none"))


def _event(eid: str, etype: str, data: dict, minute: int = 0) -> dict:
    return {"specversion": "1.0", "id": eid, "source": "test/order", "type": etype,
            "time": f"2027-01-01T00:{minute:02d}:00Z", "data": data}


def setup_events() -> list[dict]:
    events = [_event(f"acc-{a}", "account.upserted", {"account_id": a, "name": a, "parent_id": p, "country": c,
                                                      "tier": tier}, i)
              for i, (a, p, c, tier) in enumerate(ACCOUNTS)]
    events += [_event(f"team-{p}-{r}", "team.member_assigned", {"account_id": "ACME", "person_id": p, "role": r,
                                                               "country": c}, 10 + i)
               for i, (p, r, c) in enumerate(TEAM)]
    return events


# -- generated agreement events -----------------------------------------------------------------

FROM = ["2026-01-01", "2027-01-01", "2027-06-01"]
TO = [None, "2027-01-10", "2027-06-01", "2027-12-31"]
PEOPLE = st.sampled_from(["gk", "sen", "lk-it", "tech", "outsider"])
ACCOUNT = st.sampled_from(["ACME", "ACME-IT", "ACME-IT", "STRAY"])


@st.composite
def validity(draw) -> dict:
    frm = draw(st.sampled_from(FROM))
    to = draw(st.sampled_from([t for t in TO if t is None or t >= frm]))
    return {"valid_from": frm, "valid_to": to}


@st.composite
def terms(draw, kind: str) -> tuple[str, dict]:
    base = {"account_id": draw(ACCOUNT), "agreed_by": draw(PEOPLE), **draw(validity())}
    if kind == "price":
        scope = draw(st.sampled_from(["global", "local"]))
        return "price.agreed", {**base, "scope": scope, "country": "IT" if scope == "local" else None,
                                "product_id": "P1", "price": draw(st.sampled_from(["90.00", "95.01", "100.00",
                                                                                   "110.00"])),
                                "currency": draw(st.sampled_from(["EUR", "EUR", "EUR", "USD"]))}
    if kind == "contract":
        scope = draw(st.sampled_from(["global", "global", "global", "local"]))
        return "contract.negotiated", {**base, "scope": scope, "country": "IT" if scope == "local" else None,
                                       "contract_type": draw(st.sampled_from(["framework", "framework", "supply"])),
                                       "status": draw(st.sampled_from(["signed", "signed", "draft", "terminated"])),
                                       "region": None}
    charge = draw(st.sampled_from(["paid", "free"]))
    paid = charge == "paid"
    return "service.agreed", {**base, "service_id": "S1", "charge": charge,
                              "price": draw(st.sampled_from(["10.00", "12.00"])) if paid else None,
                              "currency": "EUR" if paid else None}


@st.composite
def agreement_events(draw) -> list[dict]:
    events = []
    n = draw(st.integers(2, 4))
    for index in range(n):
        agreement_id = f"AG{index}"
        kind = draw(st.sampled_from(["price", "contract", "service"]))
        versions = draw(st.sets(st.integers(1, 4), min_size=1, max_size=3))
        for version in sorted(versions):
            eid = f"{agreement_id}-v{version}"
            if version > 1 and draw(st.integers(0, 3)) == 0:
                events.append(_event(eid, "agreement.withdrawn", {"agreement_id": agreement_id, "version": version,
                                                                  "withdrawn_by": "gk"}, 30))
            else:
                etype, data = draw(terms(kind))
                events.append(_event(eid, etype, {"agreement_id": agreement_id, "version": version, **data}, 30))
    return events


# -- running and the oracle ------------------------------------------------------------------

def open_alert_rows_after(events: list[dict]) -> list:
    """Apply setup then `events` one per batch on a fresh SQLite file; the open alert rows."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'order.db'}"
        engine = make_engine(url)
        try:
            create_tables(engine)
            processor = Processor(engine, Settings(database_url=url, fallback_assignee=FALLBACK), clock=lambda: NOW)
            setup = [InputRecord("crm.accounts", 0, i, None, json.dumps(e).encode())
                     for i, e in enumerate(setup_events())]
            processor.process(setup)
            for offset, event in enumerate(events):
                result = processor.process([InputRecord("erp.agreements", 0, offset, None,
                                                        json.dumps(event).encode())])
                assert result.dead_letters == 0, event
            with engine.connect() as conn:
                return conn.execute(select(t.alerts).where(t.alerts.c.status.not_in(["resolved", "waived"]))).all()
        finally:
            engine.dispose()


def open_alerts_after(events: list[dict]) -> list[str]:
    """The open alert fingerprints after `events`."""
    return sorted(r.fingerprint for r in open_alert_rows_after(events))


def expected_fingerprints(events: list[dict]) -> list[str]:
    """The conflicts of the final state, judged by the pure rules (the highest version of each agreement)."""
    latest: dict[str, dict] = {}
    for event in events:
        aid = event["data"]["agreement_id"]
        if aid not in latest or event["data"]["version"] > latest[aid]["data"]["version"]:
            latest[aid] = event
    kinds = {"price.agreed": "price", "contract.negotiated": "contract", "service.agreed": "service"}
    agreements = []
    for event in latest.values():
        data = event["data"]
        if event["type"] == "agreement.withdrawn" or data["account_id"] not in {"ACME", "ACME-IT"}:
            continue
        agreements.append(Agreement(
            data["agreement_id"], data["version"], kinds[event["type"]], data["account_id"], data["agreed_by"],
            date.fromisoformat(data["valid_from"]), data["valid_to"] and date.fromisoformat(data["valid_to"]),
            scope=data.get("scope"), country=data.get("country"), product_id=data.get("product_id"),
            price=Decimal(data["price"]) if data.get("price") else None, currency=data.get("currency"),
            contract_type=data.get("contract_type"), status=data.get("status"), service_id=data.get("service_id"),
            charge=data.get("charge")))
    accounts = {a: Account(a, a, p, c, tier, "ACME") for a, p, c, tier in ACCOUNTS}
    team = Team(tuple(TeamMember(p, r, c) for p, r, c in TEAM))
    view = KeyAccountView(accounts["ACME"], accounts, team, tuple(agreements))
    return sorted(f.fingerprint for f in evaluate_key_account(view, NOW.date(), FALLBACK))


@st.composite
def events_and_permutation(draw):
    events = draw(agreement_events())
    return events, draw(st.permutations(events))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events_and_permutation())
def test_final_open_alerts_do_not_depend_on_arrival_order(case):
    events, permuted = case
    expected = expected_fingerprints(events)
    assert open_alerts_after(events) == expected
    assert open_alerts_after(permuted) == expected


def test_oracle_sees_a_known_conflict():
    """The property above is not vacuous: a plain pair of global contracts is one alert."""
    events = [_event(f"C{i}", "contract.negotiated", {
        "agreement_id": f"C{i}", "version": 1, "account_id": "ACME", "scope": "global", "country": None,
        "contract_type": "framework", "status": "signed", "valid_from": "2027-01-01", "valid_to": None,
        "agreed_by": "gk", "region": None}) for i in (1, 2)]
    assert open_alerts_after(events) == expected_fingerprints(events) == ["duplicate_global_contract:ACME:C1|C2"]
    assert open_alerts_after(events[::-1]) == ["duplicate_global_contract:ACME:C1|C2"]


def _local_price(version: int, amount: str) -> dict:
    return _event(f"L-v{version}", "price.agreed", {
        "agreement_id": "L", "version": version, "account_id": "ACME-IT", "scope": "local", "country": "IT",
        "product_id": "P1", "price": amount, "currency": "EUR", "valid_from": "2027-01-01", "valid_to": None,
        "agreed_by": "lk-it"})


def open_alert_terms_after(events: list[dict]) -> list[tuple]:
    return sorted((r.fingerprint, r.severity, r.due_at is not None) for r in open_alert_rows_after(events))


def test_open_alert_severity_does_not_depend_on_arrival_order():
    """A newer version that changes the gap updates the open alert's severity and due date (no new message)."""
    glob = _event("G-v1", "price.agreed", {
        "agreement_id": "G", "version": 1, "account_id": "ACME", "scope": "global", "country": None,
        "product_id": "P1", "price": "100.00", "currency": "EUR", "valid_from": "2027-01-01", "valid_to": None,
        "agreed_by": "gk"})
    in_order = open_alert_terms_after([glob, _local_price(1, "97.00"), _local_price(2, "90.00")])
    newest_first = open_alert_terms_after([glob, _local_price(2, "90.00"), _local_price(1, "97.00")])
    assert newest_first == [("local_price_below_global:ACME:G|L", "high", True)]
    assert in_order == newest_first

"""Rules are symmetric (CONTRACT §4–§5): whatever order agreement events arrive in, one event per
batch, the open alerts at the end are the same, and they are exactly the conflicts that hold for
the final state (the highest version of every agreement).

The expectation comes from the contract, not from the code under test: `expected_fingerprints` is
the contract's rules written out again for this test's small world (no import from services/rules),
and the boundary cases below (equal prices, a validity ending today or yesterday, periods meeting
on one day, the 5 % severity step, decision rights) have hand-written answers."""

from __future__ import annotations

import json
import tempfile
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from services.config import Settings
from services.inputs import InputRecord
from services.processor import Processor
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


# The oracle: CONTRACT §4–§5 written out again for this small world, sharing no code with services/rules.
# ACME (DE, strategic) is the key account; ACME-IT (IT) is its subsidiary; STRAY is unknown (tier none).
KEY_ACCOUNT_MEMBERS = {"ACME", "ACME-IT"}
RIGHTS_GLOBAL = {"gk", "sen"}  # global_kam, senior_kam (no executive_sponsor in this team)
RIGHTS_LOCAL_IT = {"gk", "sen", "lk-it", "cm-it"}  # + local_kam / country_manager of IT
TEAM_MEMBERS = {"gk", "sen", "lk-it", "cm-it", "tech"}
TODAY = NOW.date().isoformat()


def _overlap(a: dict, b: dict) -> bool:
    """Inclusive periods; no valid_to is open-ended (ISO dates compare as text)."""
    return a["valid_from"] <= (b["valid_to"] or "9999-12-31") and b["valid_from"] <= (a["valid_to"] or "9999-12-31")


def _authorised(kind: str, data: dict) -> bool:
    person = data["agreed_by"]
    if kind == "service":
        return person in (TEAM_MEMBERS if data["charge"] == "paid" else RIGHTS_GLOBAL)
    if data["scope"] == "local" and data["country"] == "IT":
        return person in RIGHTS_LOCAL_IT
    return person in RIGHTS_GLOBAL


def expected_fingerprints(events: list[dict]) -> list[str]:
    """The open alerts the contract asks for once every event is applied, whatever their order."""
    latest: dict[str, dict] = {}
    for event in events:  # the highest version of each agreement is its state; a withdrawal is a version
        aid = event["data"]["agreement_id"]
        if aid not in latest or event["data"]["version"] > latest[aid]["data"]["version"]:
            latest[aid] = event
    kinds = {"price.agreed": "price", "contract.negotiated": "contract", "service.agreed": "service"}
    active = []  # (id, kind, data) of the key account's active agreements
    for aid, event in latest.items():
        data = event["data"]
        if event["type"] == "agreement.withdrawn" or data["account_id"] not in KEY_ACCOUNT_MEMBERS:
            continue
        if event["type"] == "contract.negotiated" and data["status"] != "signed":
            continue
        if data["valid_to"] is not None and data["valid_to"] < TODAY:
            continue
        active.append((aid, kinds[event["type"]], data))
    found = set()
    for i, (a, kind_a, da) in enumerate(active):
        if not _authorised(kind_a, da):
            found.add(f"unauthorized_commitment:ACME:{a}")
        for b, kind_b, db in active[i + 1:]:
            pair = "|".join(sorted((a, b)))
            if kind_a != kind_b or not _overlap(da, db):
                continue
            if kind_a == "contract" and da["scope"] == db["scope"] == "global" \
                    and da["contract_type"] == db["contract_type"]:
                found.add(f"duplicate_global_contract:ACME:{pair}")
            if kind_a == "price" and {da["scope"], db["scope"]} == {"global", "local"} \
                    and da["product_id"] == db["product_id"] and da["currency"] == db["currency"]:
                glob, local = (da, db) if da["scope"] == "global" else (db, da)
                if Decimal(local["price"]) != Decimal(glob["price"]):
                    below = Decimal(local["price"]) < Decimal(glob["price"])
                    found.add(f"local_price_{'below' if below else 'above'}_global:ACME:{pair}")
            if kind_a == "service" and da["service_id"] == db["service_id"] and da["agreed_by"] != db["agreed_by"] \
                    and (da["charge"] != db["charge"] or (da["charge"] == "paid" and (
                        Decimal(da["price"]) != Decimal(db["price"]) or da["currency"] != db["currency"]))):
                found.add(f"contradicting_service_terms:ACME:{pair}")
    return sorted(found)


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


# -- boundaries, with hand-written answers -------------------------------------------------------------

def _price(aid: str, scope: str, amount: str, *, currency: str = "EUR", by: str = "gk", frm: str = "2027-01-01",
           to: str | None = None) -> dict:
    return _event(f"{aid}-v1", "price.agreed", {
        "agreement_id": aid, "version": 1, "account_id": "ACME" if scope == "global" else "ACME-IT", "scope": scope,
        "country": "IT" if scope == "local" else None, "product_id": "P1", "price": amount, "currency": currency,
        "valid_from": frm, "valid_to": to, "agreed_by": by})


def _contract(aid: str, *, frm: str = "2027-01-01", to: str | None = None, by: str = "gk") -> dict:
    return _event(f"{aid}-v1", "contract.negotiated", {
        "agreement_id": aid, "version": 1, "account_id": "ACME", "scope": "global", "country": None,
        "contract_type": "framework", "status": "signed", "valid_from": frm, "valid_to": to, "agreed_by": by,
        "region": None})


def _service(aid: str, charge: str, by: str, price: str = "10.00") -> dict:
    paid = charge == "paid"
    return _event(f"{aid}-v1", "service.agreed", {
        "agreement_id": aid, "version": 1, "account_id": "ACME", "service_id": "S1", "charge": charge,
        "price": price if paid else None, "currency": "EUR" if paid else None, "valid_from": "2027-01-01",
        "valid_to": None, "agreed_by": by})


BOUNDARY_CASES = {
    # prices: equal is no conflict; a cent either way is; another currency is never compared
    "equal prices": ([_price("G", "global", "100.00"), _price("L", "local", "100.00", by="lk-it")], []),
    "a cent above": ([_price("G", "global", "100.00"), _price("L", "local", "100.01", by="lk-it")],
                     [("local_price_above_global:ACME:G|L", "high")]),
    "a cent below": ([_price("G", "global", "100.00"), _price("L", "local", "99.99", by="lk-it")],
                     [("local_price_below_global:ACME:G|L", "medium")]),
    "a gap of exactly 5 % is high": ([_price("G", "global", "100.00"), _price("L", "local", "95.00", by="lk-it")],
                                     [("local_price_below_global:ACME:G|L", "high")]),
    "a gap of 4.99 % is medium": ([_price("G", "global", "100.00"), _price("L", "local", "95.01", by="lk-it")],
                                  [("local_price_below_global:ACME:G|L", "medium")]),
    "another currency": ([_price("G", "global", "100.00"), _price("L", "local", "90.00", currency="USD",
                                                                   by="lk-it")], []),
    # validity: inclusive, judged on today's date (2027-01-15)
    "valid until today": ([_contract("C1"), _contract("C2", to="2027-01-15")],
                          [("duplicate_global_contract:ACME:C1|C2", "critical")]),
    "valid until yesterday": ([_contract("C1"), _contract("C2", to="2027-01-14")], []),
    "periods meeting on one day": ([_contract("C1", to="2027-06-01"), _contract("C2", frm="2027-06-01")],
                                   [("duplicate_global_contract:ACME:C1|C2", "critical")]),
    "periods a day apart": ([_contract("C1", to="2027-06-01"), _contract("C2", frm="2027-06-02")], []),
    "a price agreed today and valid from a later day is active": (
        [_price("G", "global", "100.00", frm="2027-06-01"), _price("L", "local", "90.00", by="lk-it")],
        [("local_price_below_global:ACME:G|L", "high")]),
    # decision rights
    "local price by the country manager of its country": ([_price("L", "local", "90.00", by="cm-it")], []),
    "local price by a technical member": ([_price("L", "local", "90.00", by="tech")],
                                          [("unauthorized_commitment:ACME:L", "medium")]),
    "global price by a local KAM": ([_price("G", "global", "90.00", by="lk-it")],
                                    [("unauthorized_commitment:ACME:G", "medium")]),
    "paid service by a technical member": ([_service("S", "paid", "tech")], []),
    "free service by a local KAM": ([_service("S", "free", "lk-it")], [("unauthorized_commitment:ACME:S", "medium")]),
    "free service by the senior KAM": ([_service("S", "free", "sen")], []),
    "commitment by someone outside the team": ([_contract("C1", by="outsider")],
                                                [("unauthorized_commitment:ACME:C1", "medium")]),
    # services: same terms by two people are no conflict; another price is
    "same paid terms, two people": ([_service("S1x", "paid", "gk"), _service("S2x", "paid", "sen")], []),
    "paid at two prices": ([_service("S1x", "paid", "gk"), _service("S2x", "paid", "sen", price="12.00")],
                           [("contradicting_service_terms:ACME:S1x|S2x", "high")]),
}


@pytest.mark.parametrize("name", list(BOUNDARY_CASES))
def test_rule_boundaries_in_either_order(name):
    events, expected = BOUNDARY_CASES[name]
    for order in (events, events[::-1]):
        assert sorted((r.fingerprint, r.severity) for r in open_alert_rows_after(order)) == sorted(expected)
    assert expected_fingerprints(events) == sorted(f for f, _ in expected)  # the oracle agrees with the answers

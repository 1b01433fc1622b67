"""Key-account exceptions of CONTRACT §5: dunning instructions and scarce-stock allocation."""

from __future__ import annotations

import pytest

from schemas.finance import DunningTriggered
from schemas.stock import StockShortage
from services.domain import Account, Team, TeamMember
from services.rules.exceptions import allocate, is_shortage, judge_dunning, stock_findings

FALLBACK = "kam-desk"

TEAM = Team((
    TeamMember("gk", "global_kam"),
    TeamMember("sen", "senior_kam"),
    TeamMember("lk-it", "local_kam", "IT"),
    TeamMember("lk-it-2", "local_kam", "IT"),
    TeamMember("lk-de", "local_kam", "DE"),
    TeamMember("fin-b", "finance"),
    TeamMember("fin-a", "finance", "IT"),
))

ACME = Account("ACME", "ACME Group", None, "DE", "strategic", "ACME")
ACME_IT = Account("ACME-IT", "ACME Italia", "ACME", "IT", "none", "ACME")
ACME_FR = Account("ACME-FR", "ACME France", "ACME", "FR", "none", "ACME")


def dunning(action: str, account_id: str = "ACME-IT", dunning_id: str = "DUN-1") -> DunningTriggered:
    return DunningTriggered.model_validate({
        "dunning_id": dunning_id, "account_id": account_id, "invoice_id": "INV-1", "level": 2,
        "amount": "1200.00", "currency": "EUR", "due_date": "2027-01-31", "proposed_action": action})


# -- dunning --------------------------------------------------------------------------------

@pytest.mark.parametrize("action, instruction, severity", [
    ("delivery_block", "hold", "high"), ("collection", "hold", "high"), ("reminder", "proceed", "low")])
def test_key_account_dunning(action, instruction, severity):
    outcome = judge_dunning(dunning(action), ACME_IT, ACME, TEAM, FALLBACK)
    assert outcome.action == instruction
    f = outcome.finding
    assert f is not None
    assert f.rule == "key_account_dunning"
    assert f.severity == severity
    assert f.fingerprint == "key_account_dunning:ACME:DUN-1"
    assert f.key_account_id == "ACME"
    assert f.account_id == "ACME-IT"
    assert f.evidence == ("DUN-1",)
    assert f.data["instruction"] == instruction


@pytest.mark.parametrize("action", ["reminder", "delivery_block", "collection"])
def test_dunning_of_no_key_account_proceeds_without_alert(action):
    standalone = Account("SOLO", "Solo Srl", None, "IT", "none", "SOLO")
    outcome = judge_dunning(dunning(action, "SOLO"), standalone, None, Team(), FALLBACK)
    assert outcome.action == "proceed"
    assert outcome.finding is None
    outcome = judge_dunning(dunning(action, "UNKNOWN"), None, None, Team(), FALLBACK)
    assert outcome.action == "proceed"
    assert outcome.finding is None


def test_dunning_assignee_is_local_kam_of_the_dunned_country_smallest_id():
    f = judge_dunning(dunning("collection"), ACME_IT, ACME, TEAM, FALLBACK).finding
    assert f.assignee == "lk-it"


def test_dunning_assignee_falls_back_to_global_order():
    assert judge_dunning(dunning("collection", "ACME-FR"), ACME_FR, ACME, TEAM, FALLBACK).finding.assignee == "gk"
    team = Team((TeamMember("sen", "senior_kam"), TeamMember("lk-it", "local_kam", "IT")))
    assert judge_dunning(dunning("collection", "ACME-FR"), ACME_FR, ACME, team, FALLBACK).finding.assignee == "sen"
    assert judge_dunning(dunning("reminder", "ACME-FR"), ACME_FR, ACME, Team(), FALLBACK).finding.assignee == FALLBACK


def test_dunning_of_the_key_account_root_uses_its_country():
    team = Team((TeamMember("gk", "global_kam"), TeamMember("lk-de", "local_kam", "DE")))
    assert judge_dunning(dunning("collection", "ACME"), ACME, ACME, team, FALLBACK).finding.assignee == "lk-de"


def test_dunning_recipients_are_assignee_and_finance():
    f = judge_dunning(dunning("delivery_block"), ACME_IT, ACME, TEAM, FALLBACK).finding
    assert f.recipients == ("fin-a", "fin-b", "lk-it")
    f = judge_dunning(dunning("reminder"), ACME_IT, ACME, Team(), FALLBACK).finding
    assert f.recipients == (FALLBACK,)


# -- allocation -----------------------------------------------------------------------------

def shortage(available: int, *orders: tuple) -> StockShortage:
    return StockShortage.model_validate({"item_id": "ITEM-1", "available_qty": available, "orders": [
        {"order_id": o, "account_id": a, "qty": q, "ordered_at": at} for o, a, q, at in orders]})


def test_allocation_ranks_by_tier_first():
    s = shortage(10, ("o-none", "X", 5, "2027-01-01T00:00:00Z"), ("o-key", "K", 5, "2027-01-03T00:00:00Z"),
                 ("o-corp", "C", 5, "2027-01-05T00:00:00Z"), ("o-strat", "S", 5, "2027-01-04T00:00:00Z"),
                 ("o-ik", "I", 5, "2027-01-02T00:00:00Z"))
    tiers = {"o-key": "key", "o-corp": "corporate_strategic", "o-strat": "strategic", "o-ik": "international_key"}
    assert allocate(s.orders, s.available_qty, tiers) == [
        ("o-corp", 5), ("o-strat", 5), ("o-ik", 0), ("o-key", 0), ("o-none", 0)]


def test_allocation_then_by_order_time_as_instant_then_order_id():
    s = shortage(6, ("o-c", "A", 3, "2027-01-01T10:00:00Z"),
                 ("o-b", "A", 3, "2027-01-01T10:00:00Z"),
                 ("o-a", "A", 3, "2027-01-01T11:30:00+02:00"))  # 09:30Z: earliest despite its text
    tiers = {o.order_id: "key" for o in s.orders}
    assert allocate(s.orders, s.available_qty, tiers) == [("o-a", 3), ("o-b", 3), ("o-c", 0)]


def test_allocation_min_of_qty_and_what_is_left():
    s = shortage(7, ("o1", "A", 4, "2027-01-01T00:00:00Z"), ("o2", "A", 5, "2027-01-02T00:00:00Z"),
                 ("o3", "A", 1, "2027-01-03T00:00:00Z"))
    assert allocate(s.orders, s.available_qty, {}) == [("o1", 4), ("o2", 3), ("o3", 0)]


def test_allocation_nothing_available():
    s = shortage(0, ("o1", "A", 4, "2027-01-01T00:00:00Z"), ("o2", "A", 5, "2027-01-02T00:00:00Z"))
    assert allocate(s.orders, s.available_qty, {}) == [("o1", 0), ("o2", 0)]


@pytest.mark.parametrize("available, expected", [(8, True), (9, False), (10, False)])
def test_is_shortage_only_when_orders_exceed_available(available, expected):
    s = shortage(available, ("o1", "A", 4, "2027-01-01T00:00:00Z"), ("o2", "A", 5, "2027-01-02T00:00:00Z"))
    assert is_shortage(s) is expected


def test_stock_findings_one_per_key_account_high_if_short():
    s = shortage(6, ("o1", "ACME-IT", 4, "2027-01-01T00:00:00Z"), ("o2", "ACME", 2, "2027-01-02T00:00:00Z"),
                 ("o3", "BETA", 3, "2027-01-03T00:00:00Z"), ("o4", "SOLO", 1, "2027-01-01T00:00:00Z"))
    beta = Account("BETA", "Beta", None, "FR", "key", "BETA")
    key_account_of_order = {"o1": ACME, "o2": ACME, "o3": beta}
    tiers = {o: ka.tier for o, ka in key_account_of_order.items()}
    allocation = allocate(s.orders, s.available_qty, tiers)
    assert allocation == [("o1", 4), ("o2", 2), ("o3", 0), ("o4", 0)]
    teams = {"ACME": TEAM}
    found = {f.key_account_id: f for f in stock_findings(s, allocation, key_account_of_order, teams, FALLBACK)}
    assert set(found) == {"ACME", "BETA"}
    assert found["ACME"].severity == "low"
    assert found["BETA"].severity == "high"
    assert found["ACME"].fingerprint == "scarce_stock_allocation:ACME:ITEM-1"
    assert found["BETA"].fingerprint == "scarce_stock_allocation:BETA:ITEM-1"
    assert found["ACME"].assignee == "gk"
    assert found["BETA"].assignee == FALLBACK


def test_stock_findings_none_without_key_account_orders():
    s = shortage(1, ("o1", "X", 4, "2027-01-01T00:00:00Z"))
    assert stock_findings(s, allocate(s.orders, 1, {}), {}, {}, FALLBACK) == []


# -- through the processor: a shortage that is none yields nothing ----------------------------

def _process(sqlite_url: str, events: list[dict]) -> list[tuple[str, dict]]:
    import json

    from sqlalchemy import select

    from schemas.registry import TOPIC_BY_TYPE
    from services.config import Settings
    from services.inputs import InputRecord
    from services.processor import Processor
    from services.store import tables as t
    from services.store.db import create_tables, make_engine

    engine = make_engine(sqlite_url)
    create_tables(engine)
    processor = Processor(engine, Settings(database_url=sqlite_url))
    for offset, event in enumerate(events):
        processor.process([InputRecord(TOPIC_BY_TYPE[event["type"]], 0, offset, None, json.dumps(event).encode())])
    with engine.connect() as conn:
        rows = conn.execute(select(t.outbox).order_by(t.outbox.c.id)).all()
    engine.dispose()
    return [(r.topic, json.loads(r.value)) for r in rows]


def _event(eid: str, etype: str, data: dict, topic_time: str = "2027-01-01T00:00:00Z") -> dict:
    return {"specversion": "1.0", "id": eid, "source": "test/exceptions", "type": etype, "time": topic_time,
            "data": data}


@pytest.mark.parametrize("available", [9, 10])
def test_processor_no_shortage_yields_nothing(sqlite_url, available):
    events = [
        _event("a1", "account.upserted", {"account_id": "ACME", "name": "ACME", "parent_id": None, "country": "DE",
                                          "tier": "strategic"}),
        _event("s1", "stock.shortage", {"item_id": "ITEM-1", "available_qty": available, "orders": [
            {"order_id": "o1", "account_id": "ACME", "qty": 4, "ordered_at": "2027-01-01T00:00:00Z"},
            {"order_id": "o2", "account_id": "X", "qty": 5, "ordered_at": "2027-01-01T00:00:00Z"}]}),
    ]
    assert _process(sqlite_url, events) == []


def test_processor_shortage_yields_one_allocation_in_rank_order(sqlite_url):
    events = [
        _event("a1", "account.upserted", {"account_id": "ACME", "name": "ACME", "parent_id": None, "country": "DE",
                                          "tier": "strategic"}),
        _event("s1", "stock.shortage", {"item_id": "ITEM-1", "available_qty": 6, "orders": [
            {"order_id": "o-x", "account_id": "X", "qty": 5, "ordered_at": "2026-12-01T00:00:00Z"},
            {"order_id": "o-acme", "account_id": "ACME", "qty": 4, "ordered_at": "2027-01-01T00:00:00Z"}]}),
    ]
    out = _process(sqlite_url, events)
    instructions = [v for topic, v in out if topic == "kam.instructions"]
    assert [(i["action"], i["allocation"]) for i in instructions] == [
        ("allocate", [{"order_id": "o-acme", "qty": 4}, {"order_id": "o-x", "qty": 2}])]
    alerts = [v for topic, v in out if topic == "kam.alerts"]
    assert [(a["fingerprint"], a["severity"]) for a in alerts] == [("scarce_stock_allocation:ACME:ITEM-1", "low")]

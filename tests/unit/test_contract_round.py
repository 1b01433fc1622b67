"""The behaviours CONTRACT §2, §5 and §6 added or sharpened this round, each through the real processor and
store (SQLite here; the batch-split and scenario tests run them on PostgreSQL too).

Each test failed on the code before its fix: the cause named the first event of the batch, the
escalated assignee was missing from the recipients, a released dunning alert still said "hold",
a relieved item kept its shortage alerts open, a conflicting duplicate was dropped silently, and
there were no notices or handover alerts at all.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from schemas.registry import TOPIC_BY_TYPE
from services.config import Settings
from services.inputs import InputRecord
from services.processor import Processor
from services.store import tables as t
from services.store.db import create_tables, make_engine
from services.timers import EscalationTimer

START = datetime(2027, 1, 10, 9, 0, tzinfo=timezone.utc)


class Harness:
    """One store, one processor, a clock, and every event on its own topic with its own offset."""

    def __init__(self, url: str, window_s: float = 3600):
        self.engine = make_engine(url)
        create_tables(self.engine)
        self.now = START
        settings = Settings(database_url=url, decision_window_s=window_s)
        self.processor = Processor(self.engine, settings, clock=lambda: self.now)
        self.timer = EscalationTimer(self.engine, settings, clock=lambda: self.now)
        self.offsets: dict[str, int] = {}
        self.count = 0

    def event(self, etype: str, data: dict, *, event_id: str | None = None, time: str | None = None) -> dict:
        self.count += 1
        return {"specversion": "1.0", "id": event_id or f"ev-{self.count}", "source": "test/round", "type": etype,
                "time": time or f"2027-01-01T00:{self.count // 60:02d}:{self.count % 60:02d}Z", "data": data}

    def record(self, event: dict, topic: str | None = None) -> InputRecord:
        topic = topic or TOPIC_BY_TYPE[event["type"]]
        offset = self.offsets[topic] = self.offsets.get(topic, -1) + 1
        return InputRecord(topic, 0, offset, None, json.dumps(event).encode())

    def send(self, *events: dict):
        return self.processor.process([self.record(e) for e in events])

    def outputs(self, topic: str) -> list[dict]:
        with self.engine.connect() as conn:
            return [json.loads(r.value) for r in conn.execute(
                select(t.outbox).where(t.outbox.c.topic == topic).order_by(t.outbox.c.id))]


def account(h: Harness, account_id: str, tier: str = "strategic", parent: str | None = None, country: str = "DE"):
    return h.event("account.upserted", {"account_id": account_id, "name": f"{account_id} Group", "parent_id": parent,
                                        "country": country, "tier": tier})


def member(h: Harness, account_id: str, person: str, role: str, country: str | None = None):
    return h.event("team.member_assigned", {"account_id": account_id, "person_id": person, "role": role,
                                            "country": country, "name": f"Name of {person}", "email": None})


def contract(h: Harness, agreement_id: str, account_id: str, agreed_by: str = "p-g", version: int = 1):
    return h.event("contract.negotiated", {
        "agreement_id": agreement_id, "version": version, "account_id": account_id, "scope": "global",
        "country": None, "contract_type": "framework", "status": "signed", "valid_from": "2027-01-01",
        "valid_to": None, "agreed_by": agreed_by, "region": None})


def local_price(h: Harness, agreement_id: str, account_id: str, country: str, agreed_by: str, price: str = "90.00"):
    return h.event("price.agreed", {
        "agreement_id": agreement_id, "version": 1, "account_id": account_id, "scope": "local", "country": country,
        "product_id": "P-1", "price": price, "currency": "EUR", "valid_from": "2027-01-01", "valid_to": None,
        "agreed_by": agreed_by})


def shortage(h: Harness, item: str, available: int, orders: list[tuple[str, str, int]], **kw):
    return h.event("stock.shortage", {"item_id": item, "available_qty": available, "orders": [
        {"order_id": o, "account_id": a, "qty": q, "ordered_at": "2027-01-01T00:00:00Z"} for o, a, q in orders]}, **kw)


# -- exact causes ----------------------------------------------------------------------------------

def test_an_alert_names_the_event_that_caused_it_not_the_first_of_its_batch(sqlite_url):
    h = Harness(sqlite_url)
    h.send(account(h, "K-US"), member(h, "K-US", "p-g", "global_kam"), account(h, "ACME-IT", country="IT"))
    unrelated, first, second = (local_price(h, "IT-1", "ACME-IT", "IT", "p-x"), contract(h, "C-1", "K-US"),
                                contract(h, "C-2", "K-US"))
    later_same_key_account = member(h, "K-US", "p-t", "technical")
    h.send(unrelated, first, second, later_same_key_account)
    [alert] = [a for a in h.outputs("kam.alerts") if a["rule"] == "duplicate_global_contract"]
    assert alert["caused_by"] == f"test/round/{second['id']}"


# -- escalation and decisions ----------------------------------------------------------------------

def test_an_escalated_alert_lists_its_new_assignee_among_the_recipients(sqlite_url):
    h = Harness(sqlite_url, window_s=60)
    h.send(account(h, "K"), member(h, "K", "p-g", "global_kam"), member(h, "K", "p-s", "senior_kam"),
           contract(h, "C-1", "K"), contract(h, "C-2", "K"))
    h.now += timedelta(seconds=61)
    assert h.timer.escalate_due() == 1
    escalated = h.outputs("kam.alerts")[-1]
    assert (escalated["status"], escalated["assignee"]) == ("escalated", "p-s")
    assert escalated["recipients"] == ["p-g", "p-s"]


def test_a_released_dunning_alert_says_who_decided_what_and_why(sqlite_url):
    h = Harness(sqlite_url)
    h.send(account(h, "K"), member(h, "K", "p-l", "local_kam", "DE"), h.event("dunning.triggered", {
        "dunning_id": "D-1", "account_id": "K", "invoice_id": "I-1", "level": 2, "amount": "100.00",
        "currency": "EUR", "due_date": "2027-01-01", "proposed_action": "delivery_block"}))
    [opened] = h.outputs("kam.alerts")
    assert opened["data"]["instruction"] == "hold"
    h.send(h.event("decision.made", {"alert_id": opened["alert_id"], "decision": "release", "decided_by": "p-l",
                                     "comment": "paid by wire yesterday"}))
    resolved = h.outputs("kam.alerts")[-1]
    assert resolved["status"] == "resolved"
    assert {k: resolved["data"][k] for k in ("instruction", "decided_by", "comment")} == {
        "instruction": "release", "decided_by": "p-l", "comment": "paid by wire yesterday"}
    assert [i["action"] for i in h.outputs("kam.instructions")] == ["hold", "release"]
    with h.engine.connect() as conn:
        history = conn.execute(select(t.alert_history.c.status, t.alert_history.c.decided_by,
                                      t.alert_history.c.comment).order_by(t.alert_history.c.id)).all()
        outcome = conn.execute(select(t.decision_outcomes.c.status)).scalar_one()
    assert [tuple(r) for r in history] == [("open", None, None), ("resolved", "p-l", "paid by wire yesterday")]
    assert outcome == "applied"


def test_a_refused_decision_is_recorded_as_rejected_with_its_code(sqlite_url):
    h = Harness(sqlite_url)
    h.send(account(h, "K"), member(h, "K", "p-g", "global_kam"), member(h, "K", "p-f", "finance"),
           contract(h, "C-1", "K"), contract(h, "C-2", "K"))
    [alert] = h.outputs("kam.alerts")
    h.send(h.event("decision.made", {"alert_id": alert["alert_id"], "decision": "resolve", "decided_by": "p-f"}))
    with h.engine.connect() as conn:
        row = conn.execute(select(t.decision_outcomes)).one()
    assert (row.status, row.code) == ("rejected", "unauthorized_decision")
    assert [d["error"]["code"] for d in h.outputs("kam.dlq")] == ["unauthorized_decision"]


# -- stock relief ----------------------------------------------------------------------------------

def test_a_newer_report_without_shortage_resolves_the_older_alerts(sqlite_url):
    h = Harness(sqlite_url)
    h.send(account(h, "K1"), account(h, "K2"))
    h.send(shortage(h, "ITEM", 2, [("o1", "K1", 5), ("o2", "K2", 5)], time="2027-01-02T00:00:00Z"))
    assert [(a["key_account_id"], a["status"]) for a in h.outputs("kam.alerts")] == [("K1", "open"), ("K2", "open")]
    relief = shortage(h, "ITEM", 50, [("o3", "K1", 5)], time="2027-01-03T00:00:00Z")
    h.send(relief)
    closing = h.outputs("kam.alerts")[2:]
    assert sorted((a["key_account_id"], a["status"], a["caused_by"]) for a in closing) == [
        ("K1", "resolved", f"test/round/{relief['id']}"), ("K2", "resolved", f"test/round/{relief['id']}")]
    assert len(h.outputs("kam.instructions")) == 1  # a relief is no shortage: no instruction


def test_an_older_report_arriving_late_changes_no_alert(sqlite_url):
    h = Harness(sqlite_url)
    h.send(account(h, "K1"))
    h.send(shortage(h, "ITEM", 2, [("o1", "K1", 5)], time="2027-01-03T00:00:00Z"))
    h.send(shortage(h, "ITEM", 50, [("o0", "K1", 5)], time="2027-01-02T00:00:00Z"))
    assert [a["status"] for a in h.outputs("kam.alerts")] == ["open"]


# -- duplicates ------------------------------------------------------------------------------------

def test_a_repeated_event_with_other_content_is_a_duplicate_conflict_once(sqlite_url):
    h = Harness(sqlite_url)
    original = account(h, "K", tier="key")
    same_again = dict(original)
    changed = dict(original, data=dict(original["data"], tier="none"))
    h.send(original, same_again)
    conflicting = h.record(changed)
    h.processor.process([conflicting])
    h.processor.process([conflicting])  # the same Kafka message delivered again after a crash
    h.send(same_again)
    assert [d["error"]["code"] for d in h.outputs("kam.dlq")] == ["duplicate_conflict"]
    with h.engine.connect() as conn:
        assert conn.execute(select(t.accounts.c.tier)).scalar_one() == "key"  # the first one stands


def test_a_conflicting_duplicate_inside_one_batch(sqlite_url):
    h = Harness(sqlite_url)
    original = account(h, "K", tier="key")
    changed = dict(original, time="2027-02-01T00:00:00Z")
    h.send(original, changed)
    assert [d["error"]["code"] for d in h.outputs("kam.dlq")] == ["duplicate_conflict"]


# -- notices and the handover ----------------------------------------------------------------------

def test_promotion_demotion_and_promotion_again(sqlite_url):
    h = Harness(sqlite_url)
    h.send(account(h, "NOVA", tier="none"), member(h, "NOVA", "p-sam", "sales", "DE"))
    h.send(account(h, "NOVA", tier="key"))
    h.send(member(h, "NOVA", "p-gus", "global_kam"))
    h.send(account(h, "NOVA", tier="none"))
    h.send(account(h, "NOVA", tier="international_key"))
    notices = [(n["kind"], n["recipients"]) for n in h.outputs("kam.notices")]
    assert notices == [("key_account_promoted", ["p-sam"]), ("key_account_demoted", ["p-gus", "p-sam"]),
                       ("key_account_promoted", ["p-gus", "p-sam"])]
    handovers = [(a["alert_id"], a["status"], a["assignee"]) for a in h.outputs("kam.alerts")
                 if a["rule"] == "key_account_handover"]
    assert [(s, who) for _, s, who in handovers] == [("open", "kam-desk"), ("resolved", "kam-desk"),
                                                     ("open", "p-gus")]
    assert handovers[0][0] == handovers[1][0] != handovers[2][0]
    opened = [a for a in h.outputs("kam.alerts") if a["rule"] == "key_account_handover"][-1]
    assert opened["severity"] == "high" and opened["due_at"] is not None
    assert "p-sam" in opened["detail"] and "Hierarchy" in opened["detail"]


def test_the_first_upsert_and_a_tier_change_between_key_tiers_tell_no_one(sqlite_url):
    h = Harness(sqlite_url)
    h.send(account(h, "K", tier="key"))
    h.send(account(h, "K", tier="strategic"))
    assert h.outputs("kam.notices") == []
    assert h.outputs("kam.alerts") == []


def test_a_commitment_by_the_global_kam_informs_no_one_and_others_inform_the_kams(sqlite_url):
    h = Harness(sqlite_url)
    h.send(account(h, "K"), account(h, "K-IT", tier="none", parent="K", country="IT"),
           member(h, "K", "p-g", "global_kam"), member(h, "K", "p-l", "local_kam", "IT"),
           member(h, "K", "p-cm", "country_manager", "IT"))
    h.send(contract(h, "C-G", "K", agreed_by="p-g"))
    assert h.outputs("kam.notices") == []
    by_local_kam = local_price(h, "L-1", "K-IT", "IT", "p-l")
    by_manager = local_price(h, "L-2", "K-IT", "IT", "p-cm")
    h.send(by_local_kam, by_manager)
    notices = h.outputs("kam.notices")
    assert [(n["about"], n["recipients"]) for n in notices] == [("L-1", ["p-g"]), ("L-2", ["p-g", "p-l"])]
    assert notices[1]["caused_by"] == f"test/round/{by_manager['id']}"
    assert "Name of p-cm" in notices[1]["title"] and "90.00 EUR" in notices[1]["detail"]
    stale = dict(by_manager, id="ev-again")  # the same version again: not accepted, no notice
    h.send(stale)
    assert len(h.outputs("kam.notices")) == 2


def test_notice_ids_are_derived_from_kind_cause_and_subject(sqlite_url):
    from services.outputs import output_id

    h = Harness(sqlite_url)
    h.send(account(h, "K", tier="none"))
    promotion = account(h, "K", tier="key")
    h.send(promotion)
    [notice] = h.outputs("kam.notices")
    assert notice["notice_id"] == output_id(f"notice:key_account_promoted:test/round/{promotion['id']}:K")
    assert notice["recipients"] == ["kam-desk"]  # nobody on the team yet: the desk

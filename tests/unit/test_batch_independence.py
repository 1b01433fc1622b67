"""Outputs are a function of the input events and their order, never of where batches end (issue:
"exact causes, outputs independent of batching").

The same events, in the same order, fed in batches of 1, 7, 500 and all at once, must produce the
same outputs byte for byte — apart from the processing timestamps — including every alert's
`caused_by` and id, every notice, instruction and dead letter. The events mix master data,
agreements (with versions and withdrawals), promotions, dunnings, shortages, tier changes and
decisions on alerts, several per key account, so that a batch often holds more than one event
of one key account.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from services.config import Settings
from services.inputs import InputRecord
from services.outputs import output_id
from services.processor import Processor
from services.store import tables as t
from services.store.db import create_tables, make_engine

NOW = datetime(2027, 1, 15, 12, 0, tzinfo=timezone.utc)
PROCESSING_TIMES = ("created_at", "updated_at", "due_at", "received_at")
TOPIC = {"account.upserted": "crm.accounts", "team.member_assigned": "crm.accounts",
         "team.member_removed": "crm.accounts", "price.agreed": "erp.agreements",
         "contract.negotiated": "erp.agreements", "service.agreed": "erp.agreements",
         "agreement.withdrawn": "erp.agreements", "promotion.launched": "erp.promotions",
         "stock.shortage": "erp.stock", "dunning.triggered": "finance.dunning", "decision.made": "kam.decisions"}
ROOTS = ("K1", "K2", "K3")
COUNTRIES = ("DE", "IT", "FR")
PEOPLE = ("p-g1", "p-g2", "p-s", "p-l-it", "p-sales", "p-tech", "p-fin")


class Events:
    """A seeded stream of events of a few key accounts, with times that only move forward."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.items: list[tuple[str, dict]] = []
        self.minute = 0
        self.versions: dict[str, int] = {}

    def add(self, etype: str, data: dict) -> None:
        self.minute += 1
        event = {"specversion": "1.0", "id": f"e{len(self.items)}", "source": "test/split", "type": etype,
                 "time": f"2027-01-0{1 + self.minute // 1440}T{self.minute // 60 % 24:02d}:{self.minute % 60:02d}:00Z",
                 "data": data}
        self.items.append((TOPIC[etype], event))

    def master_data(self) -> None:
        for root in ROOTS:
            self.add("account.upserted", {"account_id": root, "name": f"{root} Group", "parent_id": None,
                                          "country": "DE", "tier": "strategic" if root != "K3" else "none"})
            for country in COUNTRIES[1:]:
                self.add("account.upserted", {"account_id": f"{root}-{country}", "name": f"{root} {country}",
                                              "parent_id": root, "country": country, "tier": "none"})
        for root in ROOTS[:2]:
            self.team(root)

    def team(self, root: str) -> None:
        for person, role, country in (("p-g1", "global_kam", None), ("p-s", "senior_kam", None),
                                      ("p-l-it", "local_kam", "IT"), ("p-sales", "sales", "DE"),
                                      ("p-fin", "finance", None), ("p-x", "executive_sponsor", None)):
            self.add("team.member_assigned", {"account_id": root, "person_id": person, "role": role,
                                               "country": country, "name": person.upper(), "email": None})

    def random_event(self) -> None:
        rng = self.rng
        root = rng.choice(ROOTS)
        account = rng.choice([root, f"{root}-IT", f"{root}-FR"])
        kind = rng.choice(["price", "price", "price", "contract", "service", "withdraw", "promotion", "dunning",
                           "shortage", "team", "tier"])
        if kind == "price":
            agreement_id = f"P-{root}-{rng.randint(1, 4)}"
            scope = "global" if agreement_id.endswith(("1", "2")) else "local"
            self._agreement("price.agreed", agreement_id, root if scope == "global" else account, scope, {
                "product_id": f"X{rng.randint(1, 2)}", "price": f"{rng.choice([90, 95, 100, 104, 110])}.00",
                "currency": "EUR"})
        elif kind == "contract":
            self._agreement("contract.negotiated", f"C-{root}-{rng.randint(1, 3)}", root, "global", {
                "contract_type": "framework", "status": rng.choice(["signed", "signed", "draft"]), "region": None})
        elif kind == "service":
            charge = rng.choice(["paid", "free"])
            self._agreement("service.agreed", f"S-{root}-{rng.randint(1, 3)}", account, None, {
                "service_id": "install", "charge": charge, "price": "10.00" if charge == "paid" else None,
                "currency": "EUR" if charge == "paid" else None})
        elif kind == "withdraw" and self.versions:
            agreement_id = rng.choice(sorted(self.versions))
            self.versions[agreement_id] += 1
            self.add("agreement.withdrawn", {"agreement_id": agreement_id, "version": self.versions[agreement_id],
                                             "withdrawn_by": "p-g1"})
        elif kind == "promotion":
            self.add("promotion.launched", {
                "promotion_id": f"PR-{rng.randint(1, 3)}", "country": rng.choice(COUNTRIES[1:]),
                "product_id": f"X{rng.randint(1, 2)}", "price": f"{rng.choice([80, 99, 120])}.00", "currency": "EUR",
                "valid_from": "2027-01-01", "valid_to": "2027-12-31", "audience": "all_customers",
                "launched_by": "marketing"})
        elif kind == "dunning":
            self.add("dunning.triggered", {
                "dunning_id": f"D-{len(self.items)}", "account_id": account, "invoice_id": "INV-1",
                "level": rng.randint(1, 4), "amount": "500.00", "currency": "EUR", "due_date": "2027-01-01",
                "proposed_action": rng.choice(["reminder", "delivery_block", "collection"])})
        elif kind == "shortage":
            orders = [{"order_id": f"O-{len(self.items)}-{i}", "account_id": rng.choice([account, "OTHER"]),
                       "qty": rng.randint(1, 5), "ordered_at": f"2027-01-01T0{i}:00:00Z"} for i in range(3)]
            self.add("stock.shortage", {"item_id": f"I-{rng.randint(1, 2)}", "available_qty": rng.randint(0, 12),
                                        "orders": orders})
        elif kind == "team":
            person = rng.choice(PEOPLE)
            role = rng.choice(["global_kam", "senior_kam", "local_kam", "sales", "technical"])
            etype = rng.choice(["team.member_assigned", "team.member_removed"])
            self.add(etype, {"account_id": account, "person_id": person, "role": role,
                             "country": "IT" if role in ("local_kam", "sales") else None, "name": None,
                             "email": None})
        elif kind == "tier":
            self.add("account.upserted", {"account_id": root, "name": f"{root} Group", "parent_id": None,
                                          "country": "DE", "tier": rng.choice(["none", "key", "strategic"])})

    def _agreement(self, etype: str, agreement_id: str, account: str, scope: str | None, terms: dict) -> None:
        rng = self.rng
        self.versions[agreement_id] = self.versions.get(agreement_id, 0) + 1
        data = {"agreement_id": agreement_id, "version": self.versions[agreement_id], "account_id": account,
                "valid_from": "2027-01-01", "valid_to": None, "agreed_by": rng.choice(PEOPLE), **terms}
        if scope is not None:
            data["scope"] = scope
            data["country"] = account.rsplit("-", 1)[1] if scope == "local" and "-" in account else (
                "DE" if scope == "local" else None)
        self.add(etype, data)

    def decisions_on(self, alert_ids: list[str]) -> None:
        for alert_id in alert_ids:
            self.add("decision.made", {"alert_id": alert_id, "decided_by": self.rng.choice(PEOPLE),
                                       "decision": self.rng.choice(["acknowledge", "resolve", "waive", "release",
                                                                    "proceed"]), "comment": "ok"})


def _records(events: Events) -> list[InputRecord]:
    offsets: dict[str, int] = {}
    records = []
    for topic, event in events.items:
        offsets[topic] = offsets.get(topic, -1) + 1
        records.append(InputRecord(topic, 0, offsets[topic], None, json.dumps(event).encode()))
    return records


def _outputs(records: list[InputRecord], size: int, url: str) -> list[str]:
    engine = make_engine(url)
    create_tables(engine)
    processor = Processor(engine, Settings(database_url=url, decision_window_s=3600), clock=lambda: NOW)
    for start in range(0, len(records), size):
        processor.process(records[start:start + size])
    with engine.connect() as conn:
        rows = conn.execute(select(t.outbox.c.topic, t.outbox.c.key, t.outbox.c.value)).all()
    engine.dispose()
    outputs = []
    for topic, key, value in rows:
        message = json.loads(value)
        for name in PROCESSING_TIMES:
            message.pop(name, None)
        outputs.append(json.dumps([topic, key, message], sort_keys=True))
    return sorted(outputs)


def _stream(seed: int, url: str) -> list[InputRecord]:
    """Master data, 150 mixed events, decisions on some of the alerts they opened, 40 events more."""
    events = Events(seed)
    events.master_data()
    for _ in range(150):
        events.random_event()
    opened = [json.loads(o)[2]["alert_id"] for o in _outputs(_records(events), 1, url)
              if json.loads(o)[0] == "kam.alerts" and json.loads(o)[2]["status"] == "open"]
    events.decisions_on(events.rng.sample(opened, min(12, len(opened))) + [output_id("no such alert")])
    for _ in range(40):
        events.random_event()
    return _records(events)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_outputs_do_not_depend_on_batch_boundaries(seed, tmp_path):
    records = _stream(seed, f"sqlite:///{tmp_path}/probe.db")
    one_by_one = _outputs(records, 1, f"sqlite:///{tmp_path}/one.db")
    assert sum('"kam.alerts"' in o for o in one_by_one) >= 10 and any('"kam.notices"' in o for o in one_by_one)
    for size in (7, 500, len(records)):
        assert _outputs(records, size, f"sqlite:///{tmp_path}/split-{size}.db") == one_by_one, size


@pytest.mark.postgres
def test_outputs_do_not_depend_on_batch_boundaries_on_postgresql(postgres_url, tmp_path):
    from tests.support.databases import fresh_postgres_database

    records = _stream(4, f"sqlite:///{tmp_path}/probe.db")
    with fresh_postgres_database(postgres_url) as first, fresh_postgres_database(postgres_url) as second:
        assert _outputs(records, len(records), second) == _outputs(records, 1, first)

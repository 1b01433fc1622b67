"""The processor's delivery guarantees on SQLite: duplicates, redelivered dead letters, poisoned events."""

import json

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from services.config import Settings
from services.inputs import InputRecord
from services.processor import Processor
from services.store import tables as t
from services.store.db import create_tables, make_engine

from .processing import outbox_messages, processor_on


def _event(event_id: str, account_id: str, tier: str = "key") -> bytes:
    return json.dumps({"specversion": "1.0", "id": event_id, "source": "crm/test", "type": "account.upserted",
                       "time": "2027-01-01T00:00:00Z",
                       "data": {"account_id": account_id, "name": account_id, "parent_id": None, "country": "DE",
                                "tier": tier}}).encode()


def test_duplicates_within_and_across_batches_change_nothing(sqlite_url):
    engine, processor = processor_on(sqlite_url)
    first = processor.process([InputRecord("crm.accounts", 0, 0, b"A", _event("e1", "A")),
                               InputRecord("crm.accounts", 1, 0, b"A", _event("e1", "A"))])
    second = processor.process([InputRecord("crm.accounts", 0, 0, b"A", _event("e1", "A"))])
    assert (first.processed, first.duplicates) == (1, 1)
    assert (second.processed, second.duplicates) == (0, 1)


def test_a_redelivered_bad_message_is_dead_lettered_once(sqlite_url):
    engine, processor = processor_on(sqlite_url)
    bad = InputRecord("erp.agreements", 2, 7, b"k", b"not json")
    processor.process([bad])
    processor.process([bad])
    letters = outbox_messages(engine, "kam.dlq")
    assert [(d["partition"], d["offset"], d["error"]["code"]) for d in letters] == [(2, 7, "invalid_json")]


def test_an_event_that_cannot_be_applied_becomes_a_dead_letter_and_the_rest_applies(sqlite_url, monkeypatch):
    engine, processor = processor_on(sqlite_url)
    from services.handlers import HANDLERS

    original = HANDLERS["account.upserted"]

    def explode_on_b(batch, settings, record, event):
        if event.data.account_id == "B":
            raise RuntimeError("boom")
        return original(batch, settings, record, event)

    monkeypatch.setitem(HANDLERS, "account.upserted", explode_on_b)
    processor.process([InputRecord("crm.accounts", 0, i, None, _event(f"e{i}", name))
                       for i, name in enumerate(["A", "B", "C"])])
    with engine.connect() as conn:
        stored = sorted(r.account_id for r in conn.execute(select(t.accounts.c.account_id)))
    assert stored == ["A", "C"]
    assert [(d["offset"], d["error"]["code"]) for d in outbox_messages(engine, "kam.dlq")] == [(1, "invalid_data")]


def test_a_parent_cycle_is_invalid_data(sqlite_url):
    engine, processor = processor_on(sqlite_url)

    def upsert(i, account, parent):
        return InputRecord("crm.accounts", 0, i, None, json.dumps({
            "specversion": "1.0", "id": f"c{i}", "source": "crm/test", "type": "account.upserted",
            "time": f"2027-01-01T00:00:0{i}Z", "data": {"account_id": account, "name": account, "parent_id": parent,
                                                       "country": "DE", "tier": "key"}}).encode())

    processor.process([upsert(1, "X", None), upsert(2, "Y", "X"), upsert(3, "X", "Y")])
    assert [d["error"]["code"] for d in outbox_messages(engine, "kam.dlq")] == ["invalid_data"]


def test_an_expired_agreement_resolves_its_conflict_at_the_daily_review(sqlite_url):
    from datetime import datetime, timedelta, timezone

    now = [datetime(2027, 3, 1, tzinfo=timezone.utc)]
    engine = make_engine(sqlite_url)
    create_tables(engine)
    processor = Processor(engine, Settings(database_url=sqlite_url), clock=lambda: now[0])

    def contract(i, agreement_id, valid_to):
        return InputRecord("erp.agreements", 0, i, None, json.dumps({
            "specversion": "1.0", "id": f"k{i}", "source": "erp/test", "type": "contract.negotiated",
            "time": "2027-01-01T00:00:00Z", "data": {
                "agreement_id": agreement_id, "version": 1, "account_id": "K", "scope": "global", "country": None,
                "contract_type": "framework", "status": "signed", "valid_from": "2027-01-01", "valid_to": valid_to,
                "agreed_by": "p-g"}}).encode())

    team = InputRecord("crm.accounts", 0, 99, None, json.dumps({
        "specversion": "1.0", "id": "team", "source": "crm/test", "type": "team.member_assigned",
        "time": "2027-01-01T00:00:00Z", "data": {"account_id": "K", "person_id": "p-g", "role": "global_kam"}}).encode())
    processor.process([InputRecord("crm.accounts", 0, 0, None, _event("k0", "K")), team,
                       contract(1, "C1", None), contract(2, "C2", "2027-06-30")])
    assert processor.key_accounts_with_open_conflicts() == ["K"]
    assert processor.rejudge(["K"]) == 0  # still holds: nothing to say
    now[0] += timedelta(days=200)
    assert processor.rejudge(["K"]) == 1
    statuses = [(a["fingerprint"], a["status"]) for a in outbox_messages(engine, "kam.alerts")]
    assert statuses == [("duplicate_global_contract:K:C1|C2", "open"), ("duplicate_global_contract:K:C1|C2", "resolved")]


def test_when_every_event_fails_the_processor_stops_instead_of_dead_lettering_everything(sqlite_url, monkeypatch):
    import pytest

    engine, processor = processor_on(sqlite_url)

    from services.handlers import HANDLERS

    def always_broken(batch, settings, record, event):
        raise RuntimeError("a bug of ours")

    monkeypatch.setitem(HANDLERS, "account.upserted", always_broken)
    records = [InputRecord("crm.accounts", 0, i, None, _event(f"b{i}", f"X{i}")) for i in range(40)]
    with pytest.raises(RuntimeError):
        processor.process(records)
    assert len(outbox_messages(engine, "kam.dlq")) == 20


def test_a_process_sees_team_changes_made_by_another_despite_its_team_cache(sqlite_url):
    engine, first = processor_on(sqlite_url)
    second = Processor(engine, Settings(database_url=sqlite_url), instance="second")

    def event(i, type_, data):
        return InputRecord("x", 0, i, None, json.dumps({"specversion": "1.0", "id": f"t{i}", "source": "test",
                                                        "type": type_, "time": f"2027-01-01T00:00:{i:02d}Z",
                                                        "data": data}).encode())

    def contract(i, agreement_id, contract_type, agreed_by):
        return event(i, "contract.negotiated", {
            "agreement_id": agreement_id, "version": 1, "account_id": "K", "scope": "global", "country": None,
            "contract_type": contract_type, "status": "signed", "valid_from": "2027-01-01",
            "valid_to": None, "agreed_by": agreed_by})

    def assign(i, person, role):
        return event(i, "team.member_assigned", {"account_id": "K", "person_id": person, "role": role})

    first.process([InputRecord("crm.accounts", 0, 0, None, _event("k", "K")), assign(1, "p-g", "global_kam")])
    second.process([contract(2, "C1", "framework", "p-g")])  # warms the second process's team cache
    assert second.master_cache.teams
    first.process([assign(3, "p-x", "senior_kam")])
    second.process([contract(4, "C2", "supply", "p-x")])
    assert outbox_messages(engine, "kam.dlq") == []
    opened = [a["fingerprint"] for a in outbox_messages(engine, "kam.alerts") if a["status"] == "open"]
    assert "unauthorized_commitment:K:C2" not in opened


def test_a_process_sees_hierarchy_changes_made_by_another_despite_its_account_cache(sqlite_url):
    engine, first = processor_on(sqlite_url)
    second = Processor(engine, Settings(database_url=sqlite_url), instance="second")

    def upsert(i, account_id, parent_id, tier):
        return InputRecord("crm.accounts", 0, i, None, json.dumps({
            "specversion": "1.0", "id": f"h{i}", "source": "test", "type": "account.upserted",
            "time": f"2027-01-01T00:00:{i:02d}Z", "data": {"account_id": account_id, "name": account_id,
                                                          "parent_id": parent_id, "country": "IT", "tier": tier}}).encode())

    def dunning(i, account_id):
        return InputRecord("finance.dunning", 0, i, None, json.dumps({
            "specversion": "1.0", "id": f"d{i}", "source": "test", "type": "dunning.triggered",
            "time": "2027-01-01T00:01:00Z", "data": {
                "dunning_id": f"D{i}", "account_id": account_id, "invoice_id": "I", "level": 2, "amount": "10.00",
                "currency": "EUR", "due_date": "2027-01-10", "proposed_action": "delivery_block"}}).encode())

    first.process([upsert(0, "K", None, "key"), upsert(1, "SUB", None, "none")])
    second.process([dunning(2, "SUB")])  # SUB is standalone: proceed; the second process caches SUB
    assert second.master_cache.accounts
    first.process([upsert(3, "SUB", "K", "none")])  # SUB joins key account K
    second.process([dunning(4, "SUB")])
    actions = [(i["ref_id"], i["action"]) for i in outbox_messages(engine, "kam.instructions")]
    assert actions == [("D2", "proceed"), ("D4", "hold")]


def test_an_unexpected_decode_failure_becomes_that_events_dead_letter(monkeypatch):
    from schemas.decode import InvalidMessage
    from services import inputs as inputs_module
    from services.inputs import InputRecord, decode_records

    real = inputs_module.decode_event

    def flaky(value, *args, **kwargs):
        if value == b"boom":
            raise RuntimeError("a bug of ours")
        return real(value, *args, **kwargs)

    monkeypatch.setattr(inputs_module, "decode_event", flaky)
    decoded = decode_records([InputRecord("x", 0, 1, None, b"boom"), InputRecord("x", 0, 2, None, b"{")])
    assert [type(d) for d in decoded] == [InvalidMessage, InvalidMessage]
    assert decoded[0].code == "invalid_data" and "RuntimeError" in decoded[0].message
    assert decoded[1].code == "invalid_json"


@given(st.text())
def test_output_ids_are_uuid5_of_the_name(name):
    import uuid

    from services.outputs import ALERT_NAMESPACE, output_id

    try:
        expected = str(uuid.uuid5(ALERT_NAMESPACE, name))
    except UnicodeEncodeError:  # lone surrogates: never in a validated event
        return
    assert output_id(name) == expected


def _failing_once(monkeypatch, error):
    """The batch's counters statement (a fixed statement on the driver's cursor) fails once with `error`."""
    import services.batch as processor_module

    original, failures = processor_module.add_to_counters, []

    def add_to_counters(*args, **kwargs):
        if not failures:
            failures.append(error)
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(processor_module, "add_to_counters", add_to_counters)
    return failures


def test_a_deadlock_raised_by_the_driver_itself_retries_the_batch(sqlite_url, monkeypatch):
    import psycopg

    engine, processor = processor_on(sqlite_url)
    failures = _failing_once(monkeypatch, psycopg.errors.DeadlockDetected("deadlock detected"))
    result = processor.process([InputRecord("crm.accounts", 0, 0, b"A", _event("e0", "A0"))])
    assert failures and (result.processed, result.duplicates) == (1, 0)
    assert outbox_messages(engine, "kam.dlq") == []  # not taken for an event that cannot be applied


def test_a_connection_lost_under_the_driver_is_the_database_unavailable_not_a_bad_event(sqlite_url, monkeypatch):
    import psycopg
    import pytest

    engine, processor = processor_on(sqlite_url)
    _failing_once(monkeypatch, psycopg.OperationalError("server closed the connection unexpectedly"))
    records = [InputRecord("crm.accounts", 0, i, b"A", _event(f"e{i}", f"A{i}")) for i in range(3)]
    with pytest.raises(psycopg.OperationalError):  # the service waits and tries the batch again
        processor.process(records)
    assert processor.process(records).processed == 3
    assert outbox_messages(engine, "kam.dlq") == []


def test_which_database_errors_mean_try_again_later():
    import sqlite3

    import psycopg
    from sqlalchemy.exc import OperationalError

    from services.store.errors import transient_database_error

    lost = psycopg.OperationalError("server closed the connection unexpectedly")
    assert transient_database_error(lost)
    assert transient_database_error(OperationalError("SELECT 1", {}, lost))
    assert transient_database_error(psycopg.errors.DeadlockDetected("deadlock detected"))
    assert transient_database_error(psycopg.errors.AdminShutdown("terminating connection"))
    assert transient_database_error(OperationalError("BEGIN", {}, sqlite3.OperationalError("database is locked")))
    assert not transient_database_error(psycopg.errors.LockNotAvailable("could not obtain lock"))
    assert not transient_database_error(psycopg.errors.DiskFull("could not extend file"))
    assert not transient_database_error(psycopg.InterfaceError("the cursor is closed"))
    assert not transient_database_error(ValueError("a bug"))

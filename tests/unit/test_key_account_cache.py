"""The per-process cache of key-account states: trusted only at the version its process committed last."""

import json

import pytest
from sqlalchemy import select

from services.config import Settings
from services.inputs import InputRecord
from services.processor import Processor
from services.store import tables as t
from services.store.db import create_tables, make_engine

from .processing import event_record


def _record(i: int, type_: str, data: dict) -> InputRecord:
    return event_record(i, type_, data, id_prefix="c")


def _contract(i: int, agreement_id: str, version: int = 1) -> InputRecord:
    return _record(i, "contract.negotiated", {
        "agreement_id": agreement_id, "version": version, "account_id": "K", "scope": "global", "country": None,
        "contract_type": "framework", "status": "signed", "valid_from": "2027-01-01", "valid_to": None,
        "agreed_by": "p-g"})


def _withdrawal(i: int, agreement_id: str, version: int) -> InputRecord:
    return _record(i, "agreement.withdrawn", {"agreement_id": agreement_id, "version": version,
                                              "withdrawn_by": "p-g", "reason": "test"})


def _key_account_with_team() -> list[InputRecord]:
    return [_record(0, "account.upserted", {"account_id": "K", "name": "K", "parent_id": None, "country": "DE",
                                            "tier": "key"}),
            _record(1, "team.member_assigned", {"account_id": "K", "person_id": "p-g", "role": "global_kam"})]


def _alert_statuses(engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(select(t.outbox.c.value).where(t.outbox.c.topic == "kam.alerts").order_by(t.outbox.c.id))
        return [(m["fingerprint"], m["status"]) for m in map(json.loads, (r.value for r in rows))
                if m["rule"] == "duplicate_global_contract"]


def _processors(url):
    engine = make_engine(url)
    create_tables(engine)
    settings = Settings(database_url=url)
    return engine, Processor(engine, settings, instance="first"), Processor(engine, settings, instance="second")


def test_a_process_sees_what_another_changed_in_a_key_account_it_has_cached(store_url):
    engine, first, second = _processors(store_url)
    first.process(_key_account_with_team() + [_contract(2, "C1")])
    assert "K" in first.key_cache.states  # judged whole: now cached by the first process
    second.process([_contract(3, "C2")])  # the second process opens the duplicate-contract conflict
    assert _alert_statuses(engine) == [("duplicate_global_contract:K:C1|C2", "open")]
    first.process([_withdrawal(4, "C2", 2)])  # the first process's cache knows neither C2 nor the alert
    assert _alert_statuses(engine) == [("duplicate_global_contract:K:C1|C2", "open"),
                                       ("duplicate_global_contract:K:C1|C2", "resolved")]


def test_a_rolled_back_batch_leaves_the_cache_as_it_was(store_url, monkeypatch):
    engine, first, _ = _processors(store_url)
    first.process(_key_account_with_team() + [_contract(2, "C1")])
    cached_version = first.key_cache.versions["K"]

    def fail(self, batch):
        raise RuntimeError("the database went away before the commit")

    with monkeypatch.context() as patch:
        patch.setattr(Processor, "_write", fail)
        with pytest.raises(RuntimeError):
            first._process_with_retries([_contract(3, "C2")])
    # The failed transaction had taken K's state (no copy): it is gone, never half-changed; read again next time
    assert "K" not in first.key_cache.states
    assert first.key_cache.versions["K"] == cached_version
    first.process([_contract(3, "C2")])
    assert _alert_statuses(engine) == [("duplicate_global_contract:K:C1|C2", "open")]
    assert "C2" in first.key_cache.states["K"].agreements


def test_cached_and_uncached_processing_give_the_same_outputs(store_url, tmp_path):
    """The same events through one process in small batches (cache warm) and one batch per fresh process."""
    events = _key_account_with_team() + [_contract(2, "C1"), _contract(3, "C2"), _contract(4, "C3"),
                                         _withdrawal(5, "C2", 2), _contract(6, "C1", 2), _withdrawal(7, "C3", 2)]
    engine, warm, _ = _processors(store_url)
    for record in events:
        warm.process([record])
    cold_url = f"sqlite:///{tmp_path / 'cold.db'}"
    cold_engine = make_engine(cold_url)
    create_tables(cold_engine)
    for record in events:
        Processor(cold_engine, Settings(database_url=cold_url)).process([record])
    assert _alert_statuses(engine) == _alert_statuses(cold_engine)
    assert ("duplicate_global_contract:K:C1|C3", "resolved") in _alert_statuses(engine)


def test_a_failure_while_caching_a_committed_batch_clears_the_cache_and_counts_the_batch_once(store_url, monkeypatch):
    engine, first, _ = _processors(store_url)
    first.process(_key_account_with_team())
    assert first.key_cache.states

    def fail(self, cache):
        raise RuntimeError("bug while caching")

    from services.store.state import StateRepository

    monkeypatch.setattr(StateRepository, "_remember_committed", fail)
    result = first.process([_contract(2, "C1"), _contract(3, "C2")])
    assert (result.processed, result.duplicates) == (2, 0)  # applied once, not retried one by one
    assert not first.key_cache.states and not first.key_cache.versions
    monkeypatch.undo()
    first.process([_withdrawal(4, "C2", 2)])
    assert _alert_statuses(engine) == [("duplicate_global_contract:K:C1|C2", "open"),
                                       ("duplicate_global_contract:K:C1|C2", "resolved")]


def test_the_versions_a_process_remembers_stay_bounded(sqlite_url):
    engine, first, _ = _processors(sqlite_url)
    first.key_cache.limit = 1
    dunnings = [_record(i, "dunning.triggered", {
        "dunning_id": f"D{i}", "account_id": f"A{i}", "invoice_id": f"I{i}", "level": 1, "amount": "10.00",
        "currency": "EUR", "due_date": "2027-01-10", "proposed_action": "reminder"}) for i in range(60)]
    first.process(dunnings[:30])
    first.process(dunnings[30:])
    assert len(first.key_cache.versions) <= 40


def _account(i: int, account_id: str, parent_id: str | None) -> InputRecord:
    return _record(i, "account.upserted", {"account_id": account_id, "name": account_id, "parent_id": parent_id,
                                           "country": "DE", "tier": "key" if parent_id is None else "none"})


def _roots(engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(t.accounts.c.account_id, t.accounts.c.root_id)).tuples().all())


def test_a_late_parent_re_roots_its_whole_subtree_and_a_move_re_roots_it_again(store_url):
    engine, first, _ = _processors(store_url)
    # Children before their parent (each batch a transaction): M's subtree is C and C's child G.
    first.process([_account(0, "C", "M"), _account(1, "G", "C"), _account(2, "K", None)])
    assert _roots(engine) == {"C": "C", "G": "C", "K": "K"}
    first.process([_account(3, "M", "K")])
    assert _roots(engine) == {"C": "K", "G": "K", "K": "K", "M": "K"}
    first.process([_account(4, "L", None), _account(5, "M", "L")])
    assert _roots(engine) == {"C": "L", "G": "L", "K": "K", "L": "L", "M": "L"}
    first.process([_account(6, "M", None)])
    assert _roots(engine) == {"C": "M", "G": "M", "K": "K", "L": "L", "M": "M"}


def test_an_agreement_built_from_a_row_equals_one_built_by_its_constructor():
    from dataclasses import fields
    from datetime import date
    from decimal import Decimal

    from services.domain import Agreement
    from services.store.rows import _agreement

    row = {"agreement_id": "AG1", "version": 3, "kind": "price", "account_id": "K", "agreed_by": "p-1",
           "valid_from": "2027-01-01", "valid_to": None, "scope": "local", "country": "IT", "product_id": "SKU1",
           "price": "9.90", "currency": "EUR", "contract_type": None, "status": None, "service_id": None, "charge": None}
    built = _agreement(row)
    expected = Agreement("AG1", 3, "price", "K", "p-1", date(2027, 1, 1), None, "local", "IT", "SKU1",
                         Decimal("9.90"), "EUR")
    assert built == expected and hash(built) == hash(expected)
    assert set(vars(built)) == {f.name for f in fields(Agreement)}  # every field set, none extra

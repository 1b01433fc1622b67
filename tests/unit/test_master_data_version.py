"""The `teams` version that tells every process's master-data cache that accounts or teams changed.

A transaction that changes master data bumps it itself. That bump is no change by anyone else:
it must neither make the transaction distrust what it read before its later locks, nor leave the
process's cache behind the store, so that the next batch throws away what it read with its claim.
"""

import pytest
from sqlalchemy import text

from services.config import Settings
from services.inputs import InputRecord
from services.processor import Processor
from services.store import tables as t
from services.store.caches import KeyAccountCache, MasterDataCache
from services.store.db import create_tables, make_engine
from services.store.state import StateRepository

from .processing import event_record


def _record(i: int, type_: str, data: dict) -> InputRecord:
    return event_record(i, type_, data, id_prefix="m")


def _key_account(i: int, account_id: str) -> InputRecord:
    return _record(i, "account.upserted", {"account_id": account_id, "name": account_id, "parent_id": None,
                                           "country": "DE", "tier": "key"})


def _member(i: int, account_id: str, person_id: str) -> InputRecord:
    return _record(i, "team.member_assigned", {"account_id": account_id, "person_id": person_id, "role": "global_kam"})


def _price(i: int, agreement_id: str, account_id: str) -> InputRecord:
    return _record(i, "price.agreed", {
        "agreement_id": agreement_id, "version": 1, "account_id": account_id, "scope": "global", "country": None,
        "product_id": "P1", "price": "10.00", "currency": "EUR", "valid_from": "2027-01-01", "valid_to": None,
        "agreed_by": "p-g"})


def _teams_version(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT value FROM versions WHERE name = 'teams'")).scalar_one()


def _team_member_row(account_id: str) -> dict:
    return dict(account_id=account_id, person_id="p-1", role="sales", country="DE", name="P 1", email=None,
                present=True, event_time="2027-01-01T00:00:00Z", event_id="e-1")


def test_after_a_batch_that_changed_a_team_the_process_cache_is_at_the_stores_version(store_url):
    engine = make_engine(store_url)
    create_tables(engine)
    processor = Processor(engine, Settings(database_url=store_url))
    processor.process([_key_account(0, "K1"), _member(1, "K1", "p-g")])
    before = _teams_version(engine)
    processor.process([_member(2, "K1", "p-h"), _price(3, "A1", "K1")])
    assert _teams_version(engine) == before + 1
    assert processor.master_cache.version == before + 1


@pytest.mark.postgres
def test_the_batch_after_a_team_change_keeps_what_it_read_with_its_claim(postgres_database, monkeypatch):
    engine = make_engine(postgres_database)
    create_tables(engine)
    processor = Processor(engine, Settings(database_url=postgres_database))
    processor.process([_key_account(0, "K1"), _key_account(1, "K2"), _member(2, "K1", "p-g")])
    processor.process([_member(3, "K1", "p-h")])
    forgotten = []
    real = StateRepository.forget_all
    monkeypatch.setattr(StateRepository, "forget_all", lambda repo: (forgotten.append(1), real(repo)))
    processor.process([_price(4, "A1", "K1"), _price(5, "A2", "K2")])
    assert forgotten == []  # nobody else changed anything: the reads before the locks stand


@pytest.mark.postgres
def test_a_transactions_own_team_change_is_no_reason_to_distrust_its_reads(postgres_database):
    engine = make_engine(postgres_database)
    create_tables(engine)
    with engine.begin() as conn:
        repo = StateRepository(conn, MasterDataCache(), KeyAccountCache())
        repo.note_commits()
        assert repo.lock_and_validate({"K1"})
        repo.put(t.team_members, _team_member_row("K1"))
        repo.flush()  # bumps `teams` inside this transaction
        assert repo.lock_and_validate({"K2"})  # judging locks another key account later in the batch


@pytest.mark.postgres
def test_a_team_change_committed_by_another_transaction_meanwhile_is_noticed(postgres_database):
    engine = make_engine(postgres_database)
    create_tables(engine)
    other = make_engine(postgres_database)
    with engine.begin() as conn:
        repo = StateRepository(conn, MasterDataCache(), KeyAccountCache())
        repo.note_commits()
        assert repo.lock_and_validate({"K1"})
        with other.begin() as elsewhere:  # another process changes a team and commits
            elsewhere.execute(text("UPDATE versions SET value = value + 1 WHERE name = 'teams'"))
        repo.put(t.team_members, _team_member_row("K1"))
        repo.flush()
        assert not repo.lock_and_validate({"K2"})
    other.dispose()

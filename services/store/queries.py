"""Read-only questions about one key account that few events ask (a handover needs its whole picture).

Each reads the store as the running transaction sees it, after writing what the repository
holds for the tables it reads.
"""

from __future__ import annotations

from sqlalchemy import select

from services.domain import CLOSED_STATUSES, Account, Agreement
from services.store import tables as t
from services.store.state import StateRepository, account_from_row, agreement_from_row


def key_account_picture(repo: StateRepository, root_id: str) -> tuple[list[Account], list[Agreement], list[dict]]:
    """The accounts under a key account, their agreements (current versions) and its open alerts."""
    repo.flush(t.accounts, t.agreements, t.alerts)
    conn = repo.conn
    accounts = [account_from_row(dict(r._mapping))
                for r in conn.execute(select(t.accounts).where(t.accounts.c.root_id == root_id))]
    ids = [a.account_id for a in accounts]
    agreements = [agreement_from_row(dict(r._mapping))
                  for r in conn.execute(select(t.agreements).where(t.agreements.c.account_id.in_(ids)))] if ids else []
    alerts = [dict(r._mapping) for r in conn.execute(
        select(t.alerts).where(t.alerts.c.key_account_id == root_id,
                               t.alerts.c.status.not_in(list(CLOSED_STATUSES))))]
    return accounts, agreements, alerts

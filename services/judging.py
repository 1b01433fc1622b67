"""Judging key accounts: evaluate the agreement rules on a key account's current state and reconcile
its conflict alerts with what holds now (CONTRACT §5).

New findings open alerts, findings that no longer hold resolve theirs, and a finding closed by
a decision stays closed while its agreement versions are the same. The rules themselves are
pure (services/rules/agreements.py); this module reads their input from the repository.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

from services.batch import Batch
from services.domain import CLOSED_STATUSES, Finding, KeyAccountView
from services.rules.agreements import CONFLICT_RULES, evaluate_key_account
from services.store.rows import evidence_ids
from services.store.state import related_terms_by_root


def judge_key_accounts(batch: Batch, fallback: str, lock: Callable[[Batch, set[str]], bool]) -> None:
    """Re-evaluate every key account the batch touched since it was last judged; reconcile its alerts.

    A key account changed as a whole (team, hierarchy) is judged whole; one where only some
    agreements or promotions changed is judged on the conflicts those can take part in. `lock`
    takes the key accounts' locks and says whether what was read before them is still current.
    """
    if not batch.dirty:
        return
    repo = batch.repo
    if not lock(batch, set(batch.dirty)) and repo.conn.dialect.name == "postgresql":
        repo.forget_all()
    roots = sorted(batch.dirty)
    partial = {root: set(ids) for root, ids in batch.changed.items() if root not in batch.whole}
    related = related_terms_by_root(repo, partial)
    # Cached states know nothing of this transaction's account changes, however long ago it judged them
    states = repo.key_account_states(roots, batch.reread, CONFLICT_RULES, partial)
    # Read again as written, they are live now (writes follow them) until their accounts change again (`touch`)
    batch.reread.difference_update(roots)
    teams = repo.teams(roots)
    agreements_by_root, products_by_root = {}, {}
    pairs = set()
    for root in roots:
        state = states[root]
        agreements = state.related(*related[root]) if root in partial else list(state.agreements.values())
        agreements_by_root[root] = agreements
        # Only a promotion of a product with a global price can undercut it (`promotions_undercutting_global`)
        products = products_by_root[root] = sorted({a.product_id for a in agreements
                                                    if a.kind == "price" and a.scope == "global"})
        pairs.update((a.country, p) for a in state.accounts.values() for p in products)
    promotions_by_pair = repo.promotions_for(pairs) if pairs else {}
    today = batch.now.date()
    for root in roots:
        members = states[root].accounts
        findings: list[Finding] = []
        key_account = members.get(root)
        if key_account is not None and key_account.tier != "none":
            countries = sorted({a.country for a in members.values()})
            # The key account's own pairs, in a fixed order (not the promotions of other key accounts' products)
            promotions = tuple(p for country in countries for product in products_by_root[root]
                               for p in promotions_by_pair.get((country, product), ()))
            view = KeyAccountView(key_account, members, teams[root], tuple(agreements_by_root[root]), promotions)
            findings = evaluate_key_account(view, today, fallback)
        if root in partial:
            ids = partial[root]
            findings = [f for f in findings if ids.intersection(f.evidence)]
            alerts = states[root].alerts_about(ids)
        else:
            alerts = list(states[root].alerts.values())
        reconcile(batch, alerts, findings, functools.partial(batch.cause, root))
    batch.judged()


def reconcile(batch: Batch, existing: list[dict], findings: list[Finding], cause: Callable[[Iterable[str]], str]) -> None:
    """Open, refresh or resolve a key account's conflict alerts so they match the findings that hold.

    `cause(evidence)` names the event each change is owed to.
    """
    open_by_fingerprint = {a["fingerprint"]: a for a in existing if a["status"] not in CLOSED_STATUSES}
    decided = {(a["fingerprint"], a["versions"]) for a in existing if a["closed_by_decision"]}
    holding = set()
    for finding in findings:
        holding.add(finding.fingerprint)
        current = open_by_fingerprint.get(finding.fingerprint)
        if current is not None:
            if current["versions"] != finding.versions:
                batch.refresh_alert(current, finding)
            continue
        if (finding.fingerprint, finding.versions) not in decided:
            batch.open_alert(finding, cause(finding.evidence))
    for fingerprint, alert in open_by_fingerprint.items():
        if fingerprint not in holding:
            batch.change_status(alert, "resolved", cause(evidence_ids(alert["evidence"])))

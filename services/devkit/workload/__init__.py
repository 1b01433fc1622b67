"""A deterministic, realistic onevoice workload: master data first, then a business-day mix of events.

    from services.devkit.workload import generate   # tests, tools
    from workload import generate                   # bench scripts (bench/workload.py re-exports it)

    messages = generate(20_000, seed=7, prefix="w-3fa2")   # [(topic, key, value), ...] in publish order
    write_jsonl("events.jsonl", messages)                  # for `onevoice replay events.jsonl`

Same arguments, same bytes (one seeded ``random.Random``, a fixed event clock starting
2027-01-01T00:00:00Z). Every value is a valid CloudEvent of CONTRACT §2/§3; every id
(accounts, persons, agreements, events, ...) starts with ``prefix`` so several runs can share
one broker.

Order of the messages:

1. **Master data** (all on ``crm.accounts``): ``key_accounts`` key accounts with 1–3 levels of
   hierarchy (root, country subsidiaries, plants under some subsidiaries), in shuffled order
   per key account so children sometimes arrive before their parent; their teams (global_kam,
   a local_kam per country, usually a senior_kam, finance, executive_sponsor, sometimes a
   country_manager, sales and technical members, some of whom are removed again; some
   local_kams are assigned on the subsidiary rather than the root); some renamed accounts;
   ``key_accounts // 2`` standalone accounts with tier ``none``.
2. **The mix**, until ``n_events`` messages in all: global and local ``price.agreed``,
   ``contract.negotiated``, ``service.agreed``, newer versions of them, ``agreement.withdrawn``,
   ``promotion.launched``, ``dunning.triggered`` (key accounts, standalone and unknown
   accounts), ``stock.shortage`` (several per item; most are real shortages), a few
   ``decision.made`` for alerts that do not exist (they go to the DLQ as ``unknown_alert``),
   ~1 % exact redeliveries (same bytes, same ``(source, id)``) and ~0.5 % stale versions.

About ``conflict_share`` of the agreement events create a conflict: a local price below
(or above) the key account's global price in the same currency, a second signed global
contract of one type, a free service where the same service is paid under another agreement
(agreed by another person), or an agreement made by someone without the right; about
``conflict_share`` of the promotions undercut a global price. Every other event is built so
that it creates no conflict, whatever the order in which the service sees them: newer
versions of a global price keep the price, non-conflicting local prices are in the
country's own currency, for a product without a global price, or equal to the global price,
and "harmless" promotions are above every global price or aimed at a segment. Conflicting
agreements get no newer versions (only, sometimes, a withdrawal), so the severity of the
final open alerts does not depend on the interleaving either.

Validity periods start in the first half of 2027 and end in 2028 or stay open, so all
agreements are active on any date in 2027 and all of them overlap.

If the master data alone is longer than ``n_events`` it is cut to ``n_events`` messages.
"""

from __future__ import annotations

from pathlib import Path

from schemas.registry import TOPIC_BY_TYPE

from .accounts import MasterData
from .mix import Mix
from .stream import EventStream

__all__ = ["generate", "write_jsonl", "TOPIC_BY_TYPE"]


def generate(n_events: int, *, seed: int = 1, key_accounts: int = 200, conflict_share: float = 0.05,
             prefix: str = "w") -> list[tuple[str, bytes, bytes]]:
    """`n_events` (topic, key, value) messages in publish order: master data first, then the mix."""
    stream = EventStream(seed, prefix)
    master = MasterData(stream, key_accounts)
    master.publish()
    if len(stream.out) < n_events:
        Mix(stream, master, conflict_share).run(n_events)
    return stream.out[:n_events]


def write_jsonl(path, messages) -> int:
    """Write the values as JSON lines (one CloudEvent per line) for `onevoice replay`; returns the count."""
    lines = [value.decode("utf-8") for _, _, value in messages]
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)

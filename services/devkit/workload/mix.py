"""The business-day mix that follows the master data: which kind of event comes next, and how often."""

from __future__ import annotations

from . import operations
from .accounts import MasterData
from .agreements import Agreements
from .stream import EventStream

# relative frequencies of the kinds of event after the first round (FIRST)
WEIGHTS = {"global_price": 12, "local_price": 26, "contract": 7, "service": 7, "new_version": 10,
           "withdraw": 4, "promotion": 5, "dunning": 15, "stock": 10, "redeliver": 1, "stale": 0.5,
           "decision": 0.2}
# every kind once first, so that even a short workload holds every type of event
FIRST = ["global_price", "local_price", "contract", "service", "new_version", "withdraw", "promotion",
         "dunning", "stock", "decision", "stale", "redeliver"]


class Mix:
    def __init__(self, stream: EventStream, master: MasterData, conflict_share: float):
        self.stream = stream
        self.master = master
        self.rng = stream.rng
        self.conflict_share = conflict_share
        self.agreements = Agreements(stream, master)

    def run(self, n_events: int) -> None:
        """Add events until the stream holds `n_events` messages."""
        rng, stream, master, agreements = self.rng, self.stream, self.master, self.agreements
        kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
        forced = list(FIRST)
        while len(stream.out) < n_events:
            kind = forced.pop(0) if forced else rng.choices(kinds, weights)[0]
            if kind in ("global_price", "local_price", "contract", "service"):
                self.agreement(kind)
            elif kind == "new_version":
                agreements.new_version() or self.agreement("global_price")
            elif kind == "withdraw":
                agreements.withdraw() or self.agreement("local_price")
            elif kind == "stale":
                agreements.stale() or (agreements.new_version() and agreements.stale())
            elif kind == "promotion":
                operations.promotion(stream, master, conflict=rng.random() < self.conflict_share)
            elif kind == "dunning":
                operations.dunning(stream, master)
            elif kind == "stock":
                operations.shortage(stream, master)
            elif kind == "decision":
                operations.decision(stream, master)
            else:
                stream.redeliver()

    def agreement(self, kind: str) -> None:
        """A new agreement of `kind`; about `conflict_share` of them are a conflict of some kind instead."""
        rng, agreements = self.rng, self.agreements
        conflict = rng.random() < self.conflict_share
        ka = rng.choice(self.master.key_accounts)
        if conflict:
            kind = rng.choice(["local_price", "contract", "service", "unauthorized"])
        if kind == "global_price":
            if agreements.global_price(ka) is None:
                agreements.local_price(ka)
        elif kind == "local_price":
            agreements.local_price(None if not conflict and rng.random() < 0.1 else ka, conflict)
        elif kind == "contract":
            agreements.contract(ka, conflict)
        elif kind == "service":
            agreements.service(ka, conflict)
        else:
            agreements.unauthorized(ka)

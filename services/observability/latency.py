"""End-to-end latency: from an event's receipt to the broker's acknowledgement of the outputs it caused.

The service notes, per applied batch, the time its events were received and the outbox ids
of the outputs it committed; when the relay of this process has had those ids acknowledged,
each output's latency is observed. Outputs published by another process's relay (when that
one holds the lease) are not observed here: their receipt time is not known there.
"""

from __future__ import annotations

import collections
import functools
import time

from services.observability.metrics import END_TO_END

MAX_WAITING_BATCHES = 10_000  # batches whose outputs another relay publishes are forgotten past this


class PublishLatency:
    """Batches waiting for their outputs to be published: (last outbox id, outputs, receipt time)."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._waiting: collections.deque[tuple[int, int, float]] = collections.deque()

    def committed(self, rows: list[tuple], received_at: float) -> None:
        """A batch received at `received_at` (monotonic) committed these outbox rows (in id order)."""
        if rows:
            self._waiting.append((rows[-1][0], len(rows), received_at))
            while len(self._waiting) > MAX_WAITING_BATCHES:
                self._waiting.popleft()

    def published(self, rows: list[tuple]) -> None:
        """The relay has the broker's acknowledgement for these rows: every batch up to the newest is out."""
        if not rows or not self._waiting:
            return
        newest = max(row[0] for row in rows)
        now = self.clock()
        while self._waiting and self._waiting[0][0] <= newest:
            _last, outputs, received_at = self._waiting.popleft()
            observe_times(END_TO_END, now - received_at, outputs)

    def watch(self, relay) -> None:
        """Observe what `relay` publishes (its `_publish` returns once the broker acknowledged the rows)."""
        publish = relay._publish

        @functools.wraps(publish)
        async def observed(rows):
            count = await publish(rows)
            self.published(rows)
            return count

        relay._publish = observed


def observe_times(histogram, amount: float, times: int) -> None:
    """`histogram.observe(amount)` done `times` times, in one step: a batch's outputs share one latency,
    and observing each (a lock and a bucket search apiece) cost 1 % of the service's time. Uses the
    histogram's own counters as prometheus_client (pinned) lays them out; a test compares the two."""
    histogram._raise_if_not_observable()
    histogram._sum.inc(amount * times)
    for i, bound in enumerate(histogram._upper_bounds):
        if amount <= bound:
            histogram._buckets[i].inc(times)
            break

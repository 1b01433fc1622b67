"""The stream every part of the workload writes to: one seeded ``random.Random``, prefixed ids, a fixed
event clock, and the (topic, key, value) messages in publish order.

All parts share this one ``rng``, so the order in which they draw from it is what makes the output
reproducible: moving a draw changes every byte after it.
"""

from __future__ import annotations

import json
import random
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal

from schemas.registry import KEY_FIELD_BY_TOPIC, TOPIC_BY_TYPE

LAST_DAY = date(2028, 12, 31)
EPOCH = datetime(2027, 1, 1, tzinfo=timezone.utc)


def money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


class EventStream:
    def __init__(self, seed: int, prefix: str):
        self.rng = random.Random(seed)
        self.prefix = prefix
        self.out: list[tuple[str, bytes, bytes]] = []
        self.clock = EPOCH
        self.seq = 0
        self.counter: dict[str, int] = {}

    def next_id(self, kind: str) -> str:
        self.counter[kind] = self.counter.get(kind, 0) + 1
        return f"{self.prefix}-{kind}{self.counter[kind]:06d}"

    def person(self) -> str:
        return self.next_id("P")

    def tick(self) -> str:
        self.clock += timedelta(seconds=self.rng.randint(1, 90))
        return self.clock.strftime("%Y-%m-%dT%H:%M:%SZ")

    def emit(self, type_: str, source: str, data: dict, subject: str | None = None) -> None:
        self.seq += 1
        event = {"specversion": "1.0", "id": f"{self.prefix}-e{self.seq:07d}", "source": source, "type": type_,
                 "time": self.tick(), "datacontenttype": "application/json", "data": data}
        if subject is not None:
            event["subject"] = subject
        # the contract's routing (CONTRACT §3), from the one place that defines it
        topic = TOPIC_BY_TYPE[type_]
        key = data[KEY_FIELD_BY_TOPIC[topic]]
        self.out.append((topic, key.encode(), json.dumps(event, separators=(",", ":")).encode()))

    def redeliver(self) -> None:
        """An exact redelivery of an earlier message: same bytes, same ``(source, id)``."""
        self.out.append(self.rng.choice(self.out))

    def validity(self) -> tuple[str, str | None]:
        """A validity period starting in the first half of 2027, so that every agreement overlaps every other."""
        start = date(2027, 1, 1) + timedelta(days=self.rng.randint(0, 180))
        if self.rng.random() < 0.3:
            return start.isoformat(), None
        end = min(start + timedelta(days=self.rng.randint(365, 700)), LAST_DAY)
        return start.isoformat(), end.isoformat()

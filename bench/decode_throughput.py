"""Decode throughput of structured CloudEvents on one core: `decode_event` alone, and `decode_records`
(what the service calls per fetched batch: each record's value, headers and topic).

    uv run --frozen python bench/decode_throughput.py [N] [REPEATS]

The corpus is every valid event of the shared scenarios (all eleven types), each on its own topic.
Each figure is the best of REPEATS runs in CPU time of this process (the machine is shared: wall time
would count other processes' turns; the best run is the least disturbed).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from schemas import InvalidMessage, decode_event
from schemas.registry import TOPIC_BY_TYPE
from services.inputs import InputRecord, decode_records

SCENARIOS = Path(__file__).resolve().parents[2] / "shared" / "scenarios"
BATCH = 500


def corpus() -> list[dict]:
    """Every valid event of the shared scenarios, as parsed JSON."""
    events = []
    for path in sorted(SCENARIOS.glob("*.json")):
        for step in json.loads(path.read_text())["steps"]:
            for item in step.get("publish", []):
                if "value" in item and _valid(json.dumps(item["value"]).encode()):
                    events.append(item["value"])
    return events


def _valid(value: bytes) -> bool:
    try:
        decode_event(value)
    except InvalidMessage:
        return False
    return True


def structured_records(events: list[dict]) -> list[InputRecord]:
    return [InputRecord(TOPIC_BY_TYPE[e["type"]], 0, i, None, json.dumps(e).encode(), ())
            for i, e in enumerate(events)]


def best_rate(run, n: int, repeats: int) -> float:
    """Events per second of the fastest of `repeats` runs of `run()` (which decodes n events)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return n / best


def rate_of_records(records: list[InputRecord], n: int, repeats: int) -> float:
    batch = (records * (n // len(records) + 1))[:n]
    chunks = [batch[i:i + BATCH] for i in range(0, n, BATCH)]
    decode_records(records)  # warm up
    for item in decode_records(batch[:BATCH]):
        assert not isinstance(item, InvalidMessage), item

    def run() -> None:
        for chunk in chunks:
            decode_records(chunk)  # results dropped, as the service drops each batch's once applied

    return best_rate(run, n, repeats)


def main(n: int = 100_000, repeats: int = 3) -> None:
    events = corpus()
    values = [json.dumps(e).encode() for e in events]
    batch = (values * (n // len(values) + 1))[:n]
    for v in values:  # warm up
        decode_event(v)

    def run() -> None:
        for v in batch:
            decode_event(v)

    direct = best_rate(run, n, repeats)
    records = rate_of_records(structured_records(events), n, repeats)
    print(f"{n} structured events ({len(values)} distinct, all types), best of {repeats}:")
    print(f"  decode_event(value)         {direct:>9,.0f} events/s")
    print(f"  decode_records(batches)     {records:>9,.0f} events/s  (value, headers, topic; batches of {BATCH})")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))

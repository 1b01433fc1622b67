"""Decode throughput of schemas.decode_event on one core.

    uv run python bench/decode_throughput.py [N]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from schemas import InvalidMessage, decode_event

SCENARIOS = Path(__file__).resolve().parents[2] / "shared" / "scenarios"


def corpus() -> list[bytes]:
    values = []
    for path in sorted(SCENARIOS.glob("*.json")):
        for step in json.loads(path.read_text())["steps"]:
            for item in step.get("publish", []):
                if "value" in item:
                    values.append(json.dumps(item["value"]).encode())
    return [v for v in values if _valid(v)]


def _valid(value: bytes) -> bool:
    try:
        decode_event(value)
    except InvalidMessage:
        return False
    return True


def main(n: int = 200_000) -> None:
    values = corpus()
    batch = (values * (n // len(values) + 1))[:n]
    for v in values:  # warm up
        decode_event(v)
    start = time.perf_counter()
    for v in batch:
        decode_event(v)
    elapsed = time.perf_counter() - start
    print(f"{n} events ({len(values)} distinct, all types) in {elapsed:.2f} s: {n / elapsed:,.0f} events/s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)

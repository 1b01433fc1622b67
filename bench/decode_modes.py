"""Decode cost per event in CloudEvents structured vs binary content mode (CONTRACT §2), on one core.

    uv run --frozen python bench/decode_modes.py [N] [REPEATS]

The same events (every valid event of the shared scenarios, all eleven types, each on its own
topic) are encoded three ways and decoded with `decode_records`, as the service does per batch:

- structured, no headers (a plain producer writing the JSON event);
- structured as the official CloudEvents SDK writes it (`to_structured`: a `content-type` header);
- binary as the official SDK writes it (`to_binary`: `ce_*` headers and `content-type`, value = data).

Each figure is the best of REPEATS runs in CPU time of this process (see bench/decode_throughput.py).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime

from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as SdkEvent

from bench.decode_throughput import corpus, rate_of_records, structured_records
from schemas import InvalidMessage
from schemas.registry import TOPIC_BY_TYPE
from services.inputs import InputRecord, decode_records

_FORMAT = JSONFormat()


def sdk_event(event: dict) -> SdkEvent:
    attributes = {k: v for k, v in event.items() if k != "data" and v is not None}
    attributes["time"] = datetime.fromisoformat(attributes["time"])
    attributes.setdefault("datacontenttype", "application/json")
    return SdkEvent(attributes, event["data"])


def sdk_records(events: list[dict], mode: str) -> list[InputRecord]:
    convert = ce_kafka.to_binary if mode == "binary" else ce_kafka.to_structured
    records = []
    for i, event in enumerate(events):
        message = convert(sdk_event(event), _FORMAT)
        records.append(InputRecord(TOPIC_BY_TYPE[event["type"]], 0, i, None, message.value,
                                   tuple(message.headers.items())))
    return records


def main(n: int = 100_000, repeats: int = 3) -> None:
    events = corpus()
    encodings = {
        "structured (plain JSON, no headers)": structured_records(events),
        "structured (SDK to_structured)": sdk_records(events, "structured"),
        "binary (SDK to_binary)": sdk_records(events, "binary"),
    }
    digests = None
    for records in encodings.values():  # the same events whichever the encoding
        decoded = decode_records(records)
        assert not any(isinstance(d, InvalidMessage) for d in decoded), decoded
        these = [d.digest for d in decoded]
        assert digests is None or these == digests
        digests = these
    sizes = {name: sum(len(r.value) + sum(len(k) + len(v) for k, v in r.headers) for r in records) / len(records)
             for name, records in encodings.items()}
    print(f"{n} events ({len(events)} distinct, all types), decode_records in batches, best of {repeats}:")
    for name, records in encodings.items():
        rate = rate_of_records(records, n, repeats)
        print(f"  {name:<38} {rate:>9,.0f} events/s  {1e6 / rate:5.2f} µs/event  "
              f"({sizes[name]:.0f} bytes of value + headers)")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))

"""The outbox relay: publishes committed outputs to Kafka, in commit order, then marks them sent.

Only the holder of the `outbox-relay` lease publishes, so outputs of one alert keep their
order even with several processes. The producer is idempotent (no duplicates from its own
retries). A crash between publishing and marking would repeat the unmarked rows, so every
message carries a header `onevoice-outbox: <store id>:<row id>`, and the relay records, in the
transaction that marks rows sent, the offset it has published up to in each output partition.
Whoever takes the lease next reads the few messages after those offsets and marks the rows it
finds there as sent before publishing anything: no output is repeated, none is lost.

Bounded outputs: an output larger than its topic accepts (`max.message.bytes`, read from the
broker at each takeover) would be refused by the broker again and again and block every output
behind it. Such a row is set aside instead: marked `undeliverable` (and sent, so nothing waits
for it), counted (`undeliverable` in kam.ops and /metrics) and named in one log line. Should the
broker refuse a batch all the same (its limit lowered meanwhile), the relay learns the smaller
limit, sets a refused single output aside, replaces its producer (an idempotent producer cannot
go on in a partition after a refused batch) and takes over again as after a crash.

Outages of the database or the broker are reported to `services.outages.OUTAGES` (one line, a
reminder every 30 s, one line when back); the relay retries with backoff up to 10 s.

One module per concern, all parts of the one `OutboxRelay`:

- `relay.py`      the loop: the lease, a round, retries after failures, the wake-ups
- `takeover.py`   taking the lease over: the outputs a previous holder published unmarked, the topics' limits
- `publishing.py` reading unsent rows and sending them as record batches, one per partition
- `marking.py`    marking published rows sent (in the background) and pruning old rows
- `oversized.py`  setting aside outputs too large for their topic, and learning from refused batches
- `records.py`    what an output is on the wire: its header, its partition, its size bounds
"""

from services.outbox.oversized import UNDELIVERABLE, UNDELIVERABLE_KEPT, OutputRefused
from services.outbox.records import DEFAULT_MESSAGE_LIMIT, HEADER, partition_of
from services.outbox.relay import LEASE, OutboxRelay
from services.outbox.takeover import message_limits, output_partitions

__all__ = [
    "DEFAULT_MESSAGE_LIMIT",
    "HEADER",
    "LEASE",
    "UNDELIVERABLE",
    "UNDELIVERABLE_KEPT",
    "OutboxRelay",
    "OutputRefused",
    "message_limits",
    "output_partitions",
    "partition_of",
]

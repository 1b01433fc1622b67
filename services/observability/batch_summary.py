"""What a committed batch told the outside world, counted from its outbox rows (pure).

The processor hands back the outputs it committed as (outbox id, topic, key, value JSON);
the alert status changes, instructions and notices among them are what a batch log line
and the Prometheus counters report. Counting them here needs nothing from the core.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import orjson

ALERTS, INSTRUCTIONS, NOTICES, DLQ = "kam.alerts", "kam.instructions", "kam.notices", "kam.dlq"


@dataclass
class OutputSummary:
    """Alert status changes by new status (and by rule for opened ones), instructions by action, notices."""

    alert_statuses: Counter = field(default_factory=Counter)
    opened_by_rule: Counter = field(default_factory=Counter)
    instructions: Counter = field(default_factory=Counter)
    notices: int = 0
    alert_changes: list[dict] = field(default_factory=list)  # (only when asked for: the DEBUG lines)

    @property
    def opened(self) -> int:
        return self.alert_statuses["open"]

    @property
    def resolved(self) -> int:
        return self.alert_statuses["resolved"] + self.alert_statuses["waived"]

    @property
    def escalated(self) -> int:
        return self.alert_statuses["escalated"]


def summarise_outputs(rows: list[tuple], *, keep_changes: bool = False) -> OutputSummary:
    """Count the alert changes, instructions and notices among committed outbox rows.

    Only alert and instruction values are parsed (a few hundred bytes each); dead letters,
    which can be large, are counted by the processor already.
    """
    summary = OutputSummary()
    for _id, topic, _key, value in rows:
        if topic == ALERTS:
            alert = orjson.loads(value)
            summary.alert_statuses[alert["status"]] += 1
            if alert["status"] == "open":
                summary.opened_by_rule[alert["rule"]] += 1
            if keep_changes:
                summary.alert_changes.append(alert)
        elif topic == INSTRUCTIONS:
            summary.instructions[orjson.loads(value)["action"]] += 1
        elif topic == NOTICES:
            summary.notices += 1
    return summary

"""The Prometheus series of onevoice, each meaning exactly what its help text says.

Counters count what *this process* did since it started (Prometheus adds processes up with
`sum()` and survives restarts with `rate()`/`increase()`); gauges read from the store (open
alerts, the outbox backlog, escalations due) are the same in every process: take `max()`.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

from services.observability.batch_summary import OutputSummary

disable_created_metrics()  # the `_created` samples double the exposition and no dashboard reads them

EVENTS = Counter("onevoice_events_processed", "Input events applied (new, not duplicates or dead letters)")
DUPLICATES = Counter("onevoice_duplicates", "Redelivered events recognised by (source, id) and skipped")
STALE = Counter("onevoice_stale_versions", "Events older than the stored version of what they describe, ignored")
DEAD_LETTERS = Counter("onevoice_dead_letters", "Messages written to kam.dlq")
UNKNOWN_ACCOUNTS = Counter("onevoice_unknown_accounts", "Events naming accounts never upserted")
BATCHES = Counter("onevoice_batches", "Batches applied (one database transaction each)")
ALERT_CHANGES = Counter("onevoice_alert_status_changes", "Alert status changes committed, by new status",
                        ["status"])
ALERTS_OPENED = Counter("onevoice_alerts_opened", "Alerts opened, by rule", ["rule"])
ESCALATIONS = Counter("onevoice_escalations", "Alerts escalated by the timer of this process")
INSTRUCTIONS = Counter("onevoice_instructions", "Instructions to finance/ERP committed, by action", ["action"])
NOTICES = Counter("onevoice_notices", "Notices committed to kam.notices")
DATABASE_RETRIES = Counter("onevoice_database_retries",
                           "Batches tried again: the database was unreachable, or a conflict (deadlock) lost",
                           ["reason"])

BATCH_SIZE = Histogram("onevoice_batch_size_events", "Events per applied batch",
                       buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000))
BATCH_DURATION = Histogram("onevoice_batch_duration_seconds", "Time to apply one batch (its transaction)",
                           buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
END_TO_END = Histogram("onevoice_end_to_end_latency_seconds",
                       "From an event's receipt by this process to the broker's acknowledgement of an output "
                       "it caused", buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))

CONSUMER_LAG = Gauge("onevoice_consumer_lag_messages",
                     "Messages after the group's committed offset (log end minus committed), per input partition",
                     ["topic", "partition"])
OUTBOX_PENDING = Gauge("onevoice_outbox_pending", "Outputs committed but not yet published (all processes)")
OUTBOX_OLDEST_AGE = Gauge("onevoice_outbox_oldest_unpublished_age_seconds",
                          "Age of the oldest output committed but not yet published; 0 when none waits")
OPEN_ALERTS = Gauge("onevoice_open_alerts", "Alerts neither resolved nor waived (all processes)")
ESCALATED_OPEN = Gauge("onevoice_escalated_open_alerts", "Alerts whose status is escalated (all processes)")
ESCALATIONS_DUE = Gauge("onevoice_escalations_due",
                        "Alerts past their due time and not yet escalated (should stay near 0)")
LAST_BATCH = Gauge("onevoice_last_batch_timestamp_seconds", "Unix time this process last applied a batch")
READY = Gauge("onevoice_ready", "1 while /readyz answers ready, else 0")


def record_batch(counts: dict[str, int], outputs: OutputSummary, events: int, seconds: float, now: float) -> None:
    """Count one applied batch: the processor's counters and what its outputs say."""
    EVENTS.inc(counts.get("processed", 0))
    DUPLICATES.inc(counts.get("duplicates", 0))
    STALE.inc(counts.get("stale", 0))
    DEAD_LETTERS.inc(counts.get("dead_letters", 0))
    UNKNOWN_ACCOUNTS.inc(counts.get("unknown_accounts", 0))
    BATCHES.inc()
    for status, n in outputs.alert_statuses.items():
        ALERT_CHANGES.labels(status).inc(n)
    for rule, n in outputs.opened_by_rule.items():
        ALERTS_OPENED.labels(rule).inc(n)
    for action, n in outputs.instructions.items():
        INSTRUCTIONS.labels(action).inc(n)
    NOTICES.inc(outputs.notices)
    BATCH_SIZE.observe(events)
    BATCH_DURATION.observe(seconds)
    LAST_BATCH.set(now)


def record_lag(per_partition: dict[tuple[str, int], int]) -> None:
    """Replace the lag series with the partitions measured now (a partition gone is no longer reported)."""
    CONSUMER_LAG.clear()
    for (topic, partition), lag in per_partition.items():
        CONSUMER_LAG.labels(topic, str(partition)).set(lag)

"""Prometheus metrics of `onevoice notify` (served on ONEVOICE_NOTIFY_METRICS_PORT)."""

from prometheus_client import Counter, Gauge

RECORDED = Counter("onevoice_notify_recorded_total", "notifications recorded in the delivery log", ["state"])
SENT = Counter("onevoice_notify_sent_total", "notifications delivered", ["channel"])
RETRIED = Counter("onevoice_notify_retries_total", "sends that failed and will be tried again", ["channel"])
FAILED = Counter("onevoice_notify_failed_total", "notifications given up after the configured attempts "
                 "(recorded failed; `onevoice notify retry-failed` sends them again)", ["channel"])
NO_ADDRESS = Counter("onevoice_notify_no_address_total", "e-mails not sendable: the person has no address")
TAKEN_OVER = Counter("onevoice_notify_taken_over_total", "claimed notifications taken over from a process "
                     "that stopped without finishing them (at most one per sender may have been sent already)")
BACKLOG = Gauge("onevoice_notify_log_rows", "rows of the delivery log by state", ["state"])
UNREADABLE = Counter("onevoice_notify_unreadable_total", "kam.alerts/kam.notices messages that could not be read")

"""What operations sees of a running onevoice: metrics, health endpoints, logs and clear start-up errors.

Kept apart from the domain: the processor reports what a batch did (`BatchResult`), and this
package turns it into Prometheus series, log lines and readiness; nothing here changes state.
"""

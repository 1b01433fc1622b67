"""`onevoice status`: the stream's health in one look, from the store and the broker (joins no group)."""

from __future__ import annotations

import asyncio

from sqlalchemy import Engine

from services.domain import utcnow
from services.kafka_clients import client_options
from services.observability.lag import LagProbe
from services.observability.store_probe import read_instances, read_store_health


async def gather_status(settings, engine: Engine) -> dict:
    health = await asyncio.to_thread(read_store_health, engine, utcnow())
    instances = await asyncio.to_thread(read_instances, engine)
    probe = LagProbe(client_options(settings), settings.group_id)
    try:
        lag = await probe.measure()
    finally:
        await probe.close()
    worst = max(lag.items(), key=lambda item: item[1], default=(("", 0), 0))
    return {
        "group_id": settings.group_id,
        "consumer_lag": {"total": sum(lag.values()), "worst_partition": f"{worst[0][0]}-{worst[0][1]}",
                         "worst": worst[1],
                         "partitions": {f"{topic}-{partition}": n for (topic, partition), n in sorted(lag.items())}},
        "outbox": {"pending": health.outbox_pending, "oldest_age_s": round(health.outbox_oldest_age_s, 1)},
        "alerts": {"open": health.open_alerts, "escalated": health.escalated_open,
                   "escalations_due": health.escalations_due},
        "instances": instances,
    }

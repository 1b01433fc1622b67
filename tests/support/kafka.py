"""Publishing test messages to the session's broker."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer


async def send_messages(bootstrap: str, messages) -> None:
    """Publish (topic, key, value) messages in order, each acknowledged, with an idempotent producer."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for topic, key, value in messages:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()

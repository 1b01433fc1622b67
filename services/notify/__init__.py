"""Notifications: tells the people an alert or notice concerns, by e-mail, chat webhook, reminder and daily digest.

`onevoice notify` consumes kam.alerts and kam.notices in its own consumer group; each message
becomes rows of a delivery log in the store (one per notification, recipient and channel),
committed before the Kafka offsets, and senders work the log off with retries. See
services/notify/service.py for how the pieces fit.
"""

"""Event types, their data models and their topics (CONTRACT §3, §6)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Literal, Mapping

from pydantic import BaseModel, create_model

from .accounts import AccountUpserted, TeamMemberAssigned, TeamMemberRemoved
from .agreements import AgreementWithdrawn, ContractNegotiated, PriceAgreed, ServiceAgreed
from .decisions import DecisionMade
from .envelope import CloudEvent
from .finance import DunningTriggered
from .promotions import PromotionLaunched
from .stock import StockShortage

__all__ = [
    "EVENT_MODELS",
    "ENVELOPE_MODELS",
    "TOPIC_BY_TYPE",
    "TYPES_BY_TOPIC",
    "KEY_FIELD_BY_TOPIC",
    "INPUT_TOPICS",
    "OUTPUT_TOPICS",
    "ALERTS_TOPIC",
    "INSTRUCTIONS_TOPIC",
    "DLQ_TOPIC",
    "OPS_TOPIC",
    "NOTICES_TOPIC",
    "RELAYED_TOPICS",
]

ALERTS_TOPIC = "kam.alerts"
INSTRUCTIONS_TOPIC = "kam.instructions"
DLQ_TOPIC = "kam.dlq"
OPS_TOPIC = "kam.ops"
NOTICES_TOPIC = "kam.notices"

#: event ``type`` -> model of its ``data``
EVENT_MODELS: dict[str, type[BaseModel]] = {
    "account.upserted": AccountUpserted,
    "team.member_assigned": TeamMemberAssigned,
    "team.member_removed": TeamMemberRemoved,
    "price.agreed": PriceAgreed,
    "contract.negotiated": ContractNegotiated,
    "service.agreed": ServiceAgreed,
    "agreement.withdrawn": AgreementWithdrawn,
    "promotion.launched": PromotionLaunched,
    "stock.shortage": StockShortage,
    "dunning.triggered": DunningTriggered,
    "decision.made": DecisionMade,
}

#: event ``type`` -> input topic it is published to
TOPIC_BY_TYPE: dict[str, str] = {
    "account.upserted": "crm.accounts",
    "team.member_assigned": "crm.accounts",
    "team.member_removed": "crm.accounts",
    "price.agreed": "erp.agreements",
    "contract.negotiated": "erp.agreements",
    "service.agreed": "erp.agreements",
    "agreement.withdrawn": "erp.agreements",
    "promotion.launched": "erp.promotions",
    "stock.shortage": "erp.stock",
    "dunning.triggered": "finance.dunning",
    "decision.made": "kam.decisions",
}

#: input topic -> the ``data`` field producers use as the Kafka key
KEY_FIELD_BY_TOPIC: dict[str, str] = {
    "crm.accounts": "account_id",
    "erp.agreements": "agreement_id",
    "erp.promotions": "promotion_id",
    "erp.stock": "item_id",
    "finance.dunning": "account_id",
    "kam.decisions": "alert_id",
}

INPUT_TOPICS: tuple[str, ...] = tuple(KEY_FIELD_BY_TOPIC)
OUTPUT_TOPICS: tuple[str, ...] = (ALERTS_TOPIC, INSTRUCTIONS_TOPIC, NOTICES_TOPIC, DLQ_TOPIC, OPS_TOPIC)
#: the outputs that leave through the outbox (kam.ops is a snapshot published directly)
RELAYED_TOPICS: tuple[str, ...] = (ALERTS_TOPIC, INSTRUCTIONS_TOPIC, NOTICES_TOPIC, DLQ_TOPIC)

#: input topic -> event types carried on it, in table order
TYPES_BY_TOPIC: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {topic: tuple(t for t, tp in TOPIC_BY_TYPE.items() if tp == topic) for topic in INPUT_TOPICS}
)



def _envelope_model(event_type: str, data_model: type[BaseModel]) -> type[CloudEvent]:
    return create_model(  # type: ignore[call-overload]
        f"{data_model.__name__}Event",
        __base__=CloudEvent,
        __doc__=f"CloudEvent of type {event_type!r}.",
        type=(Literal[event_type], ...),  # type: ignore[valid-type]
        data=(data_model, ...),
    )


#: event type -> the whole CloudEvent with that type's ``data`` (documentation, and reading valid messages in one pass)
ENVELOPE_MODELS: dict[str, type[CloudEvent]] = {t: _envelope_model(t, m) for t, m in EVENT_MODELS.items()}

assert set(EVENT_MODELS) == set(TOPIC_BY_TYPE)
assert set(TOPIC_BY_TYPE.values()) == set(INPUT_TOPICS)

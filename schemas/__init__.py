"""onevoice message contract: CloudEvents input, typed event data, output messages.

>>> from schemas import decode_event, InvalidMessage
"""

from .accounts import AccountUpserted, TeamMemberAssigned, TeamMemberRemoved
from .agreements import AgreementWithdrawn, ContractNegotiated, PriceAgreed, ServiceAgreed
from .decisions import DecisionMade
from .decode import MAX_MESSAGE_BYTES, Event, InvalidMessage, decode_event
from .envelope import CloudEvent
from .finance import DunningTriggered
from .outputs import (
    AlertMessage,
    AllocationLine,
    DeadLetter,
    DeadLetterError,
    InstructionMessage,
    OpsSnapshot,
    dead_letter,
)
from .promotions import PromotionLaunched
from .registry import EVENT_MODELS, INPUT_TOPICS, KEY_FIELD_BY_TOPIC, OUTPUT_TOPICS, TOPIC_BY_TYPE
from .stock import ShortageOrder, StockShortage

__all__ = [
    "CloudEvent",
    "AccountUpserted",
    "TeamMemberAssigned",
    "TeamMemberRemoved",
    "PriceAgreed",
    "ContractNegotiated",
    "ServiceAgreed",
    "AgreementWithdrawn",
    "PromotionLaunched",
    "DunningTriggered",
    "StockShortage",
    "ShortageOrder",
    "DecisionMade",
    "EVENT_MODELS",
    "TOPIC_BY_TYPE",
    "KEY_FIELD_BY_TOPIC",
    "INPUT_TOPICS",
    "OUTPUT_TOPICS",
    "MAX_MESSAGE_BYTES",
    "InvalidMessage",
    "Event",
    "decode_event",
    "AlertMessage",
    "AllocationLine",
    "InstructionMessage",
    "DeadLetter",
    "DeadLetterError",
    "OpsSnapshot",
    "dead_letter",
]

"""finance.dunning (CONTRACT §3)."""

from __future__ import annotations

from typing import Literal

from .base import InputModel
from .types import Currency, DunningLevel, Id, Money, StrictDate

__all__ = ["ProposedAction", "DunningTriggered"]

ProposedAction = Literal["reminder", "delivery_block", "collection"]


class DunningTriggered(InputModel):
    """``dunning.triggered``"""

    dunning_id: Id
    account_id: Id
    invoice_id: Id
    level: DunningLevel
    amount: Money
    currency: Currency
    due_date: StrictDate
    proposed_action: ProposedAction

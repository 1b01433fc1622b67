"""erp.promotions (CONTRACT §3)."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from .base import InputModel
from .types import Country, Currency, Id, Money, StrictDate

__all__ = ["Audience", "PromotionLaunched"]

Audience = Literal["all_customers", "segment"]


class PromotionLaunched(InputModel):
    """``promotion.launched``"""

    promotion_id: Id
    country: Country
    product_id: Id
    price: Money
    currency: Currency
    valid_from: StrictDate
    valid_to: StrictDate
    audience: Audience
    launched_by: Id

    @model_validator(mode="after")
    def _check_validity(self):
        if self.valid_to < self.valid_from:
            raise ValueError("valid_to: must not be before valid_from")
        return self

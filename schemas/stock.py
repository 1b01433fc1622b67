"""erp.stock (CONTRACT §3)."""

from __future__ import annotations

from pydantic import model_validator

from .base import InputModel
from .types import AwareDatetime, Id, NonNegativeQty, PositiveQty

__all__ = ["ShortageOrder", "StockShortage"]


class ShortageOrder(InputModel):
    """One open order competing for a scarce item."""

    order_id: Id
    account_id: Id
    qty: PositiveQty
    ordered_at: AwareDatetime


class StockShortage(InputModel):
    """``stock.shortage``"""

    item_id: Id
    available_qty: NonNegativeQty
    orders: list[ShortageOrder]

    @model_validator(mode="after")
    def _check_unique_orders(self):
        seen: set[str] = set()
        for order in self.orders:
            if order.order_id in seen:
                raise ValueError(f"orders: duplicate order_id {order.order_id[:40]!r}")
            seen.add(order.order_id)
        return self

    @property
    def requested_qty(self) -> int:
        return sum(order.qty for order in self.orders)

    @property
    def is_shortage(self) -> bool:
        """True when the orders exceed what is available (CONTRACT §5)."""
        return self.requested_qty > self.available_qty

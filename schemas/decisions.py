"""kam.decisions (CONTRACT §3, §5)."""

from __future__ import annotations

from typing import Literal

from .base import InputModel
from .types import Comment, Id

__all__ = ["Decision", "DecisionMade"]

Decision = Literal["acknowledge", "resolve", "waive", "release", "proceed"]


class DecisionMade(InputModel):
    """``decision.made``"""

    alert_id: Id
    decision: Decision
    decided_by: Id
    comment: Comment | None = None

"""Base classes of the message models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class InputModel(BaseModel):
    """An incoming message body: strict types, immutable, unknown fields ignored.

    ``strict=True`` means JSON values are never coerced ("1" is not an int,
    true is not an int, 1.0 is not an int). Unknown fields are dropped so that
    producers can add fields without breaking us (forward compatible).
    """

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


class OutputModel(BaseModel):
    """A message onevoice publishes: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

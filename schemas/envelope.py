"""The CloudEvents 1.0 envelope, structured JSON mode (CONTRACT §2)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from .base import InputModel
from .types import AwareDatetime, Id, Text

__all__ = ["CloudEvent"]


class CloudEvent(InputModel):
    """Envelope of every input message. Extension attributes are ignored."""

    specversion: Literal["1.0"]
    id: Id
    source: Id
    type: Annotated[str, Field(min_length=1)]
    time: AwareDatetime
    subject: Text | None = None
    datacontenttype: Text | None = None
    data: dict[str, Any]

"""What every request of the inbox shares: the store, the settings, the decision publisher."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from sqlalchemy import Engine

from services.config import Settings
from services.web.decisions import DecisionPublisher


@dataclass
class WebContext:
    settings: Settings
    engine: Engine
    publisher: DecisionPublisher


def context_of(request: Request) -> WebContext:
    return request.app.state.web

"""Posting cards to Microsoft Teams and Slack incoming webhooks (httpx); the URL, which holds the secret, is never logged."""

from __future__ import annotations

import httpx

from services.notify.smtp import PermanentFailure, TemporaryFailure


class WebhookSender:
    def __init__(self, timeout: float = 15.0):
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def post(self, url: str, payload: dict) -> None:
        try:
            response = await self._client.post(url, json=payload)
        except httpx.HTTPError as exc:
            raise TemporaryFailure(f"{type(exc).__name__}") from None
        if response.status_code < 300:
            return
        if response.status_code in (408, 425, 429) or response.status_code >= 500:
            raise TemporaryFailure(f"HTTP {response.status_code}")
        raise PermanentFailure(f"HTTP {response.status_code}")

    async def close(self) -> None:
        await self._client.aclose()

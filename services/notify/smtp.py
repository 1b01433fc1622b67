"""Sending e-mail over SMTP with aiosmtplib, configured by one URL; the password never leaves this module.

`smtp://user:pass@host:587?starttls=true` (STARTTLS, then login), `smtps://…` (TLS from the first
byte, port 465 by default), `smtp://host:25` (plain, no login). Query options: `starttls`,
`timeout` (seconds), `verify` (false: accept any certificate, for test servers only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from services.notify.mime import OutgoingMail


class TemporaryFailure(Exception):
    """The server or the network refused for now: try again later."""


class PermanentFailure(Exception):
    """The server will never accept this message (5xx for the message or its recipient)."""


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    username: str | None
    password: str | None = field(repr=False)
    timeout: float
    verify: bool

    @property
    def safe(self) -> str:
        """For logs: never the password."""
        who = f"{self.username}@" if self.username else ""
        return f"{'smtps' if self.implicit_tls else 'smtp'}://{who}{self.host}:{self.port}"


def parse_smtp_url(url: str) -> SmtpTarget:
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError("ONEVOICE_SMTP_URL must start with smtp:// or smtps://")
    query = {k: v[-1].lower() for k, v in parse_qs(parts.query).items()}
    implicit = parts.scheme == "smtps"
    return SmtpTarget(host=parts.hostname or "127.0.0.1", port=parts.port or (465 if implicit else 25),
                      implicit_tls=implicit, starttls=query.get("starttls", "false") in ("true", "1", "yes"),
                      username=unquote(parts.username) if parts.username else None,
                      password=unquote(parts.password) if parts.password else None,
                      timeout=float(query.get("timeout", "30")), verify=query.get("verify", "true") != "false")


class SmtpSender:
    """One SMTP connection, opened on first use and again after any failure."""

    def __init__(self, target: SmtpTarget):
        self.target = target
        self._client: aiosmtplib.SMTP | None = None

    async def _connect(self) -> aiosmtplib.SMTP:
        tgt = self.target
        client = aiosmtplib.SMTP(hostname=tgt.host, port=tgt.port, use_tls=tgt.implicit_tls, start_tls=False,
                                 timeout=tgt.timeout, validate_certs=tgt.verify)
        await client.connect()
        if tgt.starttls and not tgt.implicit_tls:
            await client.starttls()
        if tgt.username:
            await client.login(tgt.username, tgt.password or "")
        return client

    async def send(self, mail: OutgoingMail) -> None:
        try:
            if self._client is None or not self._client.is_connected:
                self._client = await self._connect()
            errors, _ = await self._client.sendmail(mail.sender, [mail.recipient], mail.data)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            await self.close()
            codes = [r.code for r in exc.recipients]
            if all(500 <= c < 600 for c in codes):
                raise PermanentFailure(f"recipient refused ({codes})") from None
            raise TemporaryFailure(f"recipient deferred ({codes})") from None
        except aiosmtplib.SMTPResponseException as exc:
            await self.close()
            if 500 <= exc.code < 600 and exc.code not in (530, 535, 554):  # auth and policy errors may pass
                raise PermanentFailure(f"{exc.code} {exc.message[:200]}") from None
            raise TemporaryFailure(f"{exc.code} {exc.message[:200]}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self.close()
            raise TemporaryFailure(f"{type(exc).__name__}: {str(exc)[:200]}") from None
        if errors:  # some recipients refused: we send one recipient per message, so this is that one
            raise TemporaryFailure(f"recipient deferred: {sorted(errors)}")

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                if client.is_connected:
                    await client.quit()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail in any way
                client.close()


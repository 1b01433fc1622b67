"""Keeping passwords out of messages: masked URLs, and a log filter that blanks known secrets.

A password must never reach a log line, an exception text, `kam.ops` or /metrics. The code that
builds messages masks URLs itself (`mask_url`); `SecretsFilter` is the safety net under
everything else (third-party libraries, a traceback quoting a connection string): installed on
the process's log handlers, it replaces every configured secret value in a record's text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "***"
# scheme://user:password@host — whatever the scheme, the password part is masked
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<password>[^@\s]*)(?P<tail>@)")


def mask_url(url: str | None) -> str:
    """The URL with its password replaced by ``***`` (``postgresql://kam:***@db:5432/onevoice``)."""
    if not url:
        return url or ""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['tail']}", str(url))


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with URL passwords and each of `secrets` (non-empty) replaced by ``***``."""
    text = mask_url(text)
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, MASK)
    return text


class SecretsFilter(logging.Filter):
    """Rewrites a record whose text contains a URL password or one of the known secrets.

    Attached to handlers (not loggers) so it sees the records of every library that
    propagates to them. The check is a substring search per secret: cheap next to formatting.
    """

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        text = message
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        masked = mask_text(message, self.secrets)
        exc_text = mask_text(record.exc_text, self.secrets) if record.exc_text else record.exc_text
        if masked != text or exc_text != record.exc_text:
            record.msg, record.args = masked, None
            record.exc_text = exc_text
        return True


def install_secrets_filter(secrets: Iterable[str]) -> SecretsFilter:
    """Put one `SecretsFilter` on every handler of the root logger (call after logging is configured)."""
    flt = SecretsFilter(secrets)
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, SecretsFilter)]:
            handler.removeFilter(old)
        handler.addFilter(flt)
    return flt

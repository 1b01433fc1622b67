"""Who is asking: a bearer token (API), a session cookie (pages), or an SSO proxy's trusted header.

Cookies are ambient (a browser sends them with any site's form), so every state-changing request
signed in by cookie or trusted header must carry the session's CSRF token (form field `csrf` or
header `X-CSRF-Token`); a bearer token is never ambient and needs none. Failed sign-ins count per
client in the store; past the limit the client gets 429 until the window has passed.
Secrets are never logged: log lines name a token only by its id.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.web import queries, sessions, tokens
from services.web.context import WebContext, context_of
from services.web.tokens import Holder

SESSION_COOKIE = "onevoice_session"
SIGN_IN_CSRF_COOKIE = "onevoice_sign_in"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
log = logging.getLogger("onevoice.web.auth")
bearer_scheme = HTTPBearer(auto_error=False, description="a personal access token from `onevoice token create`")


@dataclass(frozen=True)
class SignedIn:
    """The signed-in person and how: `token` (bearer), `session` (cookie) or `header` (SSO proxy)."""

    holder: Holder
    via: str
    csrf: str | None
    viewer: queries.Viewer


class SignInRequired(Exception):
    """No valid credentials: the API answers 401, a page sends the browser to the sign-in form."""


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def check_rate(ctx: WebContext, request: Request) -> None:
    settings = ctx.settings
    if sessions.too_many_failures(ctx.engine, client_of(request), settings.web_sign_in_limit,
                                  settings.web_sign_in_window_s):
        raise HTTPException(429, "too many failed sign-ins; try again later",
                            headers={"Retry-After": str(int(settings.web_sign_in_window_s))})


def failed(ctx: WebContext, request: Request, why: str) -> None:
    log.warning("failed sign-in from %s: %s", client_of(request), why)
    sessions.record_failure(ctx.engine, client_of(request), ctx.settings.web_sign_in_window_s)


def identify(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)) -> SignedIn:
    """The signed-in person, by trusted header, bearer token or session cookie (in that order)."""
    ctx = context_of(request)
    settings = ctx.settings
    header = settings.web_trusted_header
    if header and request.headers.get(header):
        return _by_trusted_header(ctx, request, request.headers[header].strip())
    if credentials is not None:
        check_rate(ctx, request)
        holder = tokens.holder_of(ctx.engine, credentials.credentials)
        if holder is None:
            failed(ctx, request, "unknown, revoked or expired bearer token")
            raise SignInRequired()
        return SignedIn(holder, "token", None, viewer_of(ctx, holder))
    cookie = request.cookies.get(SESSION_COOKIE)
    found = sessions.session_of(ctx.engine, cookie) if cookie else None
    if found is None:
        raise SignInRequired()
    holder, csrf = found
    return SignedIn(holder, "session", csrf, viewer_of(ctx, holder))


def _by_trusted_header(ctx: WebContext, request: Request, person_id: str) -> SignedIn:
    """The proxy vouches for the person; a session of theirs carries the CSRF token of their forms."""
    admins = {p.strip() for p in ctx.settings.web_admins.split(",") if p.strip()}
    cookie = request.cookies.get(SESSION_COOKIE)
    found = sessions.session_of(ctx.engine, cookie) if cookie else None
    if found is not None and found[0].person_id == person_id and found[0].token_id is None:
        holder, csrf = found
    else:
        holder = Holder(person_id, person_id in admins)
        cookie, csrf = sessions.open_session(ctx.engine, holder, ctx.settings.web_session_hours)
        request.state.new_session_cookie = cookie
    return SignedIn(holder, "header", csrf, viewer_of(ctx, holder))


def viewer_of(ctx: WebContext, holder: Holder) -> queries.Viewer:
    with ctx.engine.connect() as conn:
        key_accounts = frozenset(queries.memberships(conn, holder.person_id))
    return queries.Viewer(holder.person_id, holder.admin, key_accounts)


def csrf_ok(signed: SignedIn, presented: str | None) -> bool:
    if signed.via == "token":
        return True
    return bool(presented) and signed.csrf is not None and hmac.compare_digest(presented, signed.csrf)


def api_user(request: Request, signed: SignedIn = Depends(identify)) -> SignedIn:
    """For the API: state-changing calls signed in by cookie or header need the CSRF header too."""
    if request.method not in SAFE_METHODS and not csrf_ok(signed, request.headers.get(CSRF_HEADER)):
        raise HTTPException(403, "missing or wrong CSRF token (header X-CSRF-Token)")
    return signed

"""The pages of the inbox: sign-in, My inbox, alert lists with filters, an alert, a key account.

Server-rendered (Jinja2) with one small script of our own (static/app.js) that follows a sent
decision until its outcome arrives; every page also works without it. Every form carries the
session's CSRF token; the sign-in form, before any session exists, a double-submit cookie.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from schemas.outputs import OPEN_STATUSES
from services.rules.alerts import DECISIONS
from services.web import queries, sessions, tokens, views
from services.web.auth import (SESSION_COOKIE, SIGN_IN_CSRF_COOKIE, SignedIn, check_rate, csrf_ok, failed, identify)
from services.web.context import context_of
from services.web.decisions import BrokerUnavailable, decision_event, send_decision
from services.web.i18n import LANG_COOKIE, LANGUAGES, pick_language, translator
from services.web.notices import mark_all_read, mark_read

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
STATUSES = ("open", "acknowledged", "escalated", "resolved", "waived")
SEVERITIES = ("critical", "high", "medium", "low")
RULES = ("duplicate_global_contract", "local_price_below_global", "local_price_above_global",
         "promotion_undercuts_global", "contradicting_service_terms", "unauthorized_commitment",
         "key_account_dunning", "scarce_stock_allocation", "key_account_handover")


def local_path(request: Request) -> str:
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return quote(path, safe="")


def safe_next(target: str | None) -> str:
    """Only paths of this site: no scheme, no host, no protocol-relative `//`."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def secure(request: Request) -> bool:
    return request.url.scheme == "https" or context_of(request).settings.web_secure_cookies


def set_session_cookie(request: Request, response: Response, cookie: str) -> None:
    hours = context_of(request).settings.web_session_hours
    response.set_cookie(SESSION_COOKIE, cookie, max_age=int(hours * 3600), path="/", httponly=True, samesite="lax",
                        secure=secure(request))


def language(request: Request) -> str:
    return pick_language(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))


def render(request: Request, template: str, signed: SignedIn | None, status_code: int = 200, **context) -> HTMLResponse:
    lang = language(request)
    gettext = translator(lang)
    return templates.TemplateResponse(request, template, dict(
        context, _=gettext, lang=lang, languages=LANGUAGES, signed=signed, me=signed.viewer if signed else None,
        csrf=signed.csrf if signed else None, here=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        time_left=views.time_left, my_name=context.get("my_name")), status_code=status_code)


def _my_name(conn, signed: SignedIn) -> str:
    return queries.names(conn, [signed.viewer.person_id]).get(signed.viewer.person_id) or signed.viewer.person_id


def _require_csrf(signed: SignedIn, presented: str | None) -> None:
    if not csrf_ok(signed, presented):
        raise HTTPException(403, "missing or wrong CSRF token")


# -- sign-in ------------------------------------------------------------------------------------


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_form(request: Request, next: str = "/") -> HTMLResponse:
    return _sign_in_page(request, next)


def _sign_in_page(request: Request, next_path: str, error: str | None = None, status_code: int = 200) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = render(request, "sign_in.html", None, status_code, next=safe_next(next_path), form_csrf=token,
                      error=error)
    response.set_cookie(SIGN_IN_CSRF_COOKIE, token, max_age=3600, path="/sign-in", httponly=True, samesite="strict",
                        secure=secure(request))
    return response


@router.post("/sign-in")
def sign_in(request: Request, token: str = Form(""), csrf: str = Form(""), next: str = Form("/")) -> Response:
    ctx = context_of(request)
    expected = request.cookies.get(SIGN_IN_CSRF_COOKIE)
    if not expected or not secrets.compare_digest(expected, csrf):
        return _sign_in_page(request, next, "The form expired. Please try again.", 403)
    try:
        check_rate(ctx, request)
    except HTTPException:
        return _sign_in_page(request, next, "Too many failed sign-ins. Try again later.", 429)
    holder = tokens.holder_of(ctx.engine, token.strip())
    if holder is None:
        failed(ctx, request, "unknown, revoked or expired token on the sign-in form")
        return _sign_in_page(request, next, "That token is unknown, revoked or expired.", 401)
    cookie, _csrf = sessions.open_session(ctx.engine, holder, ctx.settings.web_session_hours)
    response = RedirectResponse(safe_next(next), status_code=303)
    set_session_cookie(request, response, cookie)
    response.delete_cookie(SIGN_IN_CSRF_COOKIE, path="/sign-in")
    return response


@router.post("/sign-out")
def sign_out(request: Request, signed: SignedIn = Depends(identify), csrf: str = Form("")) -> Response:
    _require_csrf(signed, csrf)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        sessions.close_session(context_of(request).engine, cookie)
    response = RedirectResponse("/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/language/{lang}")
def switch_language(request: Request, lang: str, next: str = "/") -> Response:
    response = RedirectResponse(safe_next(next), status_code=303)
    if lang in LANGUAGES:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, path="/", samesite="lax", secure=secure(request))
    return response


# -- inbox and lists ------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def inbox(request: Request, signed: SignedIn = Depends(identify)) -> HTMLResponse:
    ctx = context_of(request)
    viewer = signed.viewer
    with queries.snapshot(ctx.engine) as conn:
        page = queries.list_alerts(conn, viewer, queries.AlertFilter(statuses=tuple(OPEN_STATUSES),
                                                                     involving=viewer.person_id), limit=100)
        notices = queries.my_notices(conn, viewer, limit=30,
                                     everywhere=viewer.person_id == ctx.settings.fallback_assignee)
        people = {a["assignee"] for a in page.items}
        names = queries.names(conn, people | {viewer.person_id})
        accounts = queries.account_names(conn, {a["key_account_id"] for a in page.items} |
                                         {n["key_account_id"] for n in notices})
    return render(request, "inbox.html", signed, alerts=page.items, more=page.next_cursor is not None,
                  notices=notices, names=names, accounts=accounts, my_name=names.get(viewer.person_id),
                  escalates=views.escalates_at)


@router.get("/alerts", response_class=HTMLResponse)
def alert_list(request: Request, signed: SignedIn = Depends(identify), status: str = "active", severity: str = "",
               rule: str = "", key_account_id: str = "", assignee: str = "", cursor: str = "") -> HTMLResponse:
    ctx = context_of(request)
    viewer = signed.viewer
    statuses = tuple(OPEN_STATUSES) if status == "active" else (status,) if status in STATUSES else ()
    flt = queries.AlertFilter(statuses=statuses, severities=(severity,) if severity in SEVERITIES else (),
                              rules=(rule,) if rule in RULES else (),
                              key_account_ids=(key_account_id,) if key_account_id else (),
                              assignee=viewer.person_id if assignee == "me" else assignee or None)
    with queries.snapshot(ctx.engine) as conn:
        try:
            page = queries.list_alerts(conn, viewer, flt, limit=50, cursor=cursor or None)
        except ValueError:
            page = queries.list_alerts(conn, viewer, flt, limit=50)
        names = queries.names(conn, {a["assignee"] for a in page.items} | {viewer.person_id})
        accounts = queries.account_names(conn, {a["key_account_id"] for a in page.items} | set(viewer.key_accounts))
    filters = {"status": status, "severity": severity, "rule": rule, "key_account_id": key_account_id,
               "assignee": assignee}
    next_link = None
    if page.next_cursor:
        next_link = "/alerts?" + "&".join(f"{k}={quote(v)}" for k, v in filters.items() if v) + \
                    f"&cursor={page.next_cursor}"
    return render(request, "alerts.html", signed, alerts=page.items, names=names, accounts=accounts, filters=filters,
                  statuses=STATUSES, severities=SEVERITIES, rules=RULES, next_link=next_link,
                  my_name=names.get(viewer.person_id), escalates=views.escalates_at)


# -- one alert --------------------------------------------------------------------------------------


@router.get("/alerts/{alert_id}", response_class=HTMLResponse)
def alert_page(request: Request, alert_id: str, signed: SignedIn = Depends(identify), sent: str = "",
               error: str = "") -> HTMLResponse:
    with queries.snapshot(context_of(request).engine) as conn:
        detail = views.alert_detail(conn, signed.viewer, alert_id)
        my_name = _my_name(conn, signed)
    if detail is None:
        return render(request, "not_found.html", signed, 404, my_name=my_name)
    pending = next((d for d in detail["decisions"] if d["event_id"] == sent), None)
    return render(request, "alert.html", signed, alert=detail, names=detail["names"], pending=pending,
                  error=error if error in _DECISION_ERRORS else None, my_name=my_name,
                  decisions_all=DECISIONS)


_DECISION_ERRORS = {"forbidden": "You may not decide this alert.", "closed": "This alert is closed.",
                    "broker": "Kafka is not reachable; your decision was not sent. Try again."}


@router.post("/alerts/{alert_id}/decide")
async def decide(request: Request, alert_id: str, signed: SignedIn = Depends(identify), decision: str = Form(...),
                 comment: str = Form(""), csrf: str = Form("")) -> Response:
    _require_csrf(signed, csrf)
    ctx = context_of(request)
    if decision not in DECISIONS:
        raise HTTPException(422, "unknown decision")
    check = await run_in_threadpool(_check, ctx.engine, signed, alert_id, decision)
    back = f"/alerts/{quote(alert_id, safe='')}"
    if check is not None:
        if check.status_code == 404:
            raise HTTPException(404)
        return RedirectResponse(f"{back}?error={'closed' if check.status_code == 409 else 'forbidden'}", 303)
    event = decision_event(alert_id=alert_id, decision=decision, decided_by=signed.viewer.person_id,
                           comment=comment.strip()[:2000] or None, source=ctx.settings.web_decision_source)
    try:
        await send_decision(ctx.engine, ctx.publisher, event)
    except BrokerUnavailable:
        return RedirectResponse(f"{back}?error=broker", 303)
    return RedirectResponse(f"{back}?sent={event['id']}", 303)


def _check(engine, signed: SignedIn, alert_id: str, decision: str):
    with queries.snapshot(engine) as conn:
        return views.check_decision(conn, signed.viewer, alert_id, decision)


# -- key accounts and notices -----------------------------------------------------------------------------


@router.get("/key-accounts/{key_account_id}", response_class=HTMLResponse)
def key_account_page(request: Request, key_account_id: str, signed: SignedIn = Depends(identify)) -> Response:
    with queries.snapshot(context_of(request).engine) as conn:
        detail = views.key_account_detail(conn, signed.viewer, key_account_id)
        if detail is None:
            found = queries.account(conn, key_account_id)
            if found is not None and found["root_id"] != key_account_id \
                    and signed.viewer.sees_key_account(found["root_id"]):
                return RedirectResponse(f"/key-accounts/{quote(found['root_id'], safe='')}", 303)
        my_name = _my_name(conn, signed)
    if detail is None:
        return render(request, "not_found.html", signed, 404, my_name=my_name)
    return render(request, "key_account.html", signed, ka=detail, names=detail["names"], my_name=my_name)


@router.post("/notices/{notice_id}/read")
def notice_read(request: Request, notice_id: str, signed: SignedIn = Depends(identify), csrf: str = Form(""),
                next: str = Form("/")) -> Response:
    _require_csrf(signed, csrf)
    mark_read(context_of(request).engine, signed.viewer, notice_id)
    return RedirectResponse(safe_next(next), 303)


@router.post("/notices/read-all")
def notices_read_all(request: Request, signed: SignedIn = Depends(identify), csrf: str = Form(""),
                     next: str = Form("/")) -> Response:
    _require_csrf(signed, csrf)
    ctx = context_of(request)
    mark_all_read(ctx.engine, signed.viewer, everywhere=signed.viewer.person_id == ctx.settings.fallback_assignee)
    return RedirectResponse(safe_next(next), 303)


# -- the API reference, from the app's own OpenAPI document (no Swagger UI from a CDN) -------------


@router.get("/docs", response_class=HTMLResponse)
def api_docs(request: Request) -> HTMLResponse:
    spec = request.app.openapi()
    operations = [{"method": method.upper(), "path": path, **op} for path, item in spec["paths"].items()
                  for method, op in item.items()]
    return render(request, "docs.html", None, spec=spec, operations=operations)

"""The inbox's REST API under /api/v1: alerts, decisions, key accounts, notices, the signed-in person.

Bearer tokens sign in (a browser's session cookie works too, with the CSRF header on POST).
What a person may not see answers 404, exactly like what does not exist; a decision they may
not take answers 403; a decision on an alert the inbox already knows is closed answers 409.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from services.web import queries, views
from services.web.auth import SignedIn, api_user
from services.web.context import context_of
from services.web.decisions import BrokerUnavailable, decision_event, send_decision
from services.web.models import (AlertDetail, AlertList, DecisionAccepted, DecisionRequest, DecisionStatus,
                                 KeyAccountDetail, Me, NoticeItem, NoticeList)
from services.web.notices import mark_read

router = APIRouter(prefix="/api/v1", tags=["inbox"])
User = Annotated[SignedIn, Depends(api_user)]


def fast_json(body: dict) -> Response:
    """The answer as JSON without FastAPI validating it again against its response model: the shapes are
    the pipeline's own kam.alerts fields (services/outputs.py), and re-validating 50 alerts cost more
    than the query behind them. The response models still document them in the OpenAPI document."""
    return Response(orjson.dumps(body), media_type="application/json")


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


@router.get("/me", response_model=Me, summary="The signed-in person, their key accounts and roles")
def get_me(request: Request, user: User) -> dict:
    with queries.snapshot(context_of(request).engine) as conn:
        return views.me(conn, user.viewer)


@router.get("/alerts", response_model=AlertList, summary="Alerts I may see, most urgent first")
def get_alerts(
    request: Request, user: User,
    status: Annotated[str | None, Query(description="comma-separated statuses, e.g. open,acknowledged,escalated")] = None,
    assignee: Annotated[str | None, Query(description="`me` or a person id")] = None,
    key_account_id: Annotated[str | None, Query(description="comma-separated key account ids")] = None,
    rule: Annotated[str | None, Query(description="comma-separated rule names")] = None,
    severity: Annotated[str | None, Query(description="comma-separated severities")] = None,
    involving: Annotated[str | None, Query(description="`me` or a person id: assigned to them or naming them "
                                                       "among the recipients (My inbox)")] = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> dict:
    me = user.viewer.person_id
    flt = queries.AlertFilter(statuses=_split(status), assignee=me if assignee == "me" else assignee,
                              key_account_ids=_split(key_account_id), rules=_split(rule), severities=_split(severity),
                              involving=me if involving == "me" else involving)
    try:
        with queries.snapshot(context_of(request).engine) as conn:
            page = queries.list_alerts(conn, user.viewer, flt, limit=limit, cursor=cursor)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return fast_json({"items": [queries.as_message(row) for row in page.items], "next_cursor": page.next_cursor})


@router.get("/alerts/{alert_id}", response_model=AlertDetail,
            summary="An alert with its history, evidence, instruction and the decisions I may take")
def get_alert(request: Request, user: User, alert_id: str) -> dict:
    with queries.snapshot(context_of(request).engine) as conn:
        detail = views.alert_detail(conn, user.viewer, alert_id)
    if detail is None:
        raise HTTPException(404, "no such alert")
    return fast_json(detail)


@router.post("/alerts/{alert_id}/decisions", status_code=202, response_model=DecisionAccepted,
             summary="Decide an alert: publishes decision.made on kam.decisions; poll /decisions/{event_id}",
             responses={403: {"description": "not yours to decide"}, 404: {"description": "no such alert"},
                        409: {"description": "the alert is already closed"}, 503: {"description": "Kafka away"}})
async def post_decision(request: Request, user: User, alert_id: str, body: DecisionRequest) -> dict:
    ctx = context_of(request)
    refusal = await run_in_threadpool(_check, ctx.engine, user, alert_id, body.decision)
    if refusal is not None:
        raise HTTPException(refusal.status_code, {"code": refusal.code, "message": refusal.message})
    event = decision_event(alert_id=alert_id, decision=body.decision, decided_by=user.viewer.person_id,
                           comment=body.comment, source=ctx.settings.web_decision_source)
    try:
        await send_decision(ctx.engine, ctx.publisher, event)
    except BrokerUnavailable:
        raise HTTPException(503, "Kafka is not reachable; the decision was not sent") from None
    return {"event_id": event["id"], "status": "pending"}


def _check(engine, user: SignedIn, alert_id: str, decision: str):
    with queries.snapshot(engine) as conn:
        return views.check_decision(conn, user.viewer, alert_id, decision)


@router.get("/decisions/{event_id}", response_model=DecisionStatus,
            summary="What became of a decision: pending, applied, or rejected with the dead-letter code")
def get_decision(request: Request, user: User, event_id: str) -> dict:
    with queries.snapshot(context_of(request).engine) as conn:
        row = queries.decision(conn, event_id)
    if row is None or not (user.viewer.admin or row["decided_by"] == user.viewer.person_id):
        raise HTTPException(404, "no such decision")
    sent = views.sent_decision(row)
    return {"event_id": event_id, "alert_id": row["alert_id"], "decision": row["decision"],
            "status": sent["status"], "error": sent["error"]}


@router.get("/key-accounts/{key_account_id}", response_model=KeyAccountDetail,
            summary="A key account: hierarchy, team, active agreements, open alerts, recent notices")
def get_key_account(request: Request, user: User, key_account_id: str) -> dict:
    with queries.snapshot(context_of(request).engine) as conn:
        detail = views.key_account_detail(conn, user.viewer, key_account_id)
    if detail is None:
        raise HTTPException(404, "no such key account")
    return detail


@router.get("/notices", response_model=NoticeList, summary="Notices addressed to me, newest first")
def get_notices(request: Request, user: User, unread: bool = False,
                limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict:
    ctx = context_of(request)
    with queries.snapshot(ctx.engine) as conn:
        items = queries.my_notices(conn, user.viewer, limit=limit, unread_only=unread,
                                   everywhere=user.viewer.person_id == ctx.settings.fallback_assignee)
    return {"items": items}


@router.post("/notices/{notice_id}/read", response_model=NoticeItem, summary="Mark a notice read")
def post_notice_read(request: Request, user: User, notice_id: str) -> dict:
    found = mark_read(context_of(request).engine, user.viewer, notice_id)
    if found is None:
        raise HTTPException(404, "no such notice")
    return found

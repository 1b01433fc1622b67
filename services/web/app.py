"""The FastAPI application of `onevoice web`: the API, the pages, health, static files.

Reads the same store and settings as `onevoice run`; acts only by publishing decisions.
Several web processes may serve one store: sessions, tokens and the sign-in brake live in it.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine, text

from services.config import Settings
from services.store.db import create_tables, make_engine
from services.web import api, pages
from services.web.auth import SESSION_COOKIE, SignInRequired
from services.web.context import WebContext
from services.web.decisions import DecisionPublisher

STATIC_DIR = Path(__file__).parent / "static"
log = logging.getLogger("onevoice.web")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def create_app(settings: Settings | None = None, *, engine: Engine | None = None,
               publisher: DecisionPublisher | None = None, migrate: bool = True) -> FastAPI:
    """The inbox app over `settings` (read from the environment when not given)."""
    settings = settings or Settings()
    engine = engine or make_engine(settings.database_url)
    publisher = publisher or DecisionPublisher(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if migrate:
            await run_in_threadpool(create_tables, engine)
        try:
            yield
        finally:
            await publisher.stop()

    app = FastAPI(title="onevoice inbox API", version="1", lifespan=lifespan, openapi_url="/api/v1/openapi.json",
                  docs_url=None, redoc_url=None,
                  description="The KAM inbox of onevoice: alerts, their evidence and history, decisions "
                              "(published as decision.made on kam.decisions), key accounts and notices.")
    app.state.web = WebContext(settings=settings, engine=engine, publisher=publisher)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/healthz", tags=["health"], summary="The process is up")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="The store and the broker are reachable")
    async def readyz() -> JSONResponse:
        store = await run_in_threadpool(_store_reachable, engine)
        broker = await publisher.reachable()
        ok = store and broker
        return JSONResponse({"status": "ok" if ok else "unavailable", "checks": {"store": store, "broker": broker}},
                            status_code=200 if ok else 503)

    @app.exception_handler(SignInRequired)
    async def sign_in_required(request: Request, _exc: SignInRequired):
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": "sign in with a bearer token"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        response = RedirectResponse(f"/sign-in?next={pages.local_path(request)}", status_code=303)
        if request.cookies.get(SESSION_COOKIE):
            response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.middleware("http")
    async def headers_and_cookies(request: Request, call_next):
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        new_cookie = getattr(request.state, "new_session_cookie", None)
        if new_cookie:
            pages.set_session_cookie(request, response, new_cookie)
        return response

    return app


def _store_reachable(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False

"""The FastAPI application: one router per resource, a connection pool opened in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from prometheus_client import CollectorRegistry, generate_latest
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request

from api import errors
from api.auth import PasswordChecks
from api.deps import BODY_SCHEMAS, Role, Viewer
from api.errors import ApiError
from api.jsonsafe import FiniteJSONResponse
from api.limits import MAX_BODY, MAX_SMALL_BODY, RequestLimits
from api.live import StreamSlots, TicketFeed
from api.routes import (
    alerts,
    auth,
    cabinets,
    commands,
    crews,
    energy,
    fleetmap,
    health,
    lamps,
    lighting,
    maintenance,
    ngsild,
    overview,
    pages,
    public,
    quarantine,
    reports,
    schedules,
    tickets,
    users,
)
from energy.nights import Pricing
from energy.tariff import DEFAULT_CO2_KG_PER_KWH, Tariff
from fieldnet.broker import Broker
from kernel.clock import Clock
from kernel.database import Database, FreshCheck
from lighting.engine import LightingEngine, follow_forever

logger = logging.getLogger(__name__)
# How long a call waits for a database connection before it answers 503 (database unavailable).
_POOL_WAIT_S = 5.0

__all__ = ["ROUTERS", "create_app"]

ROUTERS = (
    auth.router,
    users.router,
    health.router,
    lamps.router,
    cabinets.router,
    maintenance.router,
    lighting.router,
    overview.router,
    fleetmap.router,
    tickets.router,
    commands.router,
    crews.router,
    public.router,
    reports.router,
    schedules.router,
    alerts.router,
    quarantine.router,
    ngsild.router,
    energy.router,
)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _load_engine(database_url: str) -> LightingEngine:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return LightingEngine.load(conn)


def create_app(
    *,
    database_url: str,
    broker: Broker,
    metrics: CollectorRegistry | None = None,
    engine: LightingEngine | None = None,
    clock: Clock | None = None,
    command_pace: float = 2000.0,
    timezone: str = "Asia/Shanghai",
    ingest_stall_s: float = 15.0,
    max_stream_clients: int = 1000,
    max_body: int = MAX_BODY,
    max_small_body: int = MAX_SMALL_BODY,
    secure_cookies: bool = False,
    docs: bool = True,
    tariff: str = "0.60",
    currency: str = "CNY",
    co2_kg_per_kwh: float = DEFAULT_CO2_KG_PER_KWH,
) -> FastAPI:
    """Build the app. In the gateway's process pass its `engine` (fed by the gateway's batches), its `clock`
    and its `metrics` registry (served at /metrics). Alone, the app loads the engine from PostgreSQL and
    follows `lamp_latest` and the schedules by polling."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One pool for the routes (its loop face and its worker-thread face), checked as each connection is
        # handed out: after a database restart or a failover the next call gets a fresh connection, not a 500.
        db = Database(
            database_url, name="lamplighter-api", size=10, thread_size=4, autocommit=False, wait_s=_POOL_WAIT_S
        )
        async with db, contextlib.AsyncExitStack() as stack:
            pool, sync_pool = db.pool, db.threads
            # Token checks have their own few connections, so a busy pool never keeps anyone from signing in.
            auth_pool = AsyncConnectionPool(
                database_url, min_size=1, max_size=3, open=False, check=FreshCheck().async_,
                kwargs={"application_name": "lamplighter-api-auth"}, timeout=_POOL_WAIT_S,
            )  # fmt: skip
            await auth_pool.open()
            stack.push_async_callback(auth_pool.close)
            app.state.pool = pool
            app.state.auth_pool = auth_pool
            app.state.sync_pool = sync_pool
            feed = TicketFeed(db, max_clients=max_stream_clients)
            app.state.ticket_feed = feed
            feed_task = asyncio.create_task(feed.run(), name="ticket-event-feed")
            stack.push_async_callback(_cancel, feed_task)
            follower = None
            if app.state.engine is None:
                app.state.engine = await asyncio.to_thread(_load_engine, database_url)
                follower = asyncio.create_task(follow_forever(app.state.engine, db, states=True))
            warming = asyncio.create_task(fleetmap.warm(app), name="map-layout")
            stack.push_async_callback(_cancel, warming)
            try:
                yield
            finally:
                if follower is not None:
                    follower.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await follower

    app = FastAPI(
        title="lamplighter",
        version="0.1.0",
        lifespan=lifespan,
        description="Smart streetlight monitoring backend",
        default_response_class=FiniteJSONResponse,
        docs_url=None,  # served below, to signed-in users only
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.broker = broker  # logged in as the API's own account: the health check connects
    app.state.engine = engine
    app.state.clock = clock or Clock()
    app.state.command_pace = command_pace
    app.state.timezone = timezone
    app.state.pricing = Pricing(Tariff.parse(tariff), co2_kg_per_kwh, currency, ZoneInfo(timezone))
    app.state.ingest_stall_s = ingest_stall_s
    app.state.streams = StreamSlots()
    app.state.password_checks = PasswordChecks()
    app.state.secure_cookies = secure_cookies  # served over https (behind a proxy that terminates TLS)
    app.add_middleware(GZipMiddleware, minimum_size=4096)
    app.add_middleware(RequestLimits, max_body=max_body, max_small_body=max_small_body)
    errors.install(app)
    for r in ROUTERS:
        app.include_router(r, responses=errors.RESPONSES)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            doc.setdefault("components", {}).setdefault("schemas", {}).update(BODY_SCHEMAS)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    pages.install(app)
    if docs:

        @app.get("/docs", include_in_schema=False)
        async def swagger(request: Request) -> Response:
            """Role: any signed-in user (a browser without a session is sent to the login form, and back here
            after it). The interactive API documentation (`LAMPLIGHTER_API_DOCS=false` hides it and the
            schema)."""
            try:
                await Role(None, doc="any signed-in user")(request, None)
            except ApiError as exc:
                if exc.status_code != 401:
                    raise
                return RedirectResponse("/login?next=/docs", status_code=303)
            return get_swagger_ui_html(  # its script and style are served by the app itself: /docs works offline
                openapi_url="/openapi.json",
                title="lamplighter API",
                swagger_js_url="/static/vendor/swagger-ui-bundle.js",
                swagger_css_url="/static/vendor/swagger-ui.css",
                swagger_favicon_url="/static/vendor/swagger-favicon-32x32.png",
            )

    if metrics is not None:

        @app.get("/metrics", response_class=PlainTextResponse, tags=["metrics"])
        def prometheus(user: Viewer) -> bytes:
            """Role: viewer (Prometheus scrapes with `authorization: {credentials: <a viewer's API token>}`). The
            gateway's counters; the gateway alone serves them without a login on the loopback only."""
            return generate_latest(metrics)

    return app

"""The FastAPI application: one router per resource, a connection pool opened in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from prometheus_client import CollectorRegistry, generate_latest
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from api import errors
from api.routes import (
    alerts,
    cabinets,
    commands,
    crews,
    health,
    lamps,
    lighting,
    public,
    quarantine,
    reports,
    schedules,
    tickets,
)
from telemetry.clock import Clock
from telemetry.lighting import LightingEngine, follow_forever

logger = logging.getLogger(__name__)

__all__ = ["create_app"]


def _load_engine(database_url: str) -> LightingEngine:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return LightingEngine.load(conn)


def create_app(
    *,
    database_url: str,
    mqtt_address: tuple[str, int],
    metrics: CollectorRegistry | None = None,
    engine: LightingEngine | None = None,
    clock: Clock | None = None,
    command_pace: float = 2000.0,
) -> FastAPI:
    """Build the app. In the gateway's process pass its `engine` (fed by the gateway's batches), its `clock`
    and its `metrics` registry (served at /metrics). Alone, the app loads the engine from PostgreSQL and
    follows `lamp_latest` and the schedules by polling."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        kwargs = {"application_name": "lamplighter-api"}
        async with (
            AsyncConnectionPool(database_url, min_size=1, max_size=10, open=False, kwargs=kwargs) as pool,
            contextlib.AsyncExitStack() as stack,
        ):
            sync_pool = ConnectionPool(database_url, min_size=1, max_size=4, open=True, kwargs=kwargs)
            stack.callback(sync_pool.close)
            app.state.pool = pool
            app.state.sync_pool = sync_pool
            follower = None
            if app.state.engine is None:
                app.state.engine = await asyncio.to_thread(_load_engine, database_url)
                follower = asyncio.create_task(follow_forever(app.state.engine, database_url, states=True))
            try:
                yield
            finally:
                if follower is not None:
                    follower.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await follower

    app = FastAPI(
        title="lamplighter", version="0.1.0", lifespan=lifespan, description="Smart streetlight monitoring backend"
    )
    app.state.mqtt_address = mqtt_address
    app.state.engine = engine
    app.state.clock = clock or Clock()
    app.state.command_pace = command_pace
    errors.install(app)
    for r in (
        health.router,
        lamps.router,
        cabinets.router,
        lighting.router,
        tickets.router,
        commands.router,
        crews.router,
        public.router,
        reports.router,
        schedules.router,
        alerts.router,
        quarantine.router,
    ):
        app.include_router(r)
    if metrics is not None:

        @app.get("/metrics", response_class=PlainTextResponse, tags=["metrics"])
        def prometheus() -> bytes:
            """Role: none (scraped by Prometheus on the loopback). The gateway's counters."""
            return generate_latest(metrics)

    return app

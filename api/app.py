"""The FastAPI application: one router per resource, a connection pool opened in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from prometheus_client import CollectorRegistry, generate_latest
from psycopg_pool import AsyncConnectionPool

from api import errors
from api.routes import health, lamps, quarantine

__all__ = ["create_app"]


def create_app(
    *, database_url: str, mqtt_address: tuple[str, int], metrics: CollectorRegistry | None = None
) -> FastAPI:
    """Build the app; `metrics` (the gateway's registry, when in the same process) is served at /metrics."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncConnectionPool(
            database_url, min_size=1, max_size=10, open=False, kwargs={"application_name": "lamplighter-api"}
        ) as pool:
            app.state.pool = pool
            yield

    app = FastAPI(
        title="lamplighter", version="0.1.0", lifespan=lifespan, description="Smart streetlight monitoring backend"
    )
    app.state.mqtt_address = mqtt_address
    errors.install(app)
    for r in (health.router, lamps.router, quarantine.router):
        app.include_router(r)
    if metrics is not None:

        @app.get("/metrics", response_class=PlainTextResponse, tags=["metrics"])
        def prometheus() -> bytes:
            """Role: none (scraped by Prometheus on the loopback). The gateway's counters."""
            return generate_latest(metrics)

    return app

"""GET /api/v1/health: is the database reachable, is the broker accepting connections. No login needed."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request, Response

from api.deps import PoolDep
from api.ratelimit import RateLimit
from gateway.mqtt import MqttError, broker_ping

router = APIRouter(prefix="/api/v1", tags=["health"])

# A monitor checks every few seconds; each check opens a broker connection, so a flood is refused early.
_CHECKS = RateLimit(per_minute=120.0, burst=30)


@router.get("/health")
async def health(request: Request, response: Response, pool: PoolDep) -> dict[str, Any]:
    """Role: none (rate-limited per client). 200 when database and broker are up, 503 otherwise, with what
    failed."""
    _CHECKS.check(request)
    out: dict[str, Any] = {}
    t = time.perf_counter()
    try:
        async with pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")
        out["database"] = {"ok": True, "latency_ms": round((time.perf_counter() - t) * 1000, 1)}
    except Exception as exc:
        out["database"] = {"ok": False, "error": str(exc)}
    host, port = request.app.state.mqtt_address
    t = time.perf_counter()
    try:
        await broker_ping(host, port)
        out["broker"] = {"ok": True, "latency_ms": round((time.perf_counter() - t) * 1000, 1)}
    except MqttError as exc:
        out["broker"] = {"ok": False, "error": str(exc)}
    out["status"] = "ok" if out["database"]["ok"] and out["broker"]["ok"] else "degraded"
    if out["status"] != "ok":
        response.status_code = 503
    return out

"""GET /api/v1/health: is the database reachable, is the broker accepting connections, is ingest keeping up.
No login needed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request, Response

from api.deps import PoolDep, authenticate, request_token
from api.ratelimit import RateLimit
from gateway.heartbeat import ingest_health, recent_beats
from gateway.mqtt import MqttError, broker_ping
from inventory.queries import adistrict_codes

router = APIRouter(prefix="/api/v1", tags=["health"])

# A monitor checks every few seconds; a flood is refused early.
_CHECKS = RateLimit("checks", per_minute=120.0, burst=30)
# A broker check opens a connection: one every few seconds serves every caller (and all of them at once share it).
_BROKER_FOR_S = 5.0


async def _broker(request: Request) -> dict[str, Any]:
    state = request.app.state
    held: tuple[float, asyncio.Task[dict[str, Any]]] | None = getattr(state, "broker_check", None)
    stale = held is None or time.monotonic() - held[0] > _BROKER_FOR_S
    if held is None or stale or held[1].get_loop() is not asyncio.get_running_loop():
        held = (time.monotonic(), asyncio.ensure_future(_ping(state.broker)))
        state.broker_check = held
    return await asyncio.shield(held[1])


async def _ping(broker: Any) -> dict[str, Any]:
    t = time.perf_counter()
    try:
        await broker_ping(broker)
        return {"ok": True, "latency_ms": round((time.perf_counter() - t) * 1000, 1)}
    except MqttError as exc:
        return {"ok": False, "error": str(exc)}


@router.get(
    "/health",
    responses={
        503: {
            "description": "the database, the broker or ingest is not ok; the body says which",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def health(request: Request, response: Response, pool: PoolDep) -> dict[str, Any]:
    """Role: none (rate-limited per client). 200 when database and broker are up, 503 otherwise; each part's
    `ok`, and for a signed-in caller what failed and the gateways' ingest."""
    _CHECKS.check(request)
    out: dict[str, Any] = {}
    t = time.perf_counter()
    try:
        async with pool.connection(timeout=2) as conn:
            row = await (await conn.execute(_WRITABLE)).fetchone()
            latency = round((time.perf_counter() - t) * 1000, 1)
            if row is not None and (row[0] or row[1] == "on"):
                # It answers, but refuses every write: ingest holds (nothing acknowledged) until it takes them.
                why = "a standby in recovery" if row[0] else "default_transaction_read_only is on"
                out["database"] = {"ok": False, "latency_ms": latency, "error": f"the database is read-only ({why})"}
            else:
                out["database"] = {"ok": True, "latency_ms": latency}
            beats = await recent_beats(conn)
            districts = await adistrict_codes(conn)
        out["ingest"] = ingest_health(beats, districts, request.app.state.ingest_stall_s)
    except Exception as exc:
        out.setdefault("database", {"ok": False, "error": str(exc)})
        out.setdefault("ingest", {"ok": False, "error": "unknown while the database is unreachable"})
    out["broker"] = await _broker(request)
    out["status"] = "ok" if all(out[k]["ok"] is not False for k in ("database", "broker", "ingest")) else "degraded"
    if out["status"] != "ok":
        response.status_code = 503
    token = request_token(request)
    if token is None or await authenticate(request, token) is None:
        # A monitor without a login learns what is up, not the errors' words, hosts or gateways.
        return {"status": out["status"], **{k: {"ok": out[k]["ok"]} for k in ("database", "broker", "ingest")}}
    return out


_WRITABLE = "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')"

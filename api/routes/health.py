"""GET /api/v1/health: is the database reachable, is the broker accepting connections, is ingest keeping up.
No login needed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request, Response

from api.deps import PoolDep, authenticate, request_token
from api.ratelimit import RateLimit
from gateway.heartbeat import HEARTBEAT_S
from gateway.mqtt import MqttError, broker_ping

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
            beats = await (await conn.execute(_BEATS)).fetchall()
            districts = {r[0] for r in await (await conn.execute("SELECT code FROM districts")).fetchall()}
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
_BEATS = """SELECT gateway, host, pid, extract(epoch FROM now() - updated_at)::float8, stopped_at IS NOT NULL,
                  oldest_uncommitted_s, failing_batches, received, written, quarantined, districts
           FROM ingest_heartbeat WHERE updated_at > now() - interval '1 day' ORDER BY updated_at DESC LIMIT 50"""
# A gateway writes its heartbeat every HEARTBEAT_S; three missed in a row and it counts as gone.
_SILENT_S = 3 * HEARTBEAT_S + 1
_FORGET_S = 3600.0  # a gateway silent this long is history (listed for a day), no longer a problem


def ingest_health(beats: list[tuple[Any, ...]], districts: set[str], stall_s: float) -> dict[str, Any]:
    """`ok` is None when no gateway has ever run on this database (an API on its own), False when none is
    running, a district is held by no running gateway (its holder stopped or went silent and nobody took it
    over yet), or a running one holds a message uncommitted for longer than `stall_s`."""
    gateways: list[dict[str, Any]] = []
    problems: list[str] = []
    covered: set[str] = set()
    silent: list[tuple[str, str, float, set[str]]] = []
    for name, host, pid, age_s, stopped, oldest_s, failing, received, written, quarantined, held in beats:
        running = not stopped and age_s <= _SILENT_S
        g = {
            "gateway": name,
            "host": host,
            "pid": pid,
            "heartbeat_age_s": round(age_s, 1),
            "running": running,
            "districts": sorted(held or ()),
            "oldest_uncommitted_s": round(oldest_s, 1),
            "failing_batches": failing,
            "received": received,
            "written": written,
            "quarantined": quarantined,
        }
        gateways.append(g)
        if running:
            covered.update(held or ())
            if oldest_s > stall_s:
                problems.append(
                    f"gateway {name} is stalled: a message has waited {oldest_s:.0f} s uncommitted"
                    + (f", {failing} batch writes failed in a row" if failing else "")
                )
        elif not stopped and age_s < _FORGET_S:
            silent.append((name, host, age_s, set(held or ())))
    if not gateways:
        return {"ok": None, "gateways": [], "detail": "no gateway has run on this database"}
    for name, host, age_s, held in silent:
        if held - covered:  # taken over by nobody yet
            problems.append(f"gateway {name} on {host} has not reported for {age_s:.0f} s")
    if not any(g["running"] for g in gateways):
        if not problems:
            problems.append("no gateway is running")
    elif uncovered := sorted(districts - covered):
        problems.append(f"no running gateway reads district{'s' if len(uncovered) > 1 else ''} {', '.join(uncovered)}")
    out: dict[str, Any] = {"ok": not problems, "gateways": gateways}
    if problems:
        out["error"] = "; ".join(problems)
    return out

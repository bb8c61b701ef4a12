"""Schedules by scope: city (key `all`), district, road, cabinet, lamp. The most specific one wins."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
import psycopg
from fastapi import APIRouter, Request, Response

from api.deps import EngineDep, Operator, SyncPoolDep, Viewer, check_depth, in_thread, json_body
from api.errors import ApiError
from api.limits import nul_path
from lighting.engine import Changes, LightingEngine, delete_schedule, get_schedule, put_schedule
from lighting.schedules import ScheduleDoc, decode_doc

router = APIRouter(prefix="/api/v1/schedules", tags=["schedules"])
T = TypeVar("T")


async def _call(pool: Any, fn: Any) -> Any:
    return await in_thread(pool, fn)  # a ScheduleError becomes its 422 or 404 in api.errors


async def _changed(pool: Any, engine: LightingEngine, fn: Callable[[psycopg.Connection], T]) -> T:
    """Run `fn` (which commits a change of schedules) in a worker, read what changed there, and apply it to
    the lighting engine here, on the event loop that owns it."""

    def run(conn: psycopg.Connection) -> tuple[T, Changes]:
        out = fn(conn)
        return out, engine.fetch(conn, states=False)

    result: tuple[T, Changes] = await _call(pool, run)
    engine.apply(result[1])
    return result[0]


@router.get("/{scope}/{key}")
async def read(user: Viewer, pool: SyncPoolDep, scope: str, key: str) -> dict[str, Any]:
    """Role: viewer. The schedule document stored at this scope (404 when the scope has none of its own)."""
    doc = await _call(pool, lambda conn: get_schedule(conn, scope, key))
    if doc is None:
        raise ApiError(404, "not_found", f"{scope} {key!r} has no schedule of its own: a wider scope's applies", "key")
    return doc  # type: ignore[no-any-return]


@router.put("/{scope}/{key}", openapi_extra=json_body(ScheduleDoc))
async def write(
    user: Operator, request: Request, pool: SyncPoolDep, engine: EngineDep, scope: str, key: str
) -> dict[str, Any]:
    """Role: operator. Replace the document at this scope: `profile` (astro / fixed / always, offsets, level,
    dimming steps, date exceptions, time zone), `windows` (planned outages, maintenance) and `override`."""
    raw = await request.body()
    check_depth(raw)
    try:
        doc = decode_doc(raw)
    except RecursionError:
        raise ApiError(422, "invalid", "the document nests too deep") from None
    if where := nul_path(msgspec.to_builtins(doc)):
        raise ApiError(422, "invalid", f"{where}: holds a NUL character (U+0000)", where)

    def store(conn: psycopg.Connection) -> dict[str, Any]:
        put_schedule(conn, scope, key, doc)
        conn.commit()
        stored = get_schedule(conn, scope, key)
        assert stored is not None  # just written
        return stored

    return await _changed(pool, engine, store)


@router.delete("/{scope}/{key}", status_code=204)
async def remove(user: Operator, pool: SyncPoolDep, engine: EngineDep, scope: str, key: str) -> Response:
    """Role: operator. Remove this scope's document; its lamps fall back to the next wider scope."""

    def drop(conn: psycopg.Connection) -> bool:
        found = delete_schedule(conn, scope, key)
        conn.commit()
        return found

    if not await _changed(pool, engine, drop):
        raise ApiError(404, "not_found", f"{scope} {key!r} has no schedule of its own", "key")
    return Response(status_code=204)

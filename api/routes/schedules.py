"""Schedules by scope: city (key `all`), district, road, cabinet, lamp. The most specific one wins."""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg
from fastapi import APIRouter, Request, Response

from api.deps import EngineDep, Operator, SyncPoolDep, Viewer, in_thread, json_body
from api.errors import ApiError
from api.limits import nul_path
from telemetry.lighting import delete_schedule, get_schedule, put_schedule
from telemetry.schedules import ScheduleDoc, ScheduleError, decode_doc

router = APIRouter(prefix="/api/v1/schedules", tags=["schedules"])


def _refresh(engine: Any, conn: psycopg.Connection) -> None:
    engine.apply(engine.fetch(conn, states=False))


async def _call(pool: Any, fn: Any) -> Any:
    try:
        return await in_thread(pool, fn)
    except ScheduleError as exc:
        raise ApiError(422, "invalid", str(exc), exc.field) from None
    except LookupError as exc:
        raise ApiError(404, "not_found", str(exc).strip("'\""), "key") from None


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
    try:
        doc = decode_doc(await request.body())
    except ScheduleError as exc:
        raise ApiError(422, "invalid", str(exc), exc.field) from None
    except RecursionError:
        raise ApiError(422, "invalid", "the document nests too deep") from None
    if where := nul_path(msgspec.to_builtins(doc)):
        raise ApiError(422, "invalid", f"{where}: holds a NUL character (U+0000)", where)

    def store(conn: psycopg.Connection) -> dict[str, Any] | None:
        put_schedule(conn, scope, key, doc)
        conn.commit()
        _refresh(engine, conn)
        return get_schedule(conn, scope, key)

    return await _call(pool, store)  # type: ignore[no-any-return]


@router.delete("/{scope}/{key}", status_code=204)
async def remove(user: Operator, pool: SyncPoolDep, engine: EngineDep, scope: str, key: str) -> Response:
    """Role: operator. Remove this scope's document; its lamps fall back to the next wider scope."""

    def drop(conn: psycopg.Connection) -> bool:
        found = delete_schedule(conn, scope, key)
        conn.commit()
        _refresh(engine, conn)
        return found

    if not await _call(pool, drop):
        raise ApiError(404, "not_found", f"{scope} {key!r} has no schedule of its own", "key")
    return Response(status_code=204)

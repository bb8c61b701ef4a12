"""The control room's map: the fleet's layout once (positions, roads, district outlines), then every lamp's
condition as one byte per lamp, cheap enough to fetch every few seconds for 110,000 lamps."""

from __future__ import annotations

import asyncio
import base64
import gzip
import logging
import re
import time
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import Response

from alerts.queries import lamps_waiting
from api.deps import ClockDep, EngineDep, SyncPoolDep, Viewer, in_thread
from inventory.index import FleetIndex
from inventory.queries import geometry
from lighting.rate import CONDITIONS

router = APIRouter(prefix="/api/v1/map", tags=["map"])
logger = logging.getLogger(__name__)

IN_TICKET = len(CONDITIONS)  # the state byte of a lamp that a live ticket covers, whatever its condition
_TICKETS_EVERY_S = 2.0


def _b64(a: npt.NDArray[Any]) -> str:
    return base64.b64encode(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()).decode()


def _hull(lon: npt.NDArray[np.float64], lat: npt.NDArray[np.float64]) -> list[list[float]]:
    """Convex hull (Andrew's monotone chain) of a district's lamps: its outline on the map."""
    pts: npt.NDArray[np.float64] = np.unique(np.round(np.column_stack([lon, lat]), 5), axis=0).astype(np.float64)
    if len(pts) < 3:
        return pts.tolist()  # type: ignore[no-any-return]

    def half(points: npt.NDArray[np.float64]) -> list[npt.NDArray[np.float64]]:
        out: list[npt.NDArray[np.float64]] = []
        for p in points:
            while len(out) >= 2:
                (ax, ay), (bx, by) = out[-2], out[-1]
                if (bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax) > 0:
                    break
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(pts[::-1])
    return [[float(x), float(y)] for x, y in lower[:-1] + upper[:-1]]


_NUMBERED = re.compile(r"(.*?)(\d{1,9})")


def _id_columns(ids: list[str]) -> dict[str, Any] | None:
    """The lamps' ids as two columns, when each is a prefix and a serial number (`XN-CD-000123`): id i is
    `prefixes[prefix[i]]` and `serial[i]` zero-padded to `widths[prefix[i]]`. A page parses two arrays far faster
    than a million strings. None when some id does not take that form."""
    keys: dict[tuple[str, int], int] = {}
    prefix = np.empty(len(ids), dtype=np.int16)
    serial = np.empty(len(ids), dtype=np.int32)
    for i, lamp_id in enumerate(ids):
        m = _NUMBERED.fullmatch(lamp_id)
        if m is None:
            return None
        k = keys.setdefault((m.group(1), len(m.group(2))), len(keys))
        if k > 32_000:
            return None
        prefix[i], serial[i] = k, int(m.group(2))
    return {
        "prefixes": [p for p, _ in keys],
        "widths": [w for _, w in keys],
        "prefix": _b64(prefix),
        "serial": _b64(serial),
    }


def _layout(conn: psycopg.Connection, ix: FleetIndex) -> bytes:
    districts, roads, waters = geometry(conn)
    outlines = []
    for code, zh, en, lon, lat, boundary in districts:
        if code not in ix.districts:
            continue
        if boundary is not None:
            outline = msgspec.json.decode(boundary)
        else:  # loaded before the inventory had borders: the lamps' hull
            mine = ix.lamp_district == ix.districts.index(code)
            outline = _hull(ix.lon[mine], ix.lat[mine])
        outlines.append(
            {
                "code": code,
                "name_zh": zh,
                "name_en": en,
                "centre": [lon, lat],
                "outline": outline,
                "border": boundary is not None,
            }
        )
    road_of = {int(r[0]): r for r in roads}

    def road(r: int) -> dict[str, Any]:
        if r not in road_of:
            return {"id": r}
        _, zh, en, cls, path = road_of[r]
        return {
            "id": r,
            "name_zh": zh,
            "name_en": en,
            "class": cls,
            "path": msgspec.json.decode(path) if path else None,
        }

    columns = _id_columns(ix.lamp_id)
    body = {
        "lamps": ix.n,
        **({"ids": ix.lamp_id} if columns is None else {"id_columns": columns}),
        "lon": _b64(ix.lon.astype(np.float32)),
        "lat": _b64(ix.lat.astype(np.float32)),
        "road": _b64(ix.lamp_road.astype(np.int32)),
        "district": _b64(ix.lamp_district.astype(np.int16)),
        "districts": outlines,
        "district_codes": ix.districts,
        "roads": [road(int(r)) for r in ix.road_ids.tolist()],
        "waterways": [
            {"code": c, "name_zh": zh, "name_en": en, "path": msgspec.json.decode(p)} for c, zh, en, p in waters
        ],
        "conditions": [*CONDITIONS, "in_ticket"],
        "bbox": [float(ix.lon.min()), float(ix.lat.min()), float(ix.lon.max()), float(ix.lat.max())] if ix.n else [],
    }
    return msgspec.json.encode(body)


def _built(conn: psycopg.Connection, ix: FleetIndex) -> tuple[FleetIndex, bytes, bytes]:
    """The layout, and the same compressed once: the app's gzip would compress it again for every page, at
    level 9 (3.5 s for a city of a million lamps)."""
    body = _layout(conn, ix)
    return ix, body, gzip.compress(body, compresslevel=6, mtime=0)


def _send(request: Request, body: bytes, packed: bytes | None, media_type: str, headers: dict[str, str]) -> Response:
    """`packed` (gzip) to a client that takes it, else `body`; marked so that the app's gzip leaves it alone."""
    headers = {**headers, "Vary": "Accept-Encoding"}
    if packed is not None and "gzip" in request.headers.get("accept-encoding", ""):
        return Response(packed, media_type=media_type, headers={**headers, "Content-Encoding": "gzip"})
    return Response(body, media_type=media_type, headers={**headers, "Content-Encoding": "identity"})


async def _layout_of(app: Any, pool: Any, ix: FleetIndex) -> tuple[FleetIndex, bytes, bytes]:
    """The layout of the fleet index `ix`, built once: a page that asks while it is being built waits for it."""
    lock = getattr(app.state, "map_layout_lock", None)
    if lock is None:
        lock = app.state.map_layout_lock = asyncio.Lock()
    async with lock:
        cached: tuple[FleetIndex, bytes, bytes] | None = getattr(app.state, "map_layout", None)
        if cached is None or cached[0] is not ix:
            cached = await in_thread(pool, lambda conn: _built(conn, ix))
            app.state.map_layout = cached
        return cached


async def warm(app: Any) -> None:
    """Build the layout once the app is up, so the first operator's map does not wait for it."""
    try:
        await _layout_of(app, app.state.sync_pool, app.state.engine.index)
    except Exception as exc:  # the first page builds it then; nothing else depends on this
        logger.warning("map layout not built ahead: %s", exc)


@router.get("/layout")
async def layout(user: Viewer, request: Request, pool: SyncPoolDep, engine: EngineDep) -> Response:
    """Role: viewer. `{"lamps", "lon", "lat", "road", "district"` (little-endian float32, int32 and int16 arrays
    in base64, one entry per lamp in the order of the state bytes), the lamps' ids (`"id_columns"`: `prefixes`
    and `widths`, and per lamp the int16 `prefix` and int32 `serial` in base64, id i being its prefix and its
    serial zero-padded to the prefix's width; or `"ids"`, a list, when some id is not a prefix and a number),
    `"districts"` (each with its `centre` and `outline`, the border as [lon, lat] pairs, or the lamps' hull when
    the inventory has no borders), `"roads"` (each with its name, `class` and `path`, the lit stretch's
    centreline), `"waterways"` (the rivers' courses), `"conditions"` (the meaning of each state byte),
    `"bbox"}`. Changes only with the inventory."""
    cached = await _layout_of(request.app, pool, engine.index)
    return _send(request, cached[1], cached[2], "application/json", {"Cache-Control": "private, max-age=60"})


async def _ticket_slots(request: Request, pool: SyncPoolDep, ix: FleetIndex) -> npt.NDArray[np.int32]:
    cached = getattr(request.app.state, "map_tickets", None)
    now = time.monotonic()
    if cached is not None and cached[0] > now and cached[1] is ix:
        return cached[2]  # type: ignore[no-any-return]

    ids = await in_thread(pool, lamps_waiting)
    slots = np.array([s for s in (ix.slot_of_id.get(i) for i in ids) if s is not None], dtype=np.int32)
    request.app.state.map_tickets = (now + _TICKETS_EVERY_S, ix, slots)
    return slots


@router.get("/state")
async def state(user: Viewer, request: Request, pool: SyncPoolDep, engine: EngineDep, clock: ClockDep) -> Response:
    """Role: viewer. One byte per lamp, in the layout's order: its condition now (an index into the layout's
    `conditions`; the last one, `in_ticket`, marks a lamp a live ticket covers). `X-State-Ts` is the instant."""
    now = clock.now_ms()
    cond = engine.conditions(now).astype(np.uint8)
    slots = await _ticket_slots(request, pool, engine.index)
    if len(slots):
        cond = cond.copy()
        cond[slots] = IN_TICKET
    body = cond.tobytes()
    # One byte per lamp compresses well and fast at level 1 (a million lamps in a few ms; the app's level 9 takes
    # far longer for little less).
    packed = gzip.compress(body, compresslevel=1, mtime=0) if len(body) > 4096 else None
    return _send(
        request, body, packed, "application/octet-stream", {"X-State-Ts": str(now), "Cache-Control": "no-store"}
    )

"""Nightly reports: per district and road class the minimum, the time-weighted mean and the inspection-time
rate of one night, the per-road verdicts and the integrity rate; JSON or CSV."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from api.deps import ConnDep, EngineDep, Offset, SyncPoolDep, Viewer, filter_param, in_thread, limit_param
from api.errors import ApiError
from api.jsonsafe import FiniteJSONResponse
from telemetry.sampling import newest_night, nightly_csv, nightly_report

router = APIRouter(prefix="/api/v1/reports", tags=["reports"])


@router.get("/nightly", response_model=None)
async def nightly(
    user: Viewer,
    request: Request,
    pool: SyncPoolDep,
    engine: EngineDep,
    date: Annotated[
        dt.date | None,
        filter_param("the local date on which the night begins (default: the newest night sampled)", "2026-11-28"),
    ] = None,
    format: Annotated[Literal["json", "csv"], filter_param("json, or csv for a spreadsheet", "csv")] = "json",
    inspection: Annotated[str, filter_param("the inspectors' local time of the night (HH:MM)", "22:00")] = "22:00",
) -> Response | dict[str, Any]:
    """Role: viewer. The night that begins on `date` (local; nights run from noon to noon); without `date`, the
    newest night with lighting-rate samples, which may still be going on. Stored after dawn; computed from the
    samples when asked before then or with another inspection time (HH:MM)."""
    if date is not None and not dt.date(1970, 1, 2) <= date <= dt.date(9999, 12, 30):
        raise ApiError(422, "invalid", f"date must be a night between 1970-01-02 and 9999-12-30, got {date}", "date")
    try:
        at = dt.time.fromisoformat(inspection)
    except ValueError:
        raise ApiError(
            422, "invalid", f"inspection must be a local time HH:MM, got {inspection!r}", "inspection"
        ) from None
    tz = str(getattr(request.app.state, "timezone", "Asia/Shanghai"))

    def load(conn: psycopg.Connection) -> tuple[dt.date | None, dict[str, Any] | None]:
        night = date or newest_night(conn, tz)
        if night is None:
            return None, None
        if at == dt.time(22, 0):
            row = conn.execute("SELECT body FROM nightly_reports WHERE night = %s", (night,)).fetchone()
            if row is not None:
                body: dict[str, Any] = row[0]
                return night, body
        return night, nightly_report(conn, night, index=engine.index, timezone=tz, inspection=at)

    night, report = await in_thread(pool, load)
    if night is None:
        raise ApiError(
            404, "not_found", "no lighting-rate samples yet: the leading gateway takes one a minute once it runs"
        )
    if report is None:
        raise ApiError(404, "not_found", f"no lighting-rate samples for the night of {night}", "date")
    if format == "csv":
        return PlainTextResponse(
            nightly_csv(report),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="lighting-{night}.csv"'},
        )
    return FiniteJSONResponse(report)


@router.get("/nights")
async def nights(
    user: Viewer,
    conn: ConnDep,
    limit: Annotated[int, limit_param(366)] = 30,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Role: viewer. The stored nightly reports, newest night first, in brief: the city's mean, minimum and
    inspection-time rate, and how many roads passed. The full report is at `/nightly?date=`."""
    total = await (await conn.execute("SELECT count(*) AS n FROM nightly_reports")).fetchone()
    rows = await (
        await conn.execute(
            """SELECT night, body->'city' AS city, (body->>'roads_assessed')::int AS roads_assessed,
                      (body->>'roads_passing')::int AS roads_passing,
                      (body->>'integrity_at_inspection')::float AS integrity_at_inspection
               FROM nightly_reports ORDER BY night DESC LIMIT %s OFFSET %s""",
            (limit, offset),
        )
    ).fetchall()
    return {"items": rows, "total": total["n"] if total else 0, "limit": limit, "offset": offset}  # type: ignore[call-overload]

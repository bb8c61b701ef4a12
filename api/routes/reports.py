"""Nightly reports: per district and road class the minimum, the time-weighted mean and the inspection-time
rate of one night, the per-road verdicts and the integrity rate; JSON or CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from api.deps import (
    JSON_OR_CSV,
    ClockDep,
    ConnDep,
    EngineDep,
    Offset,
    SyncPoolDep,
    Viewer,
    filter_param,
    in_thread,
    limit_param,
)
from api.errors import ApiError
from api.jsonsafe import FiniteJSONResponse
from api.routes.energy import nights_between
from energy.nights import Pricing, group_rows
from lighting.rate import CITY_TARGET
from lighting.sampling import (
    list_nights,
    newest_night,
    night_of,
    nightly_csv,
    nightly_report,
    stored_report,
    stored_reports_between,
)

router = APIRouter(prefix="/api/v1/reports", tags=["reports"])


@router.get("/nightly", response_model=None, responses=JSON_OR_CSV)
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
        if at == dt.time(22, 0) and (body := stored_report(conn, night)) is not None:
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
    total, rows = await list_nights(conn, limit, offset)
    return {"items": rows, "total": total, "limit": limit, "offset": offset}


_MONTH_CSV = (
    "section", "key", "energy_kwh", "full_power_kwh", "saving_kwh", "saving_pct", "cost", "currency", "co2_kg",
    "cabinet_meters_kwh", "nights_with_energy", "rate_mean", "rate_min", "rate_at_inspection_mean", "nights_reported",
    "nights_meeting_target",
)  # fmt: skip


def _rate_month(rows: list[tuple[dt.date, dict[str, Any]]], key: str | None) -> dict[str, Any]:
    """The month's lighting rate from its stored nightly reports: the city's (key None) or a district's."""
    figures = []
    for _, body in rows:
        part = (
            body.get("city") if key is None else next((d for d in body.get("districts", []) if d["key"] == key), None)
        )
        if part and part.get("mean") is not None:
            figures.append(part)
    if not figures:
        return {"rate_mean": None, "rate_min": None, "rate_at_inspection_mean": None, "nights_reported": 0}
    inspected = [f["at_inspection"] for f in figures if f.get("at_inspection") is not None]
    return {
        "rate_mean": round(sum(f["mean"] for f in figures) / len(figures), 2),
        "rate_min": min(f["min"] for f in figures if f.get("min") is not None),
        "rate_at_inspection_mean": round(sum(inspected) / len(inspected), 2) if inspected else None,
        "nights_reported": len(figures),
        "nights_meeting_target": sum(1 for f in figures if f["mean"] >= CITY_TARGET),
    }


@router.get("/monthly", response_model=None, responses=JSON_OR_CSV)
async def monthly(
    user: Viewer,
    request: Request,
    pool: SyncPoolDep,
    engine: EngineDep,
    clock: ClockDep,
    month: Annotated[
        str | None, filter_param("the month, YYYY-MM (default: the month of the newest night)", "2026-11")
    ] = None,
    format: Annotated[Literal["json", "csv"], filter_param("json, or csv for a spreadsheet", "csv")] = "json",
) -> Response | dict[str, Any]:
    """Role: viewer. A month of the department's figures, for the city and each district: energy (kWh), what the
    same burning hours would have used at full rated power, the saving, cost at the tariff, CO2 at the grid
    factor, the cabinet meters' own total; and the lighting rate from the month's nightly reports (mean of the
    nights' means, the lowest minimum, the mean at inspection time, nights at or above the 98 % target). Nights
    without energy figures are listed in `missing_energy`."""
    pricing: Pricing = request.app.state.pricing
    now = clock.now()
    if month is None:
        first = night_of(now, pricing.tz).replace(day=1)
    else:
        try:
            first = dt.date.fromisoformat(f"{month}-01")
        except ValueError:
            raise ApiError(422, "invalid", f"month must be YYYY-MM, got {month!r}", "month") from None
    last = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)
    index = engine.index
    nights, missing = await nights_between(request, pool, index, first, last, now)
    reports = await in_thread(pool, lambda conn: stored_reports_between(conn, first, last))
    group = list(nights.values())
    city = group_rows(group, index, "city", pricing)[0] if group else None
    districts = group_rows(group, index, "district", pricing) if group else []
    body: dict[str, Any] = {
        "month": first.strftime("%Y-%m"),
        "tariff": pricing.tariff.text,
        "currency": pricing.currency,
        "co2_kg_per_kwh": pricing.co2_kg_per_kwh,
        "nights_with_energy": len(group),
        "missing_energy": [m.isoformat() for m in missing],
        "city": {**(city or {}), **_rate_month(reports, None)},
        "districts": [{**d, **_rate_month(reports, str(d["key"]))} for d in districts],
    }
    if format == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(_MONTH_CSV)
        for section, rows in (("city", [body["city"]]), ("district", body["districts"])):
            for r in rows:
                r = {**r, "key": r.get("key", "all"), "nights_with_energy": len(group)}
                w.writerow([section, *("" if r.get(f) is None else r.get(f) for f in _MONTH_CSV[1:])])
        return PlainTextResponse(
            buf.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="lamplighter-{body["month"]}.csv"'},
        )
    return FiniteJSONResponse(body)

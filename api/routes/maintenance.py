"""Planned maintenance: the lamps the failure forecast (docs/forecast.md) says are wearing out, before they fail."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter

from api.deps import Offset, SyncPoolDep, Viewer, filter_param, in_thread, limit_param
from forecast.nightly import latest_forecasts
from inventory.queries import lamp_numbers_in, lamps_by_number

router = APIRouter(prefix="/api/v1/maintenance", tags=["maintenance"])

Mode = Literal["driver", "water", "relay", "photocell"]


def _forecast(
    conn: psycopg.Connection,
    district: str | None,
    road: int | None,
    cabinet: str | None,
    mode: str | None,
    horizon: float | None,
) -> dict[str, Any]:
    lamps = None
    if district is not None or road is not None or cabinet is not None:
        lamps = lamp_numbers_in(conn, district=district, road=road, cabinet=cabinet)
    run, items = latest_forecasts(conn, lamps=lamps, mode=mode, within_days=horizon)
    places = lamps_by_number(conn, [i["lamp_no"] for i in items])
    out = []
    by_cabinet: dict[str, int] = {}
    for item in items:
        lamp = places.get(item["lamp_no"])
        if lamp is None:
            continue  # taken out of the inventory since the run
        cabinet_id = lamp["cabinet_id"]
        by_cabinet[cabinet_id] = by_cabinet.get(cabinet_id, 0) + 1
        out.append({
            "lamp": lamp["id"], "district": lamp["district"], "road_id": lamp["road_id"],
            "road_name_zh": lamp["road_name_zh"], "road_name_en": lamp["road_name_en"], "cabinet": cabinet_id,
            "risk": item["risk"], "mode": item["mode"], "window_days": item["window_days"],
            "evidence": f"/api/v1/lamps/{lamp['id']}/telemetry",
        })  # fmt: skip
    return {
        "run": run,
        "items": out,
        "total": len(out),
        "cabinets": [{"cabinet": c, "lamps": n} for c, n in sorted(by_cabinet.items(), key=lambda kv: (-kv[1], kv[0]))],
    }


@router.get("/forecast")
async def forecast(
    user: Viewer,
    pool: SyncPoolDep,
    district: Annotated[str | None, filter_param("district code", "cd")] = None,
    road: Annotated[int | None, filter_param("road id", 12, ge=1)] = None,
    cabinet: Annotated[str | None, filter_param("cabinet id", "XN-CD-C0001")] = None,
    mode: Annotated[Mode | None, filter_param("how the lamps are wearing out", "driver", "water")] = None,
    horizon: Annotated[float | None, filter_param("only failures foreseen within this many days", 7, 14, ge=0)] = None,
    limit: Annotated[int, limit_param(10_000)] = 1000,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Role: viewer. The newest nightly forecast's lamps at risk, riskiest first: each lamp's place, risk (the
    probability of a failure within the model's horizon), the way it is wearing out (`mode`), the window of days
    its failure is foreseen in, and where its evidence is (its readings); `cabinets` counts them per cabinet, the
    visits to plan. `run` says which night, which model, its threshold and how it did on days it had not seen
    (`held_out`); null before the first run. `total` counts every lamp at risk, `items` the page."""
    body = await in_thread(pool, lambda c: _forecast(c, district, road, cabinet, mode, horizon))
    body["items"] = body["items"][offset : offset + limit]
    return {**body, "limit": limit, "offset": offset}

"""Small fleets and reports built in memory for the rate's and the rules' pure tests."""

from __future__ import annotations

import datetime as dt

import numpy as np

from inventory.index import FleetIndex
from telemetry.fleet import FleetState, fault_mask

CST = dt.timezone(dt.timedelta(hours=8))

NIGHT = dt.datetime(2026, 12, 1, 22, 0, tzinfo=CST)  # Xining: sunset ~18:10, sunrise ~08:15


def ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def fleet(roads: list[tuple[str, int]], *, rated: float = 100.0, interval_s: int = 300) -> FleetIndex:
    """Roads given as (class, lamps); one district `cd`, one cabinet per road, lamps `L0000`… in order."""
    n = sum(k for _, k in roads)
    lamp_road = np.repeat(np.arange(len(roads), dtype=np.int32), [k for _, k in roads])
    classes = ("expressway", "arterial", "secondary", "branch")
    return FleetIndex(
        lamp_id=[f"L{i:04d}" for i in range(n)],
        lamp_no=np.arange(1, n + 1, dtype=np.int32),
        lat=np.full(n, 36.62),
        lon=np.full(n, 101.78),
        rated_w=np.full(n, rated, dtype=np.float32),
        in_service=np.ones(n, dtype=np.bool_),
        interval_s=np.full(n, interval_s, dtype=np.int32),
        lamp_district=np.zeros(n, dtype=np.int16),
        lamp_road=lamp_road,
        lamp_cabinet=lamp_road.copy(),
        districts=["cd"],
        road_ids=np.arange(100, 100 + len(roads), dtype=np.int32),
        road_class=np.array([classes.index(c) for c, _ in roads], dtype=np.int8),
        road_district=np.zeros(len(roads), dtype=np.int16),
        cabinet_ids=[f"C{i:03d}" for i in range(len(roads))],
        cabinet_road=np.arange(len(roads), dtype=np.int32),
    )


def report(
    state: FleetState,
    slot: int,
    at: dt.datetime,
    *,
    on: bool = True,
    dim: int = 100,
    power: float | None = 95.0,
    faults: tuple[str, ...] = (),
) -> None:
    state.apply(
        np.array([slot], dtype=np.int32),
        np.array([ms(at)], dtype=np.int64),
        np.array([on]),
        np.array([dim], dtype=np.int16),
        np.array([np.nan if power is None else power], dtype=np.float32),
        np.array([fault_mask(faults)], dtype=np.uint16),
    )

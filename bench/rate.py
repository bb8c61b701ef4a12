"""`lamplighter bench rate`: the lighting-rate engine over a generated city, in memory, no services.

Measures (1) a full recompute — expected state of every lamp at an instant, then counts for the city, every
district, road class, road and cabinet, the per-road verdicts and the integrity rate — and (2) fleet-state
updates from gateway batches (10,000 decoded readings each, as the gateway hands them over). Prints a table and,
as its last line, one JSON object. Asserts nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import time
from typing import Any

import numpy as np

from inventory.city import Inventory
from inventory.index import ROAD_CLASSES, FleetIndex
from lighting.expected import Expected
from lighting.rate import breakdown, road_verdicts
from lighting.schedules import Profile, ScheduleDoc, Step
from seeds.generator import generate
from telemetry.fleet import FleetState
from telemetry.models import LampRows

__all__ = ["fleet_index_of", "run_rate_bench"]

_BATCH = 10_000


def fleet_index_of(inv: Inventory) -> FleetIndex:
    """A FleetIndex straight from a generated inventory (lamp numbers 1..N, as the loader assigns them)."""
    districts = sorted({d.code for d in inv.districts})
    d_of = {d: i for i, d in enumerate(districts)}
    road_slot = {int(r): i for i, r in enumerate(inv.road_id)}
    to_road = np.vectorize(road_slot.__getitem__, otypes=[np.int32])
    n = inv.lamps
    return FleetIndex(
        lamp_id=inv.lamp_id,
        lamp_no=np.arange(1, n + 1, dtype=np.int32),
        lat=inv.lamp_lat,
        lon=inv.lamp_lon,
        rated_w=inv.lamp_rated_w,
        in_service=np.ones(n, dtype=np.bool_),
        interval_s=np.full(n, 300, dtype=np.int32),
        lamp_district=np.array([d_of[d] for d in inv.lamp_district], dtype=np.int16),
        lamp_road=to_road(inv.lamp_road),
        lamp_cabinet=inv.lamp_cabinet.astype(np.int32),
        districts=districts,
        road_ids=inv.road_id.astype(np.int32),
        road_class=np.array([ROAD_CLASSES.index(c) for c in inv.road_class], dtype=np.int8),
        road_district=np.array([d_of[d] for d in inv.road_district], dtype=np.int16),
        cabinet_ids=inv.cabinet_id,
        cabinet_road=to_road(inv.cabinet_road),
    )


def _batches(n: int, count: int, t0_ms: int, rng: np.random.Generator) -> list[LampRows]:
    """Gateway-shaped batches: random lamps, on at a dim level, a reading of power, a fault now and then."""
    out = []
    for _ in range(count):
        rows = LampRows()
        nos = rng.integers(1, n + 1, _BATCH)
        dims = rng.choice([50, 80, 100], _BATCH)
        power = rng.normal(120, 10, _BATCH).round(1)
        faulty = rng.random(_BATCH) < 0.01
        rows.lamp_no = nos.tolist()
        rows.ts = (t0_ms + rng.integers(0, 60_000, _BATCH)).tolist()
        rows.on = [True] * _BATCH
        rows.dim = dims.tolist()
        rows.power_w = power.tolist()
        rows.faults = [["lamp_failure"] if f else [] for f in faulty.tolist()]
        out.append(rows)
    return out


def run_rate_bench(*, lamps: int, repeats: int = 30, batches: int = 50) -> int:
    t = time.perf_counter()
    inv = generate(lamps)
    index = fleet_index_of(inv)
    setup_s = time.perf_counter() - t
    size = f"{index.n:,} lamps, {len(index.cabinet_ids):,} cabinets, {len(index.road_ids):,} roads"
    print(f"city of {size} (generated in {setup_s:.1f} s)")

    tz = dt.timezone(dt.timedelta(hours=8))
    night = dt.datetime(2026, 12, 1, 22, 0, tzinfo=tz)
    docs = {
        ("city", "all"): ScheduleDoc(profile=Profile(mode="astro", steps=[Step("00:00", 50), Step("05:00", 100)])),
        ("district", index.districts[0]): ScheduleDoc(profile=Profile(mode="fixed", on_at="18:30", off_at="06:30")),
    }
    expected = Expected(index, docs)
    state = FleetState(index)
    rng = np.random.default_rng(1)
    t0 = int(night.timestamp() * 1000) - 60_000
    work = _batches(index.n, batches, t0, rng)

    # Every lamp has reported once (a whole reporting interval of the city), then the measured updates follow.
    state.apply(
        np.arange(index.n, dtype=np.int32),
        t0 - rng.integers(0, 240_000, index.n),
        np.ones(index.n, dtype=np.bool_),
        np.full(index.n, 100, dtype=np.int16),
        (index.rated_w * rng.normal(0.97, 0.02, index.n)).astype(np.float32),
        np.where(rng.random(index.n) < 0.01, 1, 0).astype(np.uint16),
    )

    # Fleet-state updates from gateway batches.
    t = time.perf_counter()
    for rows in work:
        state.apply_rows(rows)
    update_s = time.perf_counter() - t
    readings = batches * _BATCH
    updates_per_s = readings / update_s

    # Full recomputes at successive instants of the night (the first one fills the per-night cache).
    expected.at(int(night.timestamp() * 1000))
    totals, exp_ms, count_ms = [], [], []
    b = None
    for i in range(repeats):
        ts = int(night.timestamp() * 1000) + i * 10_000  # every 10 s, reports staying fresh
        t = time.perf_counter()
        e = expected.at(ts)
        t1 = time.perf_counter()
        b = breakdown(index, state, e)
        road_verdicts(index, b.road)
        t2 = time.perf_counter()
        exp_ms.append((t1 - t) * 1000)
        count_ms.append((t2 - t1) * 1000)
        totals.append((t2 - t) * 1000)
    assert b is not None
    city = b.city.rows()[0]
    result: dict[str, Any] = {
        "lamps": index.n,
        "cabinets": len(index.cabinet_ids),
        "roads": len(index.road_ids),
        "recompute_ms_median": round(statistics.median(totals), 2),
        "recompute_ms_p90": round(float(np.percentile(totals, 90)), 2),
        "expected_state_ms_median": round(statistics.median(exp_ms), 2),
        "breakdown_ms_median": round(statistics.median(count_ms), 2),
        "updates_per_s": round(updates_per_s),
        "update_batch": _BATCH,
        "city_rate": city["rate"],
        "city_due": city["due"],
    }
    print(f"{'full recompute (expected state + every grouping), median':58} {result['recompute_ms_median']:>10.2f} ms")
    print(f"{'  of which expected state':58} {result['expected_state_ms_median']:>10.2f} ms")
    print(f"{'  of which counts, verdicts, integrity':58} {result['breakdown_ms_median']:>10.2f} ms")
    print(f"{'recompute p90':58} {result['recompute_ms_p90']:>10.2f} ms")
    print(f"{'fleet-state updates from gateway batches':58} {updates_per_s:>10,.0f} readings/s")
    print(f"{'city after the updates: due / rate':58} {city['due']:>10,} / {city['rate']} %")
    print(json.dumps(result))
    return 0

"""`lamplighter bench alerts`: the fault engine over a generated city of a million lamps.

1. Rule evaluation, in memory: gateway-shaped batches of 10,000 readings through the lighting and fault engines
   (state update, rule history, every lamp rule, cabinets' own reports, debounce) — readings per second — and
   the time of a sweep over the whole fleet.
2. A district blackout on a private PostgreSQL: 50,000+ lamps lose supply at once (concentrators report
   `mains_loss`, single-lamp controllers send their last gasp); once the debounce is satisfied, how long until
   every ticket is committed, and whether there is exactly one per cabinet and none per lamp.

Prints a table and, as its last line, one JSON object. Asserts nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from alerts.crews import Crew, save_crew
from alerts.engine import AlertEngine
from alerts.queries import ticket_counts
from alerts.service import AlertService
from bench.rate import _batches, fleet_index_of
from kernel.database import Database, connect
from lamplighter.config import Settings
from lamplighter.runtime import bench_city
from lighting.engine import LightingEngine
from seeds.generator import generate
from telemetry.models import Batch, CabinetRow, LampRows

__all__ = ["run_alerts_bench"]

_NIGHT = dt.datetime(2026, 12, 1, 22, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
_BLACKOUT_LAMPS = 50_000


@dataclass
class _ManualClock:
    """The bench's clock: it moves only when told, so debounce windows pass without waiting."""

    ms: int
    speed: float = 1.0

    @property
    def compressed(self) -> bool:
        return True

    def now_ms(self) -> int:
        return self.ms

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.ms / 1000, dt.UTC)


def _settle(engine: LightingEngine, t_ms: int) -> None:
    """Every lamp reported healthy, lit, shortly before `t_ms`."""
    ix = engine.index
    rng = np.random.default_rng(3)
    engine.state.apply(
        np.arange(ix.n, dtype=np.int32),
        t_ms - rng.integers(0, 120_000, ix.n),
        np.ones(ix.n, dtype=np.bool_),
        np.full(ix.n, 100, dtype=np.int16),
        (ix.rated_w * 0.97).astype(np.float32),
        np.zeros(ix.n, dtype=np.uint16),
    )


def _cabinets_report(engine: AlertEngine, t_ms: int) -> None:
    """Every concentrator reported, all well, at `t_ms`."""
    ix = engine.index
    assert ix.cabinet_concentrator is not None and ix.cabinet_no is not None
    engine.cabinets.apply_rows(
        [
            CabinetRow(
                t_ms, int(ix.cabinet_no[c]), 1, False, [True] * 3, [220.0] * 3, [5.0] * 3, 3.0, None, [], 0, t_ms
            )
            for c in np.flatnonzero(ix.cabinet_concentrator).tolist()
        ]
    )


def _rules(lamps: int, batches: int) -> dict[str, Any]:
    index = fleet_index_of(generate(lamps))
    lighting = LightingEngine(index, {})
    t0 = int(_NIGHT.timestamp() * 1000)
    _settle(lighting, t0)
    engine = AlertEngine(lighting, t0 - 3_600_000)
    _cabinets_report(engine, t0)
    engine.sweep(t0)
    work = _batches(index.n, batches, t0, np.random.default_rng(1))
    started = time.perf_counter()
    for k, rows in enumerate(work):
        columns = lighting.on_batch(Batch(lamps=rows))
        engine.on_batch(columns, [], [], t0 + k * 250)
    elapsed = time.perf_counter() - started
    sweeps = []
    for k in range(5):
        t = time.perf_counter()
        engine.sweep(t0 + 60_000 + k * 1000)
        sweeps.append((time.perf_counter() - t) * 1000)
    return {
        "lamps": index.n,
        "rules_readings_per_s": round(batches * len(work[0]) / elapsed),
        "sweep_ms_median": round(statistics.median(sweeps), 1),
    }


def _blackout_batches(engine: LightingEngine, cabinets: list[int], t_ms: int, gasp: bool) -> list[Batch]:
    ix = engine.index
    assert ix.cabinet_concentrator is not None and ix.lamp_single is not None and ix.cabinet_no is not None
    out: list[Batch] = []
    batch = Batch()
    for cab in cabinets:
        if ix.cabinet_concentrator[cab]:
            circuits = 3
            batch.cabinets.append(
                CabinetRow(
                    t_ms,
                    int(ix.cabinet_no[cab]),
                    2 if gasp else 3,
                    False,
                    [True] * circuits,
                    [0.0] * 3,
                    [0.0] * circuits,
                    3.0,
                    None,
                    ["mains_loss"],
                    0,
                    t_ms,
                )
            )
        if gasp:
            for lamp in ix.lamps_of_cabinet(cab).tolist():
                if ix.lamp_single[lamp]:
                    rows: LampRows = batch.lamps
                    rows.ts.append(t_ms)
                    rows.lamp_no.append(int(ix.lamp_no[lamp]))
                    rows.seq.append(2)
                    rows.on.append(False)
                    rows.dim.append(0)
                    rows.power_w.append(0.0)
                    rows.faults.append(["supply_loss"])
                    rows.received_ms.append(t_ms)
        if len(batch.lamps) + len(batch.cabinets) >= 10_000:
            out.append(batch)
            batch = Batch()
    if len(batch.lamps) or batch.cabinets:
        out.append(batch)
    return out


async def _blackout(database_url: str) -> dict[str, Any]:
    with connect(database_url, autocommit=True) as conn:
        lighting = LightingEngine.load(conn)
        for code in lighting.index.districts:
            save_crew(conn, Crew(id=f"crew-{code}", name=f"crew {code}", districts=[code], mqtt=False))
    ix = lighting.index
    t0 = int(_NIGHT.timestamp() * 1000)
    clock = _ManualClock(t0)
    _settle(lighting, t0)
    engine = AlertEngine(lighting, t0 - 3_600_000)
    db = Database(database_url, name="lamplighter-bench")
    await db.open()
    service = AlertService(engine, db, clock, sweep_every_s=0.5)  # type: ignore[arg-type]
    _cabinets_report(engine, t0)
    engine.sweep(t0)
    # The district with most lamps; whole cabinets of it until 50,000 lamps are in the dark.
    sizes = np.bincount(ix.lamp_cabinet, minlength=len(ix.cabinet_ids))
    cab_district = ix.road_district[ix.cabinet_road]
    district = int(np.bincount(ix.lamp_district).argmax())
    chosen: list[int] = []
    total = 0
    for cab in np.flatnonzero(cab_district == district).tolist():
        if total >= _BLACKOUT_LAMPS:
            break
        chosen.append(cab)
        total += int(sizes[cab])
    task = asyncio.create_task(service.run())
    try:
        clock.ms = t0 + 60_000
        for b in _blackout_batches(lighting, chosen, clock.ms, gasp=True):
            service.on_batch(b, lighting.on_batch(b))
        service._enqueue(engine.sweep(clock.ms))
        await asyncio.sleep(1.0)
        # The second cabinet reports, five minutes on: every debounce is satisfied now.
        clock.ms = t0 + 60_000 + 300_000
        started = time.perf_counter()
        for b in _blackout_batches(lighting, chosen, clock.ms, gasp=False):
            service.on_batch(b, lighting.on_batch(b))
        service._enqueue(engine.sweep(clock.ms))
        with connect(database_url, autocommit=True) as conn:
            deadline = time.monotonic() + 120
            while True:
                if ticket_counts(conn)["cabinet"] >= len(chosen) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
            await asyncio.sleep(2.0)  # anything late (a lamp ticket that should not be) shows up now
            counts = ticket_counts(conn)
            cab_tickets, lamp_tickets, listed = counts["cabinet"], counts["lamp"], counts["listed_lamps"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await db.close()
    return {
        "blackout_lamps": total,
        "blackout_cabinets": len(chosen),
        "blackout_tickets": int(cab_tickets),
        "blackout_lamp_tickets": int(lamp_tickets),
        "blackout_lamps_listed": listed,
        "blackout_seconds": round(elapsed, 2),
    }


def run_alerts_bench(settings: Settings, *, lamps: int, batches: int = 50) -> int:
    print(f"bench alerts: rules over {lamps:,} lamps in memory", flush=True)
    result = _rules(lamps, batches)
    print(
        f"{'rule evaluation, gateway batches of 10,000 readings':56} {result['rules_readings_per_s']:>12,} readings/s"
    )
    print(f"{'sweep of the whole fleet (every rule, correlation)':56} {result['sweep_ms_median']:>12} ms")
    t = time.perf_counter()
    with bench_city(settings, lamps) as ep:
        print(f"{'city loaded into PostgreSQL':56} {time.perf_counter() - t:>12.1f} s", flush=True)
        result |= asyncio.run(_blackout(ep.database_url))
    print(f"{'blackout: lamps / cabinets':56} {result['blackout_lamps']:>12,} / {result['blackout_cabinets']:,}")
    print(
        f"{'blackout: cabinet tickets / lamp tickets':56} "
        f"{result['blackout_tickets']:>12,} / {result['blackout_lamp_tickets']:,}"
    )
    print(f"{'blackout: lamps listed on the cabinet tickets':56} {result['blackout_lamps_listed']:>12,}")
    print(f"{'blackout: debounce satisfied → every ticket committed':56} {result['blackout_seconds']:>12} s")
    print(json.dumps(result))
    return 0

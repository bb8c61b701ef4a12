"""`lamplighter bench energy`: what computing a night's energy costs at city size.

Writes two UTC days of readings for every lamp of a seeded city (`bench storage`'s generator: each lamp at its
report interval, on 18:30 to 07:30 local at about 97 % of rated power, its energy counter rising with it), then
computes the night that lies inside them as the leading gateway does at noon (`energy.nights`): time,
µs a reading, the peak memory numpy held meanwhile (tracemalloc), and the city's energy against what the
generator's power implies. Prints figures and, as its last line, one JSON object. Asserts nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import tracemalloc
from zoneinfo import ZoneInfo

import numpy as np

from bench.storage import _Fleet, write_day
from energy.meters import GAP, NO_METER, PARTIAL, RESET
from energy.nights import compute_night
from kernel.database import connect
from lamplighter.config import Settings
from lamplighter.runtime import bench_city
from lighting.engine import LightingEngine
from telemetry.store import count_readings

__all__ = ["run_energy_bench"]


def run_energy_bench(settings: Settings, *, lamps: int) -> int:
    tz = ZoneInfo(settings.timezone)
    today = dt.datetime.now(dt.UTC).date()
    days = [today - dt.timedelta(days=2), today - dt.timedelta(days=1)]
    night = days[0]  # local noon of the first day to local noon of the second: inside the two UTC days
    with bench_city(settings, lamps) as ep, connect(ep.database_url, autocommit=True) as conn:
        fleet = _Fleet(conn)
        written = 0
        t = time.monotonic()
        for day in days:
            written += write_day(conn, fleet, day)
        conn.execute("VACUUM ANALYZE lamp_readings")
        print(f"{written:,} readings of {lamps:,} lamps written in {time.monotonic() - t:.1f} s", flush=True)
        index = LightingEngine.load(conn).index
        now_ms = int(dt.datetime.combine(today, dt.time(12), tz).timestamp() * 1000)
        tracemalloc.start()
        t = time.perf_counter()
        ne = compute_night(conn, index, night, tz, now_ms)
        seconds = time.perf_counter() - t
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        in_window, _ = count_readings(
            conn,
            lo=dt.datetime.fromtimestamp(ne.start_ms / 1000, dt.UTC),
            hi=dt.datetime.fromtimestamp(ne.end_ms / 1000, dt.UTC),
        )
        expected_kwh = float((fleet.rated * 0.97).sum()) * 13 / 1000  # on 18:30 to 07:30
        kwh = float(ne.lamp_wh.sum()) / 1000
        flags = {
            name: int(np.count_nonzero(ne.lamp_flags & bit))
            for name, bit in (("reset", RESET), ("gap", GAP), ("partial", PARTIAL), ("no_meter", NO_METER))
        }
        print(
            f"night of {night}: {in_window:,} readings in the night, computed in {seconds:.1f} s "
            f"({seconds / in_window * 1e6:.2f} µs a reading), numpy's peak {peak / 1e6:.0f} MB; "
            f"city {kwh:,.0f} kWh against {expected_kwh:,.0f} kWh from the generator's power; lamps flagged {flags}",
            flush=True,
        )
        print(
            json.dumps(
                {
                    "bench": "energy",
                    "lamps": lamps,
                    "readings_in_night": in_window,
                    "seconds": round(seconds, 2),
                    "us_per_reading": round(seconds / in_window * 1e6, 3),
                    "peak_mb": round(peak / 1e6, 1),
                    "city_kwh": round(kwh, 1),
                    "expected_kwh": round(expected_kwh, 1),
                    "flagged": flags,
                }
            )
        )
    return 0

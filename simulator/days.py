"""Months of a city's lamps as their daily summaries, straight from the degradation physics: what
`telemetry.daily.summarise` would make of the simulator's readings, without making the readings (110,000 lamps
by 200 days would be 1.9 billion readings at a 15-minute interval; their summaries are 22 million rows).

Each lamp burns through each night (12 hours, a little longer in winter), switches on once, draws its rated power
with its own bias (±2 %) at its power factor, with the noise a day's median of 48 readings keeps; its driver runs
35 °C over the night air; a leakage sensor, where fitted, reads a few tenths of a mA. The lamps that degrade
(`simulator.degradation`, a day at a time) show what the Fleet's readings would: power rising and power factor
falling, ripple, a hotter driver, drop-outs counted as switch-ons, leakage creeping up, a worn relay's chatter, a
photocell's late switch-off. A lamp that fails opens the ticket the rules would open that day (driver_failure,
leakage_current, relay_failure, day_burning; lumen depreciation opens none) and is replaced `repair_days` later:
a new, healthy lamp in the same place. `tests/unit/simulator/test_days.py` checks these summaries against
`summarise` of the Fleet's own readings for the same wear.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from simulator.degradation import FAULT_OF, Degradation, Lifetimes, Rates
from telemetry.daily import DayTable

__all__ = ["CityDays", "Ticket", "generate_days"]

DAY_MS = 86_400_000
_READINGS_A_NIGHT = 48  # a 15-minute interval over 12 hours


@dataclass(frozen=True, slots=True)
class Ticket:
    lamp: int  # index into the lamps
    fault: str
    day: int  # index of the day it opened


@dataclass
class CityDays:
    table: DayTable
    rated_w: npt.NDArray[np.float32]
    tickets: list[Ticket] = field(default_factory=list)
    truth: list[dict[str, Any]] = field(default_factory=list)  # Degradation.events, `lamp` an index


def _night_hours(day: dt.date) -> float:
    """Hours from dusk to dawn at Xining's latitude, about 10 in June and 14 in December."""
    return 12.0 + 2.0 * math.cos(2 * math.pi * (day.timetuple().tm_yday + 10) / 365)


def _ambient(day: dt.date) -> float:
    return -2.0 - 12.0 * math.cos(2 * math.pi * (day.timetuple().tm_yday - 15) / 365)


def generate_days(
    n: int,
    first_day: dt.date,
    days: int,
    *,
    seed: int = 1,
    rates: Rates | None = None,
    lifetimes: Lifetimes | None = None,
    repair_days: int = 2,
    d4i_share: float = 0.8,
    leak_sensor_share: float = 0.5,
    lamp_no_start: int = 1,
    later: tuple[int, Lifetimes] | None = None,
    progress: Callable[[int], None] | None = None,
) -> CityDays:
    """`days` days of `n` lamps from `first_day`; the same arguments give the same city. `later` = (day index,
    lifetimes): degradations that start from that day on are drawn from those lifetimes instead (a backtest's
    test period unlike its training period)."""
    rng = np.random.default_rng([seed, 0xDA75])
    deg = Degradation(n, seed=seed, rates=rates, lifetimes=lifetimes)
    rated = rng.choice(np.array([60, 90, 120, 150, 250], dtype=np.float32), n, p=[0.2, 0.3, 0.3, 0.15, 0.05])
    bias = rng.normal(1.0, 0.02, n)
    pf0 = rng.uniform(0.95, 0.99, n)
    d4i = rng.random(n) < d4i_share
    sensor = rng.random(n) < leak_sensor_share
    table = DayTable.empty(np.arange(lamp_no_start, lamp_no_start + n, dtype=np.int64), first_day, days)
    c = table.columns
    out = CityDays(table=table, rated_w=rated)
    failed_on = np.full(n, -1, dtype=np.int64)  # the day a lamp failed, until it is replaced
    everyone = np.arange(n)
    for j in range(days):
        day = first_day + dt.timedelta(days=j)
        now_ms = int(dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.UTC).timestamp() * 1000)
        if later is not None and j == later[0]:
            deg.lifetimes = later[1]
        hours = _night_hours(day)
        air = _ambient(day)
        # Lamps whose failure is `repair_days` old are replaced: new, healthy, out of their mode.
        replaced = np.flatnonzero((failed_on >= 0) & (j - failed_on >= repair_days))
        if len(replaced):
            deg.mode[replaced] = 0
            deg.damage[replaced] = 0.0
            deg.failed_ms[replaced] = 0
            failed_on[replaced] = -1
        working = failed_on < 0
        # A day's wear: the night's burning (driver temperature: air + 20 °C + its own heat), one switching.
        temp = air + 35.0 + deg.driver_heat(everyone)
        failures = deg.advance(now_ms, DAY_MS, burning=working * (hours / 24.0), driver_temp_c=temp, healthy=working)
        for mode, lamps in deg.switched_on(np.flatnonzero(working), now_ms).items():
            failures[mode] = np.concatenate([failures.get(mode, np.zeros(0, dtype=np.int64)), lamps])
        for mode, lamps in failures.items():
            failed_on[lamps] = j
            fault = FAULT_OF[mode]
            if fault is not None:
                out.tickets.extend(Ticket(int(i), fault, j) for i in lamps.tolist())
        lit = failed_on < 0
        lit |= deg.of("water") | deg.of("photocell") | deg.of("lumen")  # these still light when they have failed
        d_driver = np.minimum(deg.level("driver", everyone), 1.0)
        spread_noise = np.abs(rng.normal(0, 0.004, n))
        c["power_norm_med"][:, j] = np.where(
            lit, rated * bias * deg.power_rise(everyone) * (1 + rng.normal(0, 0.003, n)), np.nan
        )
        c["power_norm_spread"][:, j] = np.where(lit, 0.027 + 1.35 * deg.ripple(everyone) + spread_noise, np.nan)
        c["pf_med"][:, j] = np.where(lit, pf0 - deg.pf_drop(everyone) + rng.normal(0, 0.002, n), np.nan)
        dtemp = np.round(air + 35.0 + 10.0 * d_driver + rng.normal(0, 0.5, n))
        c["driver_temp_med"][:, j] = np.where(lit & d4i, dtemp, np.nan)
        leak = deg.leakage_ma(everyone) + np.abs(rng.normal(0, 0.1, n))
        c["leakage_med"][:, j] = np.where(sensor, leak, np.nan)
        c["leakage_max"][:, j] = np.where(sensor, leak + np.abs(rng.normal(0, 0.3, n)), np.nan)
        restarts = rng.poisson(deg.dropouts_per_hour(everyone) * hours) + rng.poisson(deg.chatter(everyone))
        c["starts"][:, j] = np.where(lit, 1 + restarts, 0)
        late_s = deg.late_off_ms(everyone) / 1000.0
        c["burn_s"][:, j] = np.where(lit, hours * 3600 + late_s + rng.normal(0, 60, n), 0)
        if progress is not None:
            progress(j + 1)
    out.truth = deg.events
    return out

"""What a forecast looks at: each lamp's recent days against its own earlier ones, from its daily summaries.

Every figure is compared with the lamp itself (its last days against its baseline a few weeks back), and where the
weather moves it (power, driver temperature, burning time) first with the rest of the fleet that same day, so a cold
night or a long one moves no lamp's figures. For each lamp at a day `t` (`features`):

| feature | what it is |
|---|---|
| `power_rise` | power at full output over the last 3 days against its baseline (days t−28 … t−8), as a fraction |
| `power_slope` | the same power's trend over the last 14 days, a fraction of the baseline a day |
| `spread_rise` | the day's power spread (ripple) now against the baseline |
| `pf_fall`, `pf_slope` | power factor: how far it fell from the baseline, and its trend a day |
| `driver_temp_rise` | the driver's temperature (against the fleet's that day) now against the baseline, °C |
| `leakage_max` | the most earth leakage of the last 3 days, mA |
| `leakage_rise`, `leakage_slope` | leakage now against the baseline, and its trend over 14 days, mA and mA a day |
| `starts_recent`, `starts_rise` | switch-ons a day over the last 3 days, and more than in the baseline |
| `late_min`, `late_slope` | minutes a day burning longer than the fleet that day, now, and the trend a day |
| `*_days_left` | days until the trend reaches its failure level (power 15 % over, power factor 0.1 |
| | down, leakage 30 mA: accelerating wear, extrapolated on its square root; 14 minutes late: straight); |
| | 365 where it is not heading there |
| `rated_w` | the lamp's rated power |
| `days_seen` | days of the window with a power figure (a lamp newly installed or silent has few) |

Missing figures stay NaN (a device without the sensor); the model takes them as missing.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt

from telemetry.daily import DayTable

__all__ = ["BASELINE", "FEATURES", "RECENT", "TREND", "WINDOW", "features"]

FEATURES = (
    "power_rise",
    "power_slope",
    "spread_rise",
    "pf_fall",
    "pf_slope",
    "driver_temp_rise",
    "leakage_max",
    "leakage_rise",
    "leakage_slope",
    "starts_recent",
    "starts_rise",
    "late_min",
    "late_slope",
    "power_days_left",
    "pf_days_left",
    "leakage_days_left",
    "late_days_left",
    "rated_w",
    "days_seen",
)
WINDOW = 28  # days of history a lamp's features need
BASELINE = (28, 8)  # days t−28 … t−8
RECENT = 3
TREND = 14
NEVER = 365.0  # days left when a figure is not heading for its failure level
# The levels failures come at, which a trend is extrapolated to: what the physics of each mode says
# (simulator.degradation), not fitted to any one city.
POWER_FAILS_AT = 0.15
PF_FAILS_AT = 0.10
LEAKAGE_TRIPS_AT = 30.0
LATE_FAILS_AT = 14.0

F32 = npt.NDArray[np.float32]


@contextmanager
def _quiet() -> Iterator[None]:
    """numpy's warnings for an all-NaN slice (a lamp without the figure) mean "no figure": NaN is the answer."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _slope(y: F32) -> F32:
    """Least-squares slope a day of each row (NaN-aware; NaN with fewer than 3 points)."""
    x = np.arange(y.shape[1], dtype=np.float32)[None, :]
    ok = ~np.isnan(y)
    n = ok.sum(axis=1)
    with _quiet(), np.errstate(invalid="ignore", divide="ignore"):
        xm = np.where(ok, x, 0).sum(axis=1) / n
        ym = np.where(ok, y, 0).sum(axis=1) / n
        dx = np.where(ok, x - xm[:, None], 0)
        dy = np.where(ok, y - ym[:, None], 0)
        slope = (dx * dy).sum(axis=1) / (dx * dx).sum(axis=1)
    return np.where(n >= 3, slope, np.nan).astype(np.float32)


def _against_fleet(v: F32) -> F32:
    """Each day's figures less that day's median over the lamps."""
    with _quiet():
        return (v - np.nanmedian(v, axis=0)[None, :]).astype(np.float32)


def _ratio_to_fleet(v: F32) -> F32:
    with _quiet(), np.errstate(invalid="ignore", divide="ignore"):
        return (v / np.nanmedian(v, axis=0)[None, :]).astype(np.float32)


def _days_left(now: F32, per_day: F32, level: F32 | float) -> F32:
    """Days until `now` reaches `level` at `per_day` (`level` already reached: 0; not heading there: NEVER)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        left = np.where(per_day > 0, (level - now) / per_day, NEVER)
        left = np.where(now >= level, 0.0, left)
    out: F32 = np.clip(np.nan_to_num(left, nan=NEVER), 0.0, NEVER).astype(np.float32)
    return out


def _accelerating(excess: F32, level: F32 | float) -> F32:
    """Days until a wear that accelerates (an excess over the baseline growing with the square of time, as a
    drying capacitor's losses or water's creeping leakage do) reaches `level`: its square root's straight trend,
    extrapolated."""
    with np.errstate(invalid="ignore"):
        root = np.sqrt(np.clip(excess, 0, None)).astype(np.float32)
        now = np.nanmean(root[:, -RECENT:], axis=1)
        return _days_left(now, _slope(root), np.sqrt(np.clip(level, 0, None)))


def features(table: DayTable, t: int, rated_w: F32) -> F32:
    """Each lamp's features (`FEATURES`, in order) at day index `t` of `table` (which needs days t−28 … t); rows
    in the table's lamp order."""
    if t < WINDOW:
        raise ValueError(f"features at day {t} need {WINDOW} days before it")
    c = table.columns
    lo, hi = t - BASELINE[0], t - BASELINE[1] + 1
    recent = slice(t - RECENT + 1, t + 1)
    trend = slice(t - TREND + 1, t + 1)
    base = slice(lo, hi)
    whole = slice(lo, t + 1)
    with _quiet(), np.errstate(invalid="ignore", divide="ignore"):
        power = _ratio_to_fleet(c["power_norm_med"][:, whole] / rated_w[:, None])
        p_base = np.nanmedian(power[:, : hi - lo], axis=1)
        p_recent = np.nanmean(power[:, -RECENT:], axis=1)
        power_trend = power[:, -TREND:]
        spread = c["power_norm_spread"]
        pf = c["pf_med"]
        dtemp = _against_fleet(c["driver_temp_med"][:, whole])
        leak_med, leak_max = c["leakage_med"], c["leakage_max"]
        starts = c["starts"]
        late = _against_fleet(c["burn_s"][:, whole]) / 60.0
        power_rise = p_recent / p_base - 1
        power_slope = _slope(power_trend) / p_base
        pf_fall = np.nanmedian(pf[:, base], axis=1) - np.nanmean(pf[:, recent], axis=1)
        pf_slope = _slope(pf[:, trend])
        leak_now = np.nanmean(leak_med[:, recent], axis=1)
        leak_base = np.nanmedian(leak_med[:, base], axis=1)
        leak_slope = _slope(leak_med[:, trend])
        late_now = np.nanmean(late[:, -RECENT:], axis=1)
        late_slope = _slope(late[:, -TREND:])
        out = [
            power_rise,
            power_slope,
            np.nanmean(spread[:, recent], axis=1) - np.nanmedian(spread[:, base], axis=1),
            pf_fall,
            pf_slope,
            np.nanmean(dtemp[:, -RECENT:], axis=1) - np.nanmedian(dtemp[:, : hi - lo], axis=1),
            np.nanmax(leak_max[:, recent], axis=1),
            leak_now - leak_base,
            leak_slope,
            np.nanmean(starts[:, recent], axis=1),
            np.nanmean(starts[:, recent], axis=1) - np.nanmean(starts[:, base], axis=1),
            late_now,
            late_slope,
            _accelerating(power_trend / p_base[:, None] - 1, POWER_FAILS_AT),
            _accelerating(np.nanmedian(pf[:, base], axis=1)[:, None] - pf[:, trend], PF_FAILS_AT),
            _accelerating(leak_med[:, trend] - leak_base[:, None], LEAKAGE_TRIPS_AT - leak_base),
            _days_left(late_now, late_slope, LATE_FAILS_AT),
            rated_w,
            (~np.isnan(c["power_norm_med"][:, whole])).sum(axis=1),
        ]
    return np.column_stack(out).astype(np.float32)

"""The daily summaries the forecast benchmark generates stand for what `telemetry.daily.summarise` makes of the
simulator's own readings: the same wear gives the same figures both ways."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np

from simulator.days import generate_days
from simulator.degradation import Degradation, Rates
from simulator.fleet import Fleet
from telemetry.daily import summarise
from telemetry.daypack import LampDay
from tests.support.fleet import single_lamps
from tests.unit.simulator.test_degradation import DAY_MS, STEP_MS, T0, Nights


def _as_day(reports: list[dict]) -> LampDay:

    def col(key: str, dtype: type) -> tuple[np.ndarray, np.ndarray]:
        present = np.array([key in r for r in reports])
        return np.array([r.get(key, 0) for r in reports], dtype=dtype), present

    return LampDay(
        ts_us=np.array([r["ts"] * 1000 for r in reports], dtype=np.int64),
        seq=np.array([r["seq"] for r in reports], dtype=np.int64),
        is_on=np.array([r["on"] for r in reports]),
        dim=np.array([r["dim"] for r in reports], dtype=np.int64),
        power_w=col("power_w", np.float32), voltage_v=col("voltage_v", np.float32),
        current_a=col("current_a", np.float32), power_factor=col("power_factor", np.float32),
        energy_wh=col("energy_wh", np.int64), temp_c=col("temp_c", np.float32), lux=col("lux", np.float32),
        rssi_dbm=col("rssi_dbm", np.int64), mode=[r.get("mode") for r in reports],
        faults=[tuple(r["faults"]) for r in reports], received_us=np.array([r["ts"] * 1000 for r in reports]),
        burn_h=col("burn_h", np.int64), starts=col("starts", np.int64),
        driver_temp_c=col("driver_temp_c", np.float32), leakage_ma=col("leakage_ma", np.float32),
    )  # fmt: skip


def test_a_worn_lamps_summarised_readings_show_the_wear_the_generator_writes() -> None:
    n = 3
    deg = Degradation(n, seed=1, rates=Rates.zero())
    fleet = Fleet(single_lamps(n), interval_s=900, failure_rate_per_day=0.0, start_ms=T0, control=Nights(n),
                  degradation=deg, d4i_share=1.0, leak_sensor_share=1.0)  # fmt: skip
    deg.start([1], "driver", T0, lifetime=1e9)
    deg.start([2], "water", T0, lifetime=1e9)
    deg.damage[[1, 2]] = 0.6  # held there: a pace of nothing
    deg.pace[[1, 2]] = 0.0
    reports: dict[str, list[dict]] = {}
    for t in range(T0, T0 + DAY_MS, STEP_MS):
        for r in fleet.due_reports(t):
            reports.setdefault(r.topic.decode().split("/")[3], []).append(json.loads(r.payload))
    days = [_as_day(reports[f"XN-CD-{i:06d}"]) for i in (1, 2, 3)]
    s = summarise(LampDay.joined(days), [len(d) for d in days])
    idx = np.arange(n)
    # Power at full output: the healthy lamp's rated 100 W, the worn driver's that times power_rise.
    assert abs(s["power_norm_med"][0] - 100.0) < 1.0
    assert abs(s["power_norm_med"][1] / s["power_norm_med"][0] - deg.power_rise(idx)[1]) < 0.01
    assert abs((s["pf_med"][0] - s["pf_med"][1]) - deg.pf_drop(idx)[1]) < 0.05  # lamps' own factors differ
    assert abs(s["leakage_med"][2] - deg.leakage_ma(idx)[2]) < 0.3
    assert s["starts"].tolist() == [1, 1, 1] and all(abs(b - 12 * 3600) <= 900 for b in s["burn_s"])


def test_generated_days_wear_fail_and_are_replaced() -> None:
    city = generate_days(3000, dt.date(2026, 3, 1), 120, seed=3, rates=Rates(0.3, 0.1, 0.05, 0.1, 0.0))
    c = city.table.columns
    faults = {t.fault for t in city.tickets}
    assert faults == {"driver_failure", "leakage_current", "relay_failure", "day_burning"}
    # A driver ticket: its lamp drew more before, nothing on the day, and a new lamp's rated power after.
    t = next(t for t in city.tickets if t.fault == "driver_failure" and 40 < t.day < 110)
    power = c["power_norm_med"][t.lamp] / city.rated_w[t.lamp]
    assert power[t.day - 1] > 1.08 * np.nanmedian(power[t.day - 40 : t.day - 30])
    assert np.isnan(power[t.day]) and abs(power[t.day + 3] - np.nanmedian(power[t.day - 40 : t.day - 30])) < 0.05
    # A water ticket: leakage past the 30 mA a residual-current device trips at (where a sensor reads it).
    w = [t for t in city.tickets if t.fault == "leakage_current" and not np.isnan(c["leakage_med"][t.lamp, t.day])]
    assert w and all(c["leakage_med"][t.lamp, t.day] >= 29.0 for t in w)
    # Healthy lamps: one switch-on a night, a night's burning.
    healthy = np.setdiff1d(np.arange(3000), [e["lamp"] for e in city.truth])
    assert (c["starts"][healthy] == 1).all()
    assert abs(np.median(c["burn_s"][healthy, 0]) / 3600 - 13.0) < 1.0  # early March in Xining

"""A lamp's day summed up (telemetry.daily.summarise), against figures worked out by hand."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from telemetry.daily import GAP_S, summarise
from telemetry.daypack import LampDay

T0 = 1_796_256_000_000_000  # a UTC midnight, µs


def _day(ts_s: list[int], on: list[bool], dim: list[int], power: list[float | None], **extra: Any) -> LampDay:
    n = len(ts_s)

    def col(values: list[Any] | None, dtype: Any) -> tuple[Any, Any]:
        if values is None:
            return np.zeros(n, dtype=dtype), np.zeros(n, dtype=bool)
        present = np.array([v is not None for v in values])
        return np.array([v if v is not None else 0 for v in values], dtype=dtype), present

    return LampDay(
        ts_us=T0 + np.array(ts_s, dtype=np.int64) * 1_000_000,
        seq=np.arange(n, dtype=np.int64),
        is_on=np.array(on),
        dim=np.array(dim, dtype=np.int64),
        power_w=col(power, np.float32),
        voltage_v=col(None, np.float32),
        current_a=col(None, np.float32),
        power_factor=col(extra.get("pf"), np.float32),
        energy_wh=col(None, np.int64),
        temp_c=col(None, np.float32),
        lux=col(None, np.float32),
        rssi_dbm=col(None, np.int64),
        mode=["auto"] * n,
        faults=extra.get("faults", [()] * n),
        received_us=T0 + np.array(ts_s, dtype=np.int64) * 1_000_000 + 500,
        burn_h=col(extra.get("burn_h"), np.int64),
        starts=col(extra.get("starts"), np.int64),
        driver_temp_c=col(extra.get("driver_temp_c"), np.float32),
        leakage_ma=col(extra.get("leakage_ma"), np.float32),
    )


def test_a_night_with_a_break_and_a_dimming_step() -> None:
    # Every 10 minutes: off, off, on (100 %), on (100 %), on (50 %), on (50 %), off, on (100 %), off.
    day = _day(
        [0, 600, 1200, 1800, 2400, 3000, 3600, 4200, 4800],
        [False, False, True, True, True, True, False, True, False],
        [0, 0, 100, 100, 50, 50, 0, 100, 0],
        [0.0, 0.0, 100.0, 102.0, 51.0, 52.0, 0.0, 104.0, 0.0],
        pf=[None, None, 0.96, 0.95, 0.9, 0.9, None, 0.97, None],
        leakage_ma=[1.0, 1.5, 2.0, None, 4.0, 1.0, 1.0, 1.0, 1.0],
        burn_h=[None, 100, 100, 101, None, 101, 101, 102, None],
        faults=[(), (), (), ("over_temperature",), (), (), (), ("lamp_failure", "over_temperature"), ()],
    )
    s = summarise(day, [len(day)], [False])
    assert s["readings"].tolist() == [9]
    assert s["on_readings"].tolist() == [5]
    assert s["burn_s"].tolist() == [5 * 600]  # each on reading's 10 minutes up to the next reading
    assert s["starts"].tolist() == [2]  # switched on at 1200 and at 4200 s
    assert s["last_on"].tolist() == [False]
    # At full output: 100, 102, 51·2, 52·2, 104 → sorted 100 102 102 104 104: median 102, quartiles 102 and 104.
    assert s["power_norm_med"][0] == pytest.approx(102.0)
    assert s["power_norm_spread"][0] == pytest.approx(2 / 102)
    assert s["pf_med"][0] == pytest.approx(0.95)  # while on: 0.96 0.95 0.9 0.9 0.97
    assert s["leakage_med"][0] == pytest.approx(1.0)  # all day: 1 1 1 1 1 1.5 2 4
    assert s["leakage_max"][0] == pytest.approx(4.0)
    assert s["burn_h"][0] == 102  # the last the device reported
    assert np.isnan(s["starts_reported"][0]) and np.isnan(s["driver_temp_med"][0])  # never reported
    assert s["faults"] == [("lamp_failure", "over_temperature")]


def test_several_lamps_at_once_a_long_silence_and_the_previous_night() -> None:
    a = _day([0, 7200], [True, True], [100, 100], [50.0, 50.0])  # two hours of silence: counts GAP_S
    b = _day([300], [True], [100], [None])  # one reading, on: a switch-on if its day before ended off …
    c = _day([300], [True], [100], [None])  # … but not if it ended on (an always-on lamp) …
    d = _day([300, 900], [True, False], [100, 0], [None, None])  # … nor if nothing is known of it
    s = summarise(LampDay.joined([a, b, c, d]), [2, 1, 1, 2], [None, False, True, None])
    # Lit at its last reading, a lamp burns on towards midnight (up to GAP_S); c burned since midnight, 300 s.
    assert s["burn_s"].tolist() == [GAP_S + GAP_S, GAP_S, 300 + GAP_S, 600]
    assert s["starts"].tolist() == [0, 1, 0, 0]
    assert s["last_on"].tolist() == [True, True, True, False]
    assert s["power_norm_med"][0] == pytest.approx(50.0) and np.isnan(s["power_norm_med"][1])


def test_lengths_must_add_up() -> None:
    with pytest.raises(ValueError, match="lengths add up to 3"):
        summarise(_day([0, 1], [True, True], [100, 100], [1.0, 1.0]), [3])


def test_a_morning_switch_off_just_after_midnight_counts_on_both_days() -> None:
    # On at 23:50 and 23:55, off at 00:05 the next morning (a winter dawn east of Greenwich, on UTC days).
    evening = _day([85_800, 86_100], [True, True], [100, 100], [90.0, 90.0])
    morning = _day([86_400 + 300], [False], [0], [0.0])
    first = summarise(evening, [2], [None])
    second = summarise(morning, [1], [bool(first["last_on"][0])])
    assert first["burn_s"].tolist() == [300 + 300]  # 23:50 → 23:55, and on to midnight
    assert second["burn_s"].tolist() == [300]  # midnight → 00:05


def test_a_drivers_own_switch_on_count_shows_what_the_reports_cannot() -> None:
    # Reports every 10 minutes, on all along, but the driver counted 5 switch-ons that day (a chattering relay).
    day = _day([0, 600, 1200], [True, True, True], [100] * 3, [90.0] * 3, starts=[4_000, 4_003, 4_005])
    assert summarise(day, [3], [True])["starts"].tolist() == [5]
    plain = _day([0, 600, 1200], [False, True, True], [0, 100, 100], [0.0, 90.0, 90.0])
    assert summarise(plain, [3], [False])["starts"].tolist() == [1]  # a device without the counter

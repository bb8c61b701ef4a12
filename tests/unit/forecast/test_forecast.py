"""The failure forecast: its features worked out by hand, and a backtest on days it never saw."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from forecast.backtest import Failures, fit_tuned, judge, persistent, score
from forecast.features import FEATURES, NEVER, WINDOW, features
from simulator.days import generate_days
from simulator.degradation import Lifetimes, Rates
from telemetry.daily import DayTable

DAYS = WINDOW + 1


def _table() -> tuple[DayTable, np.ndarray]:
    """Three lamps of 100 W over 29 days: healthy, a photocell drifting 0.5 minutes later each day from day 14, and
    water whose leakage grows with the square of time from day 9."""
    t = DayTable.empty(np.array([1, 2, 3]), dt.date(2026, 5, 1), DAYS)
    c = t.columns
    day = np.arange(DAYS, dtype=np.float32)
    c["power_norm_med"][:] = 100.0
    c["pf_med"][:] = 0.97
    c["starts"][:] = 1
    c["burn_s"][:] = 11 * 3600.0
    c["burn_s"][1] += np.where(day >= 14, (day - 14) * 0.5 * 60, 0)
    c["leakage_med"][:] = 0.5
    c["leakage_med"][2] += np.where(day >= 9, 0.05 * (day - 9) ** 2, 0)
    c["leakage_max"][:] = c["leakage_med"] + 0.2
    return t, np.full(3, 100.0, dtype=np.float32)


def test_features_say_how_far_each_lamp_is_from_its_failure_level() -> None:
    table, rated = _table()
    x = features(table, WINDOW, rated)
    f = {name: x[:, i] for i, name in enumerate(FEATURES)}
    # The photocell: 14 days of drift by day 28, 7 minutes late now (the last three days' mean: 6.5), rising 0.5 a
    # day: (14 − 6.5) / 0.5 = 15 days left.
    assert f["late_min"][1] == pytest.approx(6.5, abs=0.01)
    assert f["late_slope"][1] == pytest.approx(0.5, abs=0.01)
    assert f["late_days_left"][1] == pytest.approx(15.0, abs=0.1)
    # Water: 0.05 (t − 9)² mA over its baseline, whose square root grows 0.224 a day; at day 27 (the last three
    # days' mean of the root, 18·0.224) it needs (√(30 − baseline) − 4.02) / 0.224 more days: the 24.5 mA trip at
    # day 9 + √(29.5 / 0.05) = 33.3, about 5 days on.
    assert 4.0 < f["leakage_days_left"][2] < 7.5
    # The healthy lamp heads nowhere.
    assert f["late_days_left"][0] == NEVER and f["leakage_days_left"][0] == NEVER
    assert f["power_rise"][0] == pytest.approx(0.0) and f["days_seen"][0] == DAYS


def test_too_little_history_is_an_error_that_says_so() -> None:
    table, rated = _table()
    with pytest.raises(ValueError, match="need 28 days"):
        features(table, 10, rated)


def test_a_forecast_trained_on_one_period_foresees_the_next_one_whose_lamps_wear_differently() -> None:
    rates = Rates(driver=0.2, water=0.05, relay=0.03, photocell=0.08, lumen=0.0)
    later = Lifetimes(driver=(12.0, 0.5), water=(14.0, 0.5), relay=(50.0, 0.45), photocell=(40.0, 0.45))
    city = generate_days(6000, dt.date(2026, 1, 1), 200, seed=11, rates=rates, later=(140, later))
    failures = Failures.of([(t.lamp, t.fault, t.day) for t in city.tickets])
    model = fit_tuned(city.table, city.rated_w, failures, known_until=140, horizon=30)
    risk, mode, _ = score(model, city.table, city.rated_w, range(138, 200))
    result = judge(persistent(risk, model.threshold), mode, failures, n=6000, horizon=30, first_day=140,
                   last_day=199)  # fmt: skip
    assert result["failures"] > 60
    assert result["precision"] >= 0.8 and result["recall"] >= 0.7, result
    assert result["median_lead_days"] >= 7, result

"""Simulated lamps wearing out: each mode shows its precursors in the lamp's own reports, ends in the fault the
rules know, and is written down in the ground truth."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from simulator.degradation import MODES, Degradation, Rates
from simulator.fleet import Fleet
from tests.support.fleet import single_lamps

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
T0 = 1_796_256_000_000  # a UTC midnight in December
STEP_MS = 60_000


class Nights:
    """On at full level from 10:00 to 22:00 UTC (a Xining night), off the rest of the day."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, now_ms: int) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int16]]:
        on = 10 <= (now_ms % DAY_MS) // HOUR_MS < 22
        return np.full(self.n, on), np.full(self.n, 100, dtype=np.int16)


def _run(fleet: Fleet, days: float) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """Every report of `days` from T0, one step a minute: (time, lamp, report)."""
    for t in range(T0, T0 + int(days * DAY_MS), STEP_MS):
        for r in fleet.due_reports(t):
            yield t, r.topic.decode().split("/")[3], json.loads(r.payload)


@pytest.fixture
def world(tmp_path: Path) -> tuple[Fleet, Degradation, Path]:
    n = 6
    truth = tmp_path / "truth.jsonl"
    deg = Degradation(n, seed=4, rates=Rates.zero(), truth=truth, lamp_ids=single_lamps(n).lamp_id)
    fleet = Fleet(single_lamps(n), interval_s=600, failure_rate_per_day=0.0, start_ms=T0, control=Nights(n),
                  degradation=deg, d4i_share=1.0, leak_sensor_share=1.0)  # fmt: skip
    # Lamp 1 healthy; 2 driver, 3 water, 4 relay, 5 photocell, 6 lumen.
    deg.start([1], "driver", T0, lifetime=1.0)  # days of burning at 40 °C: about 5 nights of a winter driver
    deg.start([2], "water", T0, lifetime=4.0)
    deg.start([3], "relay", T0, lifetime=5.0)  # switchings
    deg.start([4], "photocell", T0, lifetime=3.0)
    deg.start([5], "lumen", T0, lifetime=3.0)
    return fleet, deg, truth


def test_each_mode_shows_its_precursors_and_ends_in_its_fault(world: tuple[Fleet, Degradation, Path]) -> None:
    fleet, deg, truth = world
    seen: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for t, lamp, report in _run(fleet, 8):
        seen.setdefault(lamp, []).append((t, report))
    healthy, driver, water, relay, photocell, lumen = (seen[f"XN-CD-{i:06d}"] for i in range(1, 7))

    def night(series: list[tuple[int, dict[str, Any]]], day: int, key: str) -> float:
        vals = [r[key] for t, r in series if (t - T0) // DAY_MS == day and r["on"] and r["dim"] == 100]
        return float(np.median(vals))

    failed = {e["mode"]: e["ts"] for e in deg.events if e["event"] == "failure"}
    assert set(failed) == {"driver", "water", "relay", "photocell", "lumen"}, deg.events

    # The driver draws more and its power factor falls, night by night, until it fails.
    def last_hours(key: str) -> float:
        end = failed["driver"]
        return float(np.median([r[key] for t, r in driver if end - 6 * HOUR_MS <= t < end and r["power_w"] > 0]))

    assert last_hours("power_w") > 1.08 * night(driver, 0, "power_w")
    assert last_hours("power_factor") < night(driver, 0, "power_factor") - 0.05
    assert last_hours("driver_temp_c") > night(driver, 0, "driver_temp_c") + 4
    last_night = (failed["driver"] - T0) // DAY_MS - 1
    assert abs(night(healthy, last_night, "power_w") - night(healthy, 0, "power_w")) < 3
    after = [r for t, r in driver if t > failed["driver"]]
    assert after and all(r["faults"] == ["driver_failure"] and r["power_w"] == 0 for r in after)

    # Leakage creeps up for days, then the residual-current fault.
    leak = [r["leakage_ma"] for t, r in water if t < failed["water"]]
    assert leak[0] < 1.0 and max(leak) > 15.0
    assert all("leakage_current" in r["faults"] for t, r in water if t > failed["water"])

    # A worn relay chatters (more starts counted than switchings), then stays open.
    switchings = [r["starts"] for t, r in relay]
    healthy_starts = [r["starts"] for t, r in healthy]
    assert switchings[-1] - switchings[0] > (healthy_starts[-1] - healthy_starts[0]) + 3
    after = [r for t, r in relay if t > failed["relay"]]
    assert after and all(r["faults"] == ["relay_failure"] and not r["on"] for r in after)

    # A drifting photocell keeps the lamp on after 22:00, longer each morning: day-burning past 15 minutes.
    def late(series: list[tuple[int, dict[str, Any]]], day: int) -> int:
        on_after = [t for t, r in series if r["on"] and (t - T0) // DAY_MS == day and (t % DAY_MS) >= 22 * HOUR_MS]
        return (max(on_after) % DAY_MS - 22 * HOUR_MS) // 60_000 if on_after else 0

    assert late(healthy, 6) == 0
    assert late(photocell, 0) < 10 and late(photocell, 6) > 15

    # Lumen depreciation: nothing electrical changes; only the ground truth knows.
    assert abs(night(lumen, 6, "power_w") - night(lumen, 0, "power_w")) < 3
    assert all(not r["faults"] for t, r in lumen)

    # The ground truth on file: each onset and failure, by lamp and mode.
    events = [json.loads(line) for line in truth.read_text().splitlines()]
    assert events == deg.events
    assert {(e["lamp"], e["mode"]) for e in events if e["event"] == "failure"} == {
        (f"XN-CD-{i:06d}", m) for i, m in zip(range(2, 7), MODES, strict=True)
    }


def test_burning_hours_and_starts_count_what_the_lamp_did(world: tuple[Fleet, Degradation, Path]) -> None:
    fleet, _, _ = world
    healthy = [r for t, lamp, r in _run(fleet, 3) if lamp == "XN-CD-000001"]
    # Three nights of twelve hours: 36 burning hours and three switch-ons, give or take the reports' rounding.
    assert 35 <= healthy[-1]["burn_h"] - healthy[0]["burn_h"] <= 37
    assert healthy[-1]["starts"] - healthy[0]["starts"] == 3


def test_onsets_come_at_the_rates_given() -> None:
    n = 20_000
    deg = Degradation(n, seed=2, rates=Rates(driver=0.05, water=0.0, relay=0.0, photocell=0.01, lumen=0.0))
    everyone = np.ones(n, dtype=bool)
    for day in range(365):
        deg.advance(T0 + (day + 1) * DAY_MS, DAY_MS, burning=everyone, driver_temp_c=40.0, healthy=everyone)
    onsets = [e["mode"] for e in deg.events if e["event"] == "onset"]
    assert 0.8 * 1000 < onsets.count("driver") < 1.2 * 1000  # 5 % of 20,000 a year
    assert 0.7 * 200 < onsets.count("photocell") < 1.3 * 200
    assert "water" not in onsets


def test_an_unknown_mode_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown degradation mode 'rust'"):
        Degradation(3).start([0], "rust", T0)

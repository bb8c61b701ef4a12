"""The simulated fleet's devices as a field engineer would read them: meters, switching, commands."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt

from simulator.fleet import Fleet
from tests.support.fleet import single_lamps

HOUR_MS = 3_600_000
T0 = 1_796_000_000_000  # an instant; the lamps follow the control below, not the sun


class Switch:
    """A schedule the test sets: every lamp on or off at full level."""

    def __init__(self, n: int) -> None:
        self.n, self.on = n, False

    def __call__(self, now_ms: int) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int16]]:
        return np.full(self.n, self.on), np.full(self.n, 100, dtype=np.int16)


def _readings(fleet: Fleet, now_ms: int) -> dict[str, dict[str, Any]]:
    """Ask every lamp to report now; their readings by lamp id."""
    fleet.report_now(np.arange(fleet.n), now_ms)
    out = {}
    for r in fleet.due_reports(now_ms):
        lamp = r.topic.decode().split("/")[3]
        out[lamp] = json.loads(r.payload)
    return out


def _fleet(control: Switch) -> Fleet:
    return Fleet(single_lamps(control.n), interval_s=86_400, failure_rate_per_day=0.0, start_ms=T0, control=control)


def test_energy_meters_count_what_each_lamp_drew() -> None:
    control = Switch(4)
    fleet = _fleet(control)
    start = {k: v["energy_wh"] for k, v in _readings(fleet, T0).items()}
    control.on = True
    fleet.due_reports(T0 + 1000)  # the next clock second: the lamps switch on
    fleet.command(1, {"op": "dim", "level": 50}, T0 + 1000)
    fleet.fail([2], "driver_failure", T0 + 1000)
    fleet.due_reports(T0 + 1000)  # the dimming takes effect at the next step
    after = _readings(fleet, T0 + 1000 + HOUR_MS)
    used = {k: after[k]["energy_wh"] - start[k] for k in start}
    # An hour at 100 W, an hour dimmed to half, a dead driver, and another hour at full: meters are whole Wh.
    assert abs(used["XN-CD-000001"] - 100) <= 1
    assert abs(used["XN-CD-000002"] - 50) <= 1
    assert abs(used["XN-CD-000003"]) <= 1
    assert abs(used["XN-CD-000004"] - 100) <= 1
    assert after["XN-CD-000003"]["power_w"] == 0 and after["XN-CD-000003"]["faults"] == ["driver_failure"]
    assert 95 <= after["XN-CD-000001"]["power_w"] <= 105


def test_lamps_switch_with_their_schedule_and_report_it_within_a_clock_second() -> None:
    control = Switch(4)
    fleet = _fleet(control)
    fleet.due_reports(T0)
    control.on = True
    switched: set[str] = set()
    for ms in range(50, 1050, 50):  # 50 ms steps
        switched |= {r.topic.decode().split("/")[3] for r in fleet.due_reports(T0 + ms)}
    assert len(switched) == 4 and fleet.on.all()
    readings = _readings(fleet, T0 + 1100)
    assert all(r["on"] and r["dim"] == 100 for r in readings.values())


def test_a_command_acts_at_the_next_step_not_the_next_second() -> None:
    control = Switch(4)
    control.on = True
    fleet = _fleet(control)
    fleet.due_reports(T0)
    fleet.command(0, {"op": "switch", "on": False, "until": T0 + 500}, T0 + 100, report=False)
    reports = fleet.due_reports(T0 + 150)
    assert not fleet.on[0] and fleet.on[1:].all()
    assert [r.topic.decode().split("/")[3] for r in reports] == ["XN-CD-000001"]
    # The override ends at its time, inside the same clock second, and the lamp is back on its schedule.
    fleet.due_reports(T0 + 450)
    assert not fleet.on[0]
    reports = fleet.due_reports(T0 + 500)
    assert fleet.on[0] and json.loads(reports[0].payload)["mode"] == "auto"


class Sunset(Switch):
    """On from `at` (epoch ms, not on a second), announcing that instant as a control does."""

    def __init__(self, n: int, at: int) -> None:
        super().__init__(n)
        self.at = at

    def __call__(self, now_ms: int) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int16]]:
        self.on = now_ms >= self.at
        return super().__call__(now_ms)

    def next_change(self, now_ms: int) -> int | None:
        return self.at if now_ms < self.at else None


def test_lamps_switch_on_the_instant_their_control_announces() -> None:
    control = Sunset(4, T0 + 1_530)
    fleet = _fleet(control)
    fleet.due_reports(T0)
    switched_at = None
    for ms in range(50, 2050, 50):
        if fleet.due_reports(T0 + ms) and switched_at is None:
            switched_at = ms
    assert switched_at == 1_550 and fleet.on.all()  # the first step after 1,530 ms, not the next clock second

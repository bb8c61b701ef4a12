"""Energy from meter readings, pure: totals whose true values are known, with resets, gaps and partial windows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energy.meters import GAP, NO_METER, PARTIAL, RESET, integrate

HOUR = 3_600_000
STEP = 300_000  # a report every 5 minutes
START, END = 0, 24 * HOUR


def _lamp(times: list[int], watts: list[float], *, reset_at: int | None = None, first: float = 1000.0) -> tuple:
    """Readings of one lamp drawing watts[i] from times[i] to times[i + 1]; its counter restarts from 0 right
    after the reading at index `reset_at`."""
    counter, c = [], first
    for i, t in enumerate(times):
        if i:
            c += watts[i - 1] * (t - times[i - 1]) / HOUR
        counter.append(c)
        if reset_at == i:
            c = 0.0
    n = len(times)
    return (
        np.zeros(n, dtype=np.int64),
        np.array(times, dtype=np.int64),
        np.array(counter),
        np.array([w > 0 for w in watts]),
        np.array([100.0 if w > 0 else 0.0 for w in watts]),
    )


def test_a_steady_lamp_over_a_whole_day() -> None:
    times = list(range(START - STEP, END + 2 * STEP, STEP))
    dev, ts, c, on, dim = _lamp(times, [100.0] * len(times))
    t = integrate(dev, ts, c, on, dim, 1, START, END, max_gap_ms=3 * STEP, bucket_ms=15 * 60_000)
    assert t.energy_wh[0] == pytest.approx(2400.0)
    assert t.on_s[0] == pytest.approx(86_400) and t.dim_s[0] == pytest.approx(86_400)
    assert t.flags[0] == 0
    assert t.profile_wh is not None and t.profile_wh.shape == (1, 96)
    assert t.profile_wh[0] == pytest.approx(np.full(96, 25.0))  # 100 W for a quarter-hour


def test_a_reset_counts_what_was_used_since_and_is_flagged() -> None:
    times = list(range(START - STEP, END + 2 * STEP, STEP))
    dev, ts, c, on, dim = _lamp(times, [60.0] * len(times), reset_at=100, first=5_000_000.0)
    t = integrate(dev, ts, c, on, dim, 1, START, END, max_gap_ms=3 * STEP)
    assert t.energy_wh[0] == pytest.approx(1440.0) and t.flags[0] == RESET


def test_a_silence_keeps_the_energy_but_not_the_burning_time() -> None:
    times = [t for t in range(START - STEP, END + 2 * STEP, STEP) if not 10 * HOUR < t < 12 * HOUR]
    dev, ts, c, on, dim = _lamp(times, [100.0] * len(times))
    t = integrate(dev, ts, c, on, dim, 1, START, END, max_gap_ms=3 * STEP)
    assert t.energy_wh[0] == pytest.approx(2400.0)  # the meter went on counting
    assert t.on_s[0] == pytest.approx(86_400 - 2 * 3600)  # the silent pair, 10:00 to 12:00, is not known
    assert t.flags[0] == GAP | PARTIAL


def test_a_lamp_that_starts_late_and_a_lamp_without_a_meter() -> None:
    times = list(range(6 * HOUR, END + 2 * STEP, STEP))
    dev, ts, c, on, dim = _lamp(times, [50.0] * len(times))
    dev = np.concatenate([dev, np.ones(3, dtype=np.int64)])
    ts = np.concatenate([ts, np.array([START - STEP, START, START + STEP])])
    c = np.concatenate([c, np.full(3, np.nan)])
    on = np.concatenate([on, np.ones(3, dtype=bool)])
    dim = np.concatenate([dim, np.full(3, 40.0)])
    order = np.lexsort((ts, dev))
    t = integrate(dev[order], ts[order], c[order], on[order], dim[order], 2, START, END, max_gap_ms=3 * STEP)
    assert t.energy_wh[0] == pytest.approx(50.0 * 18) and t.flags[0] == PARTIAL
    assert t.energy_wh[1] == 0 and t.flags[1] == NO_METER | PARTIAL
    assert t.dim_s[1] == pytest.approx(300 * 0.4)  # 00:00 to 00:05 at 40 %


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(1, 3 * STEP), min_size=1, max_size=60),  # steps between readings
            st.lists(st.floats(0, 400), min_size=60, max_size=60),  # power after each reading
            st.integers(-HOUR, HOUR),  # first reading's time
            st.one_of(st.none(), st.integers(0, 59)),  # a reset after this reading
        ),
        min_size=1,
        max_size=5,
    ),
    st.integers(0, 2 * HOUR),
    st.integers(1, 6 * HOUR),
    st.sampled_from([None, 15 * 60_000]),
)
def test_any_readings_give_the_true_energy_of_the_window(
    devices: list[tuple[list[int], list[float], int, int | None]], start: int, length: int, bucket: int | None
) -> None:
    """Power changes only at readings (a device reports when it switches), so the counter between two readings
    rises at one rate and the energy inside the window is known exactly; resets do not change it."""
    end = start + length
    cols: list[list[np.ndarray]] = [[], [], [], [], []]
    truth = []
    for i, (steps, watts, t0, reset_at) in enumerate(devices):
        times = list(np.cumsum([t0, *steps]))
        w = watts[: len(times)]
        parts = _lamp(times, w, reset_at=reset_at)
        for col, part in zip(cols, (np.full(len(times), i, dtype=np.int64), *parts[1:]), strict=True):
            col.append(part)
        true = sum(w[k] * max(0, min(times[k + 1], end) - max(times[k], start)) / HOUR for k in range(len(times) - 1))
        truth.append(true)
    dev, ts, c, on, dim = (np.concatenate(col) for col in cols)
    t = integrate(dev, ts, c, on, dim, len(devices), start, end, max_gap_ms=3 * STEP, bucket_ms=bucket)
    assert t.energy_wh == pytest.approx(np.array(truth), abs=1e-6)
    assert not (t.flags & GAP).any()
    if t.profile_wh is not None:
        assert t.profile_wh.sum(axis=1) == pytest.approx(t.energy_wh, abs=1e-6)

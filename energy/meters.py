"""Energy from the devices' meters: what each lamp and cabinet used in a window, how long each lamp burned, and
when in the window the energy went (quarter-hours, for time-of-use prices). Pure numpy: readings in, totals out.

A meter is a counter in Wh (`energy_wh` of a lamp or cabinet report). Between two consecutive readings of one
device the energy used is the counter's rise, spread evenly over the time between them; the part of that time
inside the window counts. What can go wrong with a counter, and what is done:

- **reset** (the counter goes down: a replaced controller, a meter cleared): the counter restarted from zero, so
  the later reading's value is what was used since; the device is flagged `RESET`;
- **gap** (two readings further apart than `max_gap_ms`: the device was silent): the rise is still what was used,
  spread over the silence, and the device is flagged `GAP` (when inside the gap it went is not known);
- **partial** (the readings do not cover the whole window: the device started reporting late, stopped early, or
  the window is still going on): what was covered is counted, and the device is flagged `PARTIAL`;
- **no meter** (a device that never reports a counter): nothing is metered; the caller allocates or estimates,
  and flags it `NO_METER`.

A lamp's state between two readings is the earlier one's (a device reports at once when it switches), so the
seconds it burned (`on_s`, on with a level above 0) and its level-weighted seconds (`dim_s`, seconds × level/100,
what a lamp without a meter is estimated from) come from the same pairs. Time inside a gap is neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "ESTIMATED",
    "FLAG_NAMES",
    "GAP",
    "NO_METER",
    "PARTIAL",
    "RESET",
    "MeterTotals",
    "flag_names",
    "integrate",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

RESET: Final = 1
GAP: Final = 2
PARTIAL: Final = 4
NO_METER: Final = 8
ESTIMATED: Final = 16  # no meter of its own, none at its cabinet either: from rated power × level × time
ALLOCATED: Final = 32  # no meter of its own: its share of its cabinet meter's remainder
FLAG_NAMES: Final = {
    RESET: "reset",
    GAP: "gap",
    PARTIAL: "partial",
    NO_METER: "no_meter",
    ESTIMATED: "estimated",
    ALLOCATED: "allocated",
}


def flag_names(flags: int) -> list[str]:
    return [name for bit, name in FLAG_NAMES.items() if flags & bit]


@dataclass(frozen=True)
class MeterTotals:
    """Per device (index 0..n-1) within [start_ms, end_ms)."""

    energy_wh: F64  # metered energy; 0 where the device has no counter (see flags)
    on_s: F64  # seconds burning
    dim_s: F64  # seconds × level / 100
    covered_s: F64  # seconds of the window between two readings no further apart than max_gap_ms
    flags: npt.NDArray[np.uint8]
    profile_wh: F64 | None  # (n, buckets): the metered energy by bucket of `bucket_ms` from start_ms


def _spread(out: F64, row: I64, t0: F64, t1: F64, amount: F64, start_ms: int, bucket_ms: int, buckets: int) -> None:
    """Add `amount`, spread evenly over (t0, t1] (already clipped to the window), into out[row, bucket]."""
    if not len(row):
        return
    b0 = np.clip(((t0 - start_ms) // bucket_ms).astype(np.int64), 0, buckets - 1)
    b1 = np.clip(((np.maximum(t1, t0) - start_ms - 1e-9) // bucket_ms).astype(np.int64), 0, buckets - 1)
    b1 = np.maximum(b1, b0)
    span = b1 - b0 + 1
    seg = np.repeat(np.arange(len(row)), span)
    k = np.arange(len(seg)) - np.repeat(np.cumsum(span) - span, span)
    bucket = b0[seg] + k
    lo = np.maximum(t0[seg], start_ms + bucket * bucket_ms)
    hi = np.minimum(t1[seg], start_ms + (bucket + 1) * bucket_ms)
    length = t1[seg] - t0[seg]
    share = np.where(length > 0, (hi - lo) / np.where(length > 0, length, 1), 1.0)
    np.add.at(out, (row[seg], bucket), amount[seg] * share)


def integrate(
    device: I64,
    ts_ms: I64,
    counter_wh: F64,
    on: npt.NDArray[np.bool_],
    dim: F64,
    n: int,
    start_ms: int,
    end_ms: int,
    *,
    max_gap_ms: int,
    bucket_ms: int | None = None,
) -> MeterTotals:
    """Readings sorted by (device, ts): each device's totals within [start_ms, end_ms). `counter_wh` is NaN where
    a reading has no counter. Include each device's last reading before the window and first after it, so the
    pairs that straddle its edges count their share."""
    m = len(device)
    window_s = (end_ms - start_ms) / 1000
    energy, on_s, dim_s, covered = (np.zeros(n) for _ in range(4))
    flags = np.zeros(n, dtype=np.uint8)
    buckets = 0 if bucket_ms is None else -(-(end_ms - start_ms) // bucket_ms)
    profile = None if bucket_ms is None else np.zeros((n, buckets))
    metered = np.zeros(n, dtype=np.bool_)
    if m:
        has = ~np.isnan(counter_wh)
        np.logical_or.at(metered, device[has], True)
    if m > 1:
        same = device[1:] == device[:-1]
        a = np.flatnonzero(same)  # pair (a, a + 1)
        dev = device[a]
        t0 = ts_ms[a].astype(np.float64)
        t1 = ts_ms[a + 1].astype(np.float64)
        lo, hi = np.maximum(t0, start_ms), np.minimum(t1, end_ms)
        dt = t1 - t0
        inside = np.where(
            dt > 0, np.clip(hi - lo, 0, None) / np.where(dt > 0, dt, 1), ((t1 >= start_ms) & (t1 < end_ms))
        )
        gap = dt > max_gap_ms
        seconds = np.clip(hi - lo, 0, None) / 1000
        ok = ~gap
        np.add.at(covered, dev[ok], seconds[ok])
        burning = on[a] & (dim[a] > 0) & ok
        np.add.at(on_s, dev[burning], seconds[burning])
        np.add.at(dim_s, dev[ok], seconds[ok] * np.where(on[a[ok]], dim[a[ok]], 0.0) / 100)
        # Metered pairs: the counter's rise, or after a reset the later value.
        c0, c1 = counter_wh[a], counter_wh[a + 1]
        both = ~np.isnan(c0) & ~np.isnan(c1)
        rise = c1 - c0
        reset = both & (rise < 0)
        used = np.where(reset, c1, rise)
        counted = both & (inside > 0)
        np.add.at(energy, dev[counted], used[counted] * inside[counted])
        np.bitwise_or.at(flags, dev[counted & reset], np.uint8(RESET))
        np.bitwise_or.at(flags, dev[gap & (inside > 0)], np.uint8(GAP))
        if profile is not None and bucket_ms is not None:
            sel = np.flatnonzero(counted)
            _spread(
                profile,
                dev[sel],
                lo[sel],
                np.maximum(hi[sel], lo[sel]),
                used[sel] * inside[sel],
                start_ms,
                bucket_ms,
                buckets,
            )
    flags[covered < window_s - 1e-6] |= np.uint8(PARTIAL)
    flags[~metered] |= np.uint8(NO_METER)
    return MeterTotals(energy, on_s, dim_s, covered, flags, profile)

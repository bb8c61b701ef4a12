"""The fleet in memory: each lamp's and cabinet's latest reported state, over the inventory's arrays
(`inventory.index.FleetIndex`, built once from the inventory or a generated city in benchmarks).

`FleetState` holds, per lamp, the newest report seen: time, on, dim, power, fault bits. It is fed from the
gateway's batches (or from `lamp_latest` in a process without a gateway) and rebuilt from `lamp_latest` at start,
so the figures survive a restart. Pure numpy; no I/O here beyond the loader that takes an open connection.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import psycopg

from inventory.index import FleetIndex
from inventory.queries import LAMPS_OF_DISTRICTS
from kernel.binary import array_column
from telemetry.models import CabinetRow, LampRows

__all__ = [
    "CABINET_FAULT_BITS",
    "FAULT_BITS",
    "MIN_POWER_SHARE",
    "OUTPUT_FAULT_MASK",
    "CabinetState",
    "FleetState",
    "LampColumns",
    "fault_mask",
    "fault_names",
    "fetch_latest",
    "newest_per_lamp",
]

MIN_POWER_SHARE = 0.2  # a lamp drawing under 20 % of rated × dim gives no useful light

# One bit per lamp fault code of docs/protocol.md; codes the protocol does not name share the last bit.
FAULT_BITS = {
    code: 1 << i
    for i, code in enumerate(
        (
            "lamp_failure",
            "driver_failure",
            "relay_failure",
            "supply_loss",
            "dimming_failure",
            "over_voltage",
            "under_voltage",
            "over_temperature",
            "leakage_current",
            "tilt",
            "meter_failure",
        )
    )
}
_OTHER_FAULT = 1 << 15
# Faults that mean the lamp gives no light, whatever it says about `on` (docs/domain.md, "lit").
OUTPUT_FAULT_MASK = (
    FAULT_BITS["lamp_failure"] | FAULT_BITS["driver_failure"] | FAULT_BITS["relay_failure"] | FAULT_BITS["supply_loss"]
)


def fault_mask(codes: Sequence[str]) -> int:
    bits = 0
    for c in codes:
        bits |= FAULT_BITS.get(c, _OTHER_FAULT)
    return bits


def fault_names(bits: int) -> list[str]:
    names = [code for code, bit in FAULT_BITS.items() if bits & bit]
    return names + (["other"] if bits & _OTHER_FAULT else [])


class FleetState:
    """Newest report per lamp. `ts_ms` 0 means never reported."""

    def __init__(self, index: FleetIndex) -> None:
        n = index.n
        self.index = index
        self.ts_ms = np.zeros(n, dtype=np.int64)
        self.on = np.zeros(n, dtype=np.bool_)
        self.dim = np.zeros(n, dtype=np.int16)
        self.power_w = np.full(n, np.nan, dtype=np.float32)
        self.faults = np.zeros(n, dtype=np.uint16)
        # Derived per report, so a recompute does not redo them: until when the report is fresh, and whether
        # it shows a lamp giving light (on, dim > 0, no output fault, drawing at least 20 % of rated × dim).
        self.fresh_until = np.zeros(n, dtype=np.int64)
        self.lit_report = np.zeros(n, dtype=np.bool_)
        self.faulted = np.zeros(n, dtype=np.bool_)  # the report carries any fault code
        self.updates = 0

    def apply(
        self,
        slots: npt.NDArray[np.int32],
        ts_ms: npt.NDArray[np.int64],
        on: npt.NDArray[np.bool_],
        dim: npt.NDArray[np.int16],
        power_w: npt.NDArray[np.float32],
        faults: npt.NDArray[np.uint16],
        *,
        now_ms: int | None = None,
        replace: bool = False,
    ) -> int:
        """Take the newest reading per lamp from these columns where it is newer than what is held, or where
        what is held lies after `now_ms` (a clock that ran ahead); with `replace`, whatever is held (the columns
        are the database's latest state, followed).

        Returns how many lamps changed. Slots of −1 (lamps not in the index) are skipped.
        """
        pick = newest_per_lamp(slots, ts_ms)
        if len(pick) == 0:
            return 0
        s = slots[pick]
        held = self.ts_ms[s]
        newer = (ts_ms[pick] > held) | replace
        if now_ms is not None:
            newer |= held > now_ms
        pick, s = pick[newer], s[newer]
        self.ts_ms[s] = ts_ms[pick]
        self.on[s] = on[pick]
        self.dim[s] = dim[pick]
        self.power_w[s] = power_w[pick]
        self.faults[s] = faults[pick]
        self.fresh_until[s] = ts_ms[pick] + self.index.stale_ms[s]
        self.faulted[s] = faults[pick] != 0
        with np.errstate(invalid="ignore"):
            underpowered = power_w[pick] < MIN_POWER_SHARE * self.index.rated_w[s] * dim[pick] / 100.0
        self.lit_report[s] = on[pick] & (dim[pick] > 0) & ((faults[pick] & OUTPUT_FAULT_MASK) == 0) & ~underpowered
        self.updates += len(s)
        return len(s)

    _COLUMNS = ("ts_ms", "on", "dim", "power_w", "faults", "fresh_until", "lit_report", "faulted")

    @contextlib.contextmanager
    def held(self, slots: npt.NDArray[np.intp]) -> Iterator[None]:
        """Inside the block, readings applied to these lamps are provisional: on leaving it each holds what it
        held before. The fault rules replay a backlog through it, one report at a time, without touching the
        latest state everyone else reads."""
        saved = [getattr(self, name)[slots].copy() for name in self._COLUMNS]
        try:
            yield
        finally:
            for name, column in zip(self._COLUMNS, saved, strict=True):
                getattr(self, name)[slots] = column
            self.updates += len(slots)

    def apply_rows(self, rows: LampRows, now_ms: int | None = None) -> int:
        """Feed one batch of the gateway's decoded lamp readings."""
        return self.apply_columns(LampColumns.of(rows, self.index), now_ms=now_ms)

    def apply_columns(self, c: LampColumns, *, now_ms: int | None = None, replace: bool = False) -> int:
        return self.apply(c.slots, c.ts_ms, c.on, c.dim, c.power_w, c.faults, now_ms=now_ms, replace=replace)


@dataclass(frozen=True)
class LampColumns:
    """A batch of lamp readings as arrays, lamps as slots of an index (−1: not in it)."""

    slots: npt.NDArray[np.int32]
    ts_ms: npt.NDArray[np.int64]
    on: npt.NDArray[np.bool_]
    dim: npt.NDArray[np.int16]
    power_w: npt.NDArray[np.float32]
    faults: npt.NDArray[np.uint16]

    @classmethod
    def build(
        cls,
        index: FleetIndex,
        lamp_no: Sequence[int],
        ts_ms: Sequence[int],
        on: Sequence[bool],
        dim: Sequence[int],
        power_w: Sequence[float | None],
        faults: Sequence[Sequence[str] | None],
    ) -> LampColumns:
        """Columns from per-reading values as the codec or `lamp_latest` give them (None: not reported)."""
        return cls(
            slots=index.slots(lamp_no),
            ts_ms=np.array(ts_ms, dtype=np.int64),
            on=np.array(on, dtype=np.bool_),
            dim=np.array(dim, dtype=np.int16),
            power_w=np.array([np.nan if p is None else p for p in power_w], dtype=np.float32),
            faults=np.fromiter((fault_mask(f) if f else 0 for f in faults), dtype=np.uint16, count=len(faults)),
        )

    @classmethod
    def of(cls, rows: LampRows, index: FleetIndex) -> LampColumns:
        return cls.build(index, rows.lamp_no, rows.ts, rows.on, rows.dim, rows.power_w, rows.faults)

    def take(self, keep: npt.NDArray[np.bool_]) -> LampColumns:
        """The rows where `keep` is true."""
        return LampColumns(
            self.slots[keep], self.ts_ms[keep], self.on[keep], self.dim[keep], self.power_w[keep], self.faults[keep]
        )

    def in_order(self) -> npt.NDArray[np.intp]:
        """Row positions of the readings of lamps in the index, by lamp, then in the order each device reported
        them: by time, ties in the order they arrived (the sort is stable)."""
        return by_lamp(self.slots, self.ts_ms)


def by_lamp(slots: npt.NDArray[np.int32], ts_ms: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
    """Row positions sorted by (slot, ts), stable; unknown lamps (slot −1) left out."""
    order = np.lexsort((ts_ms, slots))
    known: npt.NDArray[np.intp] = order[slots[order] >= 0]
    return known


def newest_per_lamp(slots: npt.NDArray[np.int32], ts_ms: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
    """Row positions of each lamp's newest reading: sort by (slot, ts), keep each slot's last row. Unknown
    lamps (slot −1) are dropped."""
    order = by_lamp(slots, ts_ms)
    s = slots[order]
    last = np.ones(len(s), dtype=np.bool_)
    last[:-1] = s[1:] != s[:-1]
    pick: npt.NDArray[np.intp] = order[last]
    return pick


_NO_CURRENT_A = 0.05  # below this a closed circuit carries nothing: its cable or fuse is gone

CABINET_FAULT_BITS = {
    code: 1 << i
    for i, code in enumerate(
        ("mains_loss", "phase_loss", "circuit_open", "contactor_failure", "leakage_current", "door_open")
    )
}


class CabinetState:
    """Newest report per cabinet (concentrators only report): time, fault bits, door."""

    def __init__(self, index: FleetIndex) -> None:
        n = len(index.cabinet_ids)
        self.index = index
        self.ts_ms = np.zeros(n, dtype=np.int64)
        self.fresh_until = np.zeros(n, dtype=np.int64)
        self.faults = np.zeros(n, dtype=np.uint16)
        self.door_open = np.zeros(n, dtype=np.bool_)
        # Circuits (bit c-1 for circuit c) whose contactor is closed but which carry no current: cut or blown.
        self.dead_circuits = np.zeros(n, dtype=np.uint8)

    def apply_rows(self, rows: Sequence[CabinetRow], now_ms: int | None = None) -> list[int]:
        """Take the cabinets' reports (newer than held, or held from after `now_ms`); returns the slots that
        changed."""
        changed = []
        for r in rows:
            slot = self.index.cabinet_slot_of_no.get(r.cabinet_no)
            if slot is None:
                continue
            held = int(self.ts_ms[slot])
            if r.ts <= held and not (now_ms is not None and held > now_ms):
                continue
            bits = 0
            for code in r.faults:
                bits |= CABINET_FAULT_BITS.get(code, 0)
            if r.door_open:
                bits |= CABINET_FAULT_BITS["door_open"]
            self.ts_ms[slot] = r.ts
            self.fresh_until[slot] = r.ts + self.index.cabinet_stale_ms[slot]
            self.faults[slot] = bits
            self.door_open[slot] = r.door_open
            dead = 0
            if r.circuit_current_a is not None:
                for c, (closed, amps) in enumerate(zip(r.contactors, r.circuit_current_a, strict=False)):
                    if closed and amps < _NO_CURRENT_A:
                        dead |= 1 << c
            self.dead_circuits[slot] = dead
            changed.append(slot)
        return changed


def fetch_latest(
    conn: psycopg.Connection, index: FleetIndex, *, since: object = None, districts: Sequence[str] | None = None
) -> tuple[LampColumns, object]:
    """`lamp_latest` rows (all, or those stored after `since`; of `districts` only, when given) as columns, and
    the newest `stored_at` among them (None when there are none). I/O only: safe to run in a worker thread.

    The rows come as one row of arrays, in binary: a follower reads the whole city's changes every few seconds,
    and per-row tuples cost three times as much (measured: 110,000 rows in 350-400 ms as tuples)."""
    where: list[str] = []
    args: list[object] = []
    if since is not None:
        where.append("stored_at > %s")
        args.append(since)
    if districts is not None:
        where.append(f"lamp_no IN ({LAMPS_OF_DISTRICTS})")
        args.append(list(districts))
    faulty = "cardinality(faults) > 0"
    query = (
        "SELECT array_send(array_agg(lamp_no)), array_send(array_agg((extract(epoch FROM ts) * 1000)::bigint)), "
        "array_send(array_agg(is_on)), array_send(array_agg(dim)), "
        "array_send(array_agg(coalesce(power_w, 'NaN'::real))), "
        f"array_send(array_agg({faulty})), array_agg(faults::text) FILTER (WHERE {faulty}), max(stored_at) "
        "FROM lamp_latest" + (" WHERE " + " AND ".join(where) if where else "")
    )
    row = conn.cursor(binary=True).execute(query, args).fetchone()
    if row is None or row[0] is None:
        empty = LampColumns.build(index, [], [], [], [], [], [])
        return empty, None
    lamp_no, ts_ms, on, dim, power_w, has_faults, faults, newest = row
    has = array_column(has_faults, "?")
    # '{code,code}' (fault codes are plain words), for the few lamps with any
    mask = np.zeros(len(has), dtype=np.uint16)
    mask[np.flatnonzero(has)] = [fault_mask(f[1:-1].split(",")) for f in faults or []]
    columns = LampColumns(
        slots=index.slots(array_column(lamp_no, ">i4").astype(np.int64)),
        ts_ms=array_column(ts_ms, ">i8").astype(np.int64),
        on=array_column(on, "?").astype(np.bool_),
        dim=array_column(dim, ">i2").astype(np.int16),
        power_w=array_column(power_w, ">f4").astype(np.float32),
        faults=mask,
    )
    return columns, newest

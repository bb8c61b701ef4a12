"""Fault rules, vectorised: which faults each lamp and each cabinet shows at an instant.

Pure numpy over the fleet arrays of `telemetry` plus a little history the rules need (`LampHistory`: since when a
lamp burns by day, how many reports in a row were off-power, its last switching times; `CabinetHistory`). The
results are bit masks (see `alerts.faults`); debounce, correlation and clearing are `alerts.tracker`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from alerts.faults import OUTAGE_FAMILY, cabinet_bit, lamp_bit, lamp_device_mask
from inventory.index import FleetIndex
from lighting.expected import ExpectedState
from lighting.rate import DARK, UNKNOWN
from telemetry.fleet import CABINET_FAULT_BITS, CabinetState, FleetState

__all__ = [
    "DERIVED_CABINET_BITS",
    "CabinetHistory",
    "LampHistory",
    "RuleParams",
    "cabinet_device_masks",
    "cabinet_masks",
    "lamp_masks",
    "outage_lamps",
]

U32 = npt.NDArray[np.uint32]
_RING = 7  # switching times kept per lamp: seven within an hour is "more than 6 times an hour"


@dataclass(frozen=True)
class RuleParams:
    day_burning_after_ms: int = 15 * 60_000
    comm_loss_intervals: int = 3
    anomaly_share: float = 0.30  # power off by more than 30 % of rated × dim …
    anomaly_reports: int = 3  # … for this many reports in a row
    cycling_window_s: int = 3600
    outage_share: float = 0.6  # this share of a cabinet's or circuit's due lamps dark or silent …
    outage_min_due: int = 3  # … among at least this many due lamps


class LampHistory:
    """What the lamp rules remember between reports."""

    def __init__(self, n: int, start_ms: int) -> None:
        self.burning_since = np.zeros(n, dtype=np.int64)  # 0: not burning by day
        self.anomaly_streak = np.zeros(n, dtype=np.uint8)
        self.last_on = np.zeros(n, dtype=np.bool_)
        self.seen = np.zeros(n, dtype=np.bool_)
        self.switches = np.zeros((n, _RING), dtype=np.int64)  # epoch seconds of the last switchings, oldest first
        self.offline = np.zeros(n, dtype=np.bool_)  # its last will (or a clean disconnect) said offline
        self.watch_since = np.full(n, start_ms, dtype=np.int64)  # silence counts from here for never-seen lamps
        self.paused_at: int | None = None  # ingest stopped here: silence does not grow until it resumes
        # The newest report the rules judged: a reading no newer than it arrived late (a backlog behind newer
        # reports) and is judged on its own, as the past.
        self.judged_ms = np.zeros(n, dtype=np.int64)

    def observe(
        self,
        slots: npt.NDArray[np.int32],
        ts_ms: npt.NDArray[np.int64],
        on: npt.NDArray[np.bool_],
        dim: npt.NDArray[np.int16],
        power_w: npt.NDArray[np.float32],
        rated_w: npt.NDArray[np.float32],
        params: RuleParams,
    ) -> None:
        """One new report per lamp in `slots` (the newest of a batch), in the order the lamps reported."""
        switched = self.seen[slots] & (on != self.last_on[slots])
        if switched.any():
            s = slots[switched]
            ring = self.switches[s]
            ring[:, :-1] = ring[:, 1:]
            ring[:, -1] = ts_ms[switched] // 1000
            self.switches[s] = ring
        expected = rated_w * dim / 100.0
        with np.errstate(invalid="ignore", divide="ignore"):
            off_by = np.abs(power_w - expected) / expected
            # Only lamps giving light: a dark lamp is night_out's business, not an anomaly.
            anomalous = on & (dim > 0) & (power_w >= 0.2 * expected) & (off_by > params.anomaly_share)
        streak = self.anomaly_streak[slots].astype(np.int16) + 1
        self.anomaly_streak[slots] = np.where(anomalous, np.minimum(streak, 255), 0).astype(np.uint8)
        self.last_on[slots] = on
        self.seen[slots] = True
        self.offline[slots] = False


class CabinetHistory:
    def __init__(self, n: int, start_ms: int) -> None:
        self.offline = np.zeros(n, dtype=np.bool_)
        self.watch_since = np.full(n, start_ms, dtype=np.int64)
        self.paused_at: int | None = None


Instant = int | npt.NDArray[np.int64]  # one instant, or one per asset evaluated


def heard_until(now_ms: Instant, paused_at: int | None) -> Instant:
    """The instant up to which silence is judged: now, or when ingest stopped if it has not resumed since. A
    device is silent only for what the gateway would have heard."""
    return now_ms if paused_at is None else np.minimum(now_ms, paused_at)


def discount_outage(
    ts_ms: npt.NDArray[np.int64], watch_since: npt.NDArray[np.int64], start_ms: int, end_ms: int
) -> None:
    """Ingest was down from `start_ms` to `end_ms`: that time does not count as anybody's silence. Moves
    `watch_since` so that `max(ts, watch_since)`, where silence is counted from, skips the outage."""
    silent_since = np.maximum(ts_ms, watch_since)
    gap = end_ms - start_ms
    moved = np.where(silent_since < start_ms, silent_since + gap, np.where(silent_since < end_ms, end_ms, 0))
    np.maximum(watch_since, moved, out=watch_since)


def lamp_masks(
    index: FleetIndex,
    state: FleetState,
    expected: ExpectedState,
    history: LampHistory,
    now_ms: Instant,
    params: RuleParams,
    slots: npt.NDArray[np.intp] | None = None,
) -> U32:
    """Each lamp's fault mask at `now_ms` (for `slots`, or the whole fleet; one instant per slot when judging
    reports of a backlog at their own times). Updates `history.burning_since`."""
    sl: npt.NDArray[np.intp] | slice = slice(None) if slots is None else slots
    device = state.faults[sl]
    mask = lamp_device_mask(device)
    fresh = state.fresh_until[sl] >= now_ms
    due = expected.due[sl]
    excluded = expected.excluded[sl]
    on = state.on[sl]

    night_out = due & fresh & ~state.lit_report[sl] & (device == 0)
    burning_now = ~due & ~excluded & fresh & on
    since = history.burning_since[sl]
    since = np.where(burning_now, np.where(since == 0, now_ms, since), 0)
    history.burning_since[sl] = since
    day_burning = burning_now & (now_ms - since >= params.day_burning_after_ms)
    silent_since = np.maximum(state.ts_ms[sl], history.watch_since[sl])
    interval_ms = index.interval_s[sl].astype(np.int64) * 1000
    heard = heard_until(now_ms, history.paused_at)
    comm_loss = (heard - silent_since > params.comm_loss_intervals * interval_ms) | history.offline[sl]
    power_anomaly = (history.anomaly_streak[sl] >= params.anomaly_reports) & fresh
    cycling = history.switches[sl, 0] >= now_ms // 1000 - params.cycling_window_s

    derived = (
        np.where(night_out, lamp_bit("night_out"), 0)
        | np.where(day_burning, lamp_bit("day_burning"), 0)
        | np.where(comm_loss, lamp_bit("comm_loss"), 0)
        | np.where(power_anomaly, lamp_bit("power_anomaly"), 0)
        | np.where(cycling, lamp_bit("cycling"), 0)
    ).astype(np.uint32)
    # Lamps out of service or inside a planned window: what the backend derives is expected there; what the
    # device itself reports (a leaking lamp under maintenance is still dangerous) is kept.
    derived[excluded] = 0
    mask |= derived
    return mask


DERIVED_CABINET_BITS = cabinet_bit("comm_loss") | cabinet_bit("lamps_out")
_OUTAGE_CODES = sum(CABINET_FAULT_BITS[c] for c in ("mains_loss", "phase_loss", "circuit_open", "contactor_failure"))


def cabinet_device_masks(
    cabinets: CabinetState, open_work: npt.NDArray[np.bool_], slots: npt.NDArray[np.intp] | None = None
) -> tuple[U32, npt.NDArray[np.bool_]]:
    """What cabinets report themselves (leakage, an unexplained open door, loss of supply), for `slots` or all;
    and which of them report an outage."""
    sl: npt.NDArray[np.intp] | slice = slice(None) if slots is None else slots
    f = cabinets.faults[sl]
    leakage = (f & CABINET_FAULT_BITS["leakage_current"]) != 0
    door = cabinets.door_open[sl] & ~open_work[sl]
    outage = (f & _OUTAGE_CODES) != 0
    mask = (
        np.where(leakage, cabinet_bit("leakage_current"), 0)
        | np.where(door, cabinet_bit("door_open"), 0)
        | np.where(outage, cabinet_bit("cabinet_outage"), 0)
    ).astype(np.uint32)
    return mask, outage


def cabinet_masks(
    index: FleetIndex,
    cabinets: CabinetState,
    history: CabinetHistory,
    conditions: npt.NDArray[np.int8],
    due: npt.NDArray[np.bool_],
    now_ms: int,
    params: RuleParams,
    open_work: npt.NDArray[np.bool_],
    lamp_ts_ms: npt.NDArray[np.int64] | None = None,
    lamp_watch_since: npt.NDArray[np.int64] | None = None,
) -> tuple[U32, npt.NDArray[np.bool_]]:
    """Each cabinet's fault mask, and which lamps an outage of their cabinet or circuit explains.

    `conditions`/`due` are the lighting rate's per-lamp conditions and due flags at `now_ms`; `open_work` marks
    cabinets with an open ticket (a door opened by the crew working there is no alarm). With `lamp_ts_ms` and
    `lamp_watch_since`, a lamp without a fresh report counts as silent only once it has been watched for a
    freshness window (at start-up the fleet has not reported yet: that is no outage).
    """
    n = len(index.cabinet_ids)
    device_mask, device_outage = cabinet_device_masks(cabinets, open_work)
    assert index.cabinet_concentrator is not None and index.lamp_circuit is not None
    silent_since = np.maximum(cabinets.ts_ms, history.watch_since)
    heard = heard_until(now_ms, history.paused_at)
    silent_for = heard - silent_since
    comm_loss = index.cabinet_concentrator & (
        (silent_for > params.comm_loss_intervals * index.cabinet_interval_ms) | history.offline
    )

    # Most of a cabinet's (or one circuit's) due lamps dark or silent at once.
    silent = conditions == UNKNOWN
    if lamp_ts_ms is not None and lamp_watch_since is not None:
        stale_ms = index.stale_ms
        silent &= heard - np.maximum(lamp_ts_ms, lamp_watch_since) > stale_ms
    out = due & ((conditions == DARK) | silent)
    due_cab = np.bincount(index.lamp_cabinet, weights=due, minlength=n)
    out_cab = np.bincount(index.lamp_cabinet, weights=out, minlength=n)
    circuit_key = index.lamp_cabinet.astype(np.intp) * 7 + index.lamp_circuit
    due_circ = np.bincount(circuit_key, weights=due, minlength=n * 7)
    out_circ = np.bincount(circuit_key, weights=out, minlength=n * 7)
    with np.errstate(invalid="ignore", divide="ignore"):
        cab_out = (due_cab >= params.outage_min_due) & (out_cab >= params.outage_share * due_cab)
        circ_out = (due_circ >= params.outage_min_due) & (out_circ >= params.outage_share * due_circ)
    lamps_out = cab_out | np.bincount(np.flatnonzero(circ_out) // 7, minlength=n).astype(np.bool_)

    mask = device_mask | (
        np.where(comm_loss, cabinet_bit("comm_loss"), 0)
        | np.where(lamps_out & ~device_outage & ~comm_loss, cabinet_bit("lamps_out"), 0)
    ).astype(np.uint32)
    whole = device_outage | comm_loss | cab_out
    explained = whole[index.lamp_cabinet] | circ_out[circuit_key]
    return mask, explained


def outage_lamps(
    index: FleetIndex,
    cabinet: int,
    conditions: npt.NDArray[np.int8],
    due: npt.NDArray[np.bool_],
    device: U32,
    dead_circuits: int = 0,
    *,
    mains_lost: bool = False,
) -> npt.NDArray[np.intp]:
    """The lamps a cabinet ticket lists: its due lamps that are dark or silent, report losing supply, or hang on
    a circuit the cabinet reports without current (every due lamp of it when the cabinet lost its mains)."""
    assert index.lamp_circuit is not None
    lamps = index.lamps_of_cabinet(cabinet)
    dark = due[lamps] & ((conditions[lamps] == DARK) | (conditions[lamps] == UNKNOWN))
    lost = (device[lamps] & OUTAGE_FAMILY) != 0
    on_dead = ((dead_circuits >> (index.lamp_circuit[lamps].astype(np.int64) - 1)) & 1).astype(np.bool_)
    listed: npt.NDArray[np.intp] = lamps[dark | lost | ((on_dead | mains_lost) & due[lamps])]
    return listed

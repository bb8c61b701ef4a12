"""The fault engine of one process: rules over the fleet, correlation, and the trackers, turned into decisions.

Fed like the lighting engine — each committed batch of the gateway, plus a sweep over the whole fleet for what
time alone changes (silence, day-burning, the 5-minute debounce). No I/O: `alerts.service` writes the decisions
as tickets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from alerts.faults import CABINET_FAULTS, LAMP_FAULTS, OUTAGE_FAMILY, lamp_device_mask
from alerts.rules import (
    DERIVED_CABINET_BITS,
    CabinetHistory,
    LampHistory,
    RuleParams,
    cabinet_device_masks,
    cabinet_masks,
    discount_outage,
    lamp_masks,
    outage_lamps,
)
from alerts.tracker import DEBOUNCE_MS, Decision, Tracker
from inventory.index import FleetIndex
from lighting.engine import LightingEngine
from lighting.rate import conditions
from telemetry.fleet import CABINET_FAULT_BITS, CabinetState, LampColumns
from telemetry.models import CabinetRow, StatusRow

__all__ = ["AlertEngine", "Opening"]

# Cabinet faults whose ticket lists the lamps left dark or silent.
_LISTS_LAMPS = ("cabinet_outage", "comm_loss", "lamps_out")


@dataclass(frozen=True)
class Opening:
    """A decision with what the ticket needs besides it: asset id, district, listed lamps."""

    decision: Decision
    asset_id: str
    district: str
    lamps: list[str] = field(default_factory=list)


class AlertEngine:
    def __init__(
        self,
        lighting: LightingEngine,
        start_ms: int,
        *,
        params: RuleParams | None = None,
        debounce_ms: int = DEBOUNCE_MS,
    ) -> None:
        self.lighting = lighting
        self.params = params or RuleParams()
        self.debounce_ms = debounce_ms
        self.reset(start_ms)

    def reset(self, start_ms: int) -> None:
        """Size everything to the lighting engine's (possibly new) index, forgetting what was tracked."""
        debounce_ms = self.debounce_ms
        ix = self.lighting.index
        cabinets = len(ix.cabinet_ids)
        history: LampHistory | None = getattr(self, "lamp_history", None)
        paused = history.paused_at if history is not None else None
        self.lamp_history = LampHistory(ix.n, start_ms)
        self.lamp_history.judged_ms[:] = self.lighting.state.ts_ms  # the stored latest state was judged before
        self.cabinet_history = CabinetHistory(cabinets, start_ms)
        self.lamp_history.paused_at = self.cabinet_history.paused_at = paused
        self.cabinets = CabinetState(ix)
        self.lamp_tracker = Tracker("lamp", LAMP_FAULTS, ix.n, debounce_ms=debounce_ms)
        self.cabinet_tracker = Tracker("cabinet", CABINET_FAULTS, cabinets, debounce_ms=debounce_ms)
        self.open_work = np.zeros(cabinets, dtype=np.bool_)  # cabinets with live work: a door opened is no alarm
        self.listed: dict[int, int] = {}  # cabinet → lamps its outage ticket lists
        # Between sweeps: which lamps an outage explains (from the last sweep), which cabinets' lamps reported.
        self.explained = np.zeros(ix.n, dtype=np.bool_)
        self.lamps_reported = np.zeros(cabinets, dtype=np.bool_)
        self.evaluations = 0

    @property
    def index(self) -> FleetIndex:
        return self.lighting.index

    # -- ingest outages ---------------------------------------------------------------------------------------

    def pause(self, at_ms: int) -> None:
        """Ingest stopped hearing devices at `at_ms` (broker away, batches not committing, gateway down): from
        here on nobody's silence grows, so no device is blamed for an outage of ours."""
        if self.lamp_history.paused_at is None:
            self.lamp_history.paused_at = self.cabinet_history.paused_at = at_ms

    def resume(self, at_ms: int) -> int | None:
        """Ingest hears devices again: the outage is taken out of every device's silence. Returns its length."""
        start = self.lamp_history.paused_at
        if start is None:
            return None
        end = max(at_ms, start)
        discount_outage(self.lighting.state.ts_ms, self.lamp_history.watch_since, start, end)
        discount_outage(self.cabinets.ts_ms, self.cabinet_history.watch_since, start, end)
        self.lamp_history.paused_at = self.cabinet_history.paused_at = None
        return end - start

    # -- inputs -----------------------------------------------------------------------------------------------

    def on_batch(
        self,
        columns: LampColumns,
        cabinet_rows: Sequence[CabinetRow],
        statuses: Sequence[StatusRow],
        now_ms: int,
    ) -> list[Opening]:
        """A committed batch (the lighting engine has applied it): every report in it is judged, each device's in
        the order it reported them, whatever else the batch carries. A lamp's earlier reports in the batch (a
        backlog uploaded at once, a fault cleared a moment later) are replayed one at a time at their own times;
        its newest is judged as the state now holds it; reports older than what was judged before are the past
        (`_late`)."""
        ix, history = self.index, self.lamp_history
        out: list[Opening] = []
        order = columns.in_order()
        s, t = columns.slots[order], columns.ts_ms[order]
        judged = history.judged_ms[s]
        new = (t > judged) | (judged > now_ms)  # a clock that ran ahead and was set right is followed again
        last = np.ones(len(s), dtype=np.bool_)
        last[:-1] = s[1:] != s[:-1]
        if not new.all():
            out += self._late(columns, order[~new], now_ms)
        earlier = new & ~last
        if earlier.any():
            out += self._replay(columns, order[earlier], now_ms)
        pick = order[last & new]
        slots = columns.slots[pick]
        fresh = columns.ts_ms[pick] >= self.lighting.state.ts_ms[slots]  # the reading the state now holds
        slots, pick = slots[fresh], pick[fresh]
        ts = columns.ts_ms[pick]
        history.observe(
            slots, ts, columns.on[pick], columns.dim[pick], columns.power_w[pick], ix.rated_w[slots], self.params
        )
        history.judged_ms[slots] = ts
        changed_cabinets, cabinet_out = self._cabinet_rounds(cabinet_rows, now_ms)
        out += cabinet_out
        self.cabinet_history.offline[changed_cabinets] = False
        touched = list(slots.tolist())
        for st in statuses:
            if st.kind == "lamp" and (slot := ix.slot_of_id.get(st.device)) is not None:
                self.lamp_history.offline[slot] = not st.online
                touched.append(slot)
            elif st.kind == "cabinet" and (cab := ix.cabinet_of.get(st.device)) is not None:
                self.cabinet_history.offline[cab] = not st.online
                changed_cabinets.append(cab)
        lamp_slots = np.unique(np.array(touched, dtype=np.intp))
        reported = np.isin(lamp_slots, slots)
        at = np.full(len(lamp_slots), now_ms, dtype=np.int64)
        at[reported] = np.minimum(ts, now_ms)  # both in slot order: `slots` came sorted by lamp
        self.lamps_reported[ix.lamp_cabinet[slots]] = True
        out += self._evaluate_batch(
            now_ms, lamp_slots, reported, at, np.unique(np.array(changed_cabinets, dtype=np.intp))
        )
        return out

    def _replay(self, columns: LampColumns, earlier: npt.NDArray[np.intp], now_ms: int) -> list[Opening]:
        """The reports of a batch that came before each lamp's newest (row positions, by lamp then time), judged
        in rounds: the first such report of every lamp, then the second… Each round puts its reports in the
        fleet state for the moment (`FleetState.held`), feeds the rule history and evaluates those lamps at their
        reports' times."""
        ix, state, history = self.index, self.lighting.state, self.lamp_history
        s = columns.slots[earlier].astype(np.intp)
        first = np.ones(len(s), dtype=np.bool_)
        first[1:] = s[1:] != s[:-1]
        positions = np.arange(len(s))
        rank = positions - np.maximum.accumulate(np.where(first, positions, 0))
        out: list[Opening] = []
        with state.held(np.unique(s)):
            for r in range(int(rank.max()) + 1):
                rows = earlier[rank == r]
                slots, ts = s[rank == r], columns.ts_ms[rows]
                on, dim, power_w = columns.on[rows], columns.dim[rows], columns.power_w[rows]
                state.apply(slots.astype(np.int32), ts, on, dim, power_w, columns.faults[rows], replace=True)
                history.observe(slots, ts, on, dim, power_w, ix.rated_w[slots], self.params)
                history.judged_ms[slots] = ts
                at = np.minimum(ts, now_ms)
                out += self._evaluate_lamps(
                    at, now_ms, slots, np.ones(len(slots), dtype=np.bool_), at, self.explained[slots]
                )
        return out

    def _late(self, columns: LampColumns, rows: npt.NDArray[np.intp], now_ms: int) -> list[Opening]:
        """Reports no newer than what the rules judged of their lamp (row positions, by lamp then time): a
        backlog that arrived after newer reports. They cannot change the present, but what the device itself
        reported in them still counts: a P1 opens its ticket, another fault in 2 consecutive of them opens it,
        first seen at that report's time (`Tracker.past`)."""
        s, ts = columns.slots[rows], columns.ts_ms[rows]
        masks = lamp_device_mask(columns.faults[rows])
        decisions: list[Decision] = []
        for i in np.flatnonzero(masks).tolist():
            slot, mask = int(s[i]), int(masks[i])
            prev = int(masks[i - 1]) if i and s[i - 1] == slot else 0
            for bit in range(mask.bit_length()):
                if not mask >> bit & 1:
                    continue
                if LAMP_FAULTS[bit].priority == "P1":
                    first = int(ts[i])
                elif prev >> bit & 1:
                    first = int(ts[i - 1])
                else:
                    continue
                d = self.lamp_tracker.past(slot, bit, first, now_ms)
                if d is not None:
                    decisions.append(d)
        return self._openings(decisions, now_ms)

    def _cabinet_rounds(self, rows: Sequence[CabinetRow], now_ms: int) -> tuple[list[int], list[Opening]]:
        """Cabinets' reports, each judged in the order its cabinet sent them: what a cabinet reports itself
        (a leak, an open door, loss of supply) is judged at once, report by report. Returns the cabinets whose
        state changed and what the reports before each cabinet's newest opened (the newest is judged with the
        batch's lamps)."""
        if not rows:
            return [], []
        by_cabinet: dict[int, list[CabinetRow]] = {}
        for r in sorted(rows, key=lambda r: r.ts):
            by_cabinet.setdefault(r.cabinet_no, []).append(r)
        changed: list[int] = []
        out: list[Opening] = []
        depth = max(len(v) for v in by_cabinet.values())
        for k in range(depth):
            round_rows = [v[k] for v in by_cabinet.values() if len(v) > k]
            held = {r.cabinet_no: self._held_cabinet(r.cabinet_no) for r in round_rows}
            late = [r for r in round_rows if held[r.cabinet_no] is not None and r.ts <= held[r.cabinet_no]]  # type: ignore[operator]
            if late:
                out += self._late_cabinets(late, now_ms)
            slots = self.cabinets.apply_rows(round_rows, now_ms)
            changed += slots
            if k < depth - 1 and slots:
                # Reports a newer one of the same cabinet follows in this batch: judged now, at their own time.
                slot_of = self.index.cabinet_slot_of_no
                following = {slot_of.get(no) for no, v in by_cabinet.items() if len(v) > k + 1}
                cabs = np.array([c for c in slots if c in following], dtype=np.intp)
                if len(cabs):
                    out += self._evaluate_cabinets(now_ms, cabs, np.minimum(self.cabinets.ts_ms[cabs], now_ms))
        return changed, out

    def _held_cabinet(self, cabinet_no: int) -> int | None:
        slot = self.index.cabinet_slot_of_no.get(cabinet_no)
        return None if slot is None else int(self.cabinets.ts_ms[slot])

    def _late_cabinets(self, rows: list[CabinetRow], now_ms: int) -> list[Opening]:
        """A cabinet's report older than the one it holds: a leak it reported opens its P1 all the same."""
        decisions: list[Decision] = []
        bit = next(i for i, k in enumerate(CABINET_FAULTS) if k.code == "leakage_current")
        for r in rows:
            slot = self.index.cabinet_slot_of_no.get(r.cabinet_no)
            if slot is not None and "leakage_current" in r.faults:
                d = self.cabinet_tracker.past(slot, bit, r.ts, now_ms)
                if d is not None:
                    decisions.append(d)
        return self._openings(decisions, now_ms)

    def sweep(self, now_ms: int) -> list[Opening]:
        """The whole fleet at `now_ms`, no new reports: what time alone changes. An open cabinet outage whose
        dark lamps grew (lamps behind it going silent one by one) gets its list brought up to date."""
        ix = self.index
        out = self._evaluate_all(now_ms)
        tracks = self.cabinet_tracker.tracks
        growing = [
            (slot, bit)
            for (slot, bit), t in tracks.items()
            if t.confirmed and t.active and CABINET_FAULTS[bit].code in _LISTS_LAMPS
        ]
        if growing:
            expected = self.lighting.expected_at(now_ms // 1000 * 1000)
            cond = conditions(ix, self.lighting.state, expected)
            device = lamp_device_mask(self.lighting.state.faults)
            for slot, bit in growing:
                dead = int(self.cabinets.dead_circuits[slot])
                listed = outage_lamps(ix, slot, cond, expected.due, device, dead, mains_lost=self._mains_lost(slot))
                if len(listed) > self.listed.get(slot, 0):
                    self.listed[slot] = len(listed)
                    kind = CABINET_FAULTS[bit]
                    d = Decision(
                        "lamps", "cabinet", slot, kind.code, kind.priority, now_ms, tracks[(slot, bit)].first_ms
                    )
                    district = ix.districts[int(ix.road_district[ix.cabinet_road[slot]])]
                    out.append(Opening(d, ix.cabinet_ids[slot], district, [ix.lamp_id[i] for i in listed.tolist()]))
        return out

    # -- evaluation -------------------------------------------------------------------------------------------

    def _evaluate_batch(
        self,
        now_ms: int,
        lamp_slots: npt.NDArray[np.intp],
        reported: npt.NDArray[np.bool_],
        at_ms: npt.NDArray[np.int64],
        cabinets: npt.NDArray[np.intp],
    ) -> list[Opening]:
        """Lamps and cabinets a batch touched. What cabinets report themselves is judged at once (a leak is a
        P1); what is derived from their lamps (most dark, silence) waits for the sweep."""
        self.evaluations += 1
        ix = self.index
        out: list[Opening] = []
        explained = self.explained[lamp_slots]
        if len(cabinets):
            out += self._evaluate_cabinets(now_ms, cabinets, np.minimum(self.cabinets.ts_ms[cabinets], now_ms))
            _, outage = cabinet_device_masks(self.cabinets, self.open_work, cabinets)
            out_now = np.zeros(len(ix.cabinet_ids), dtype=np.bool_)
            out_now[cabinets[outage]] = True
            explained = explained | out_now[ix.lamp_cabinet[lamp_slots]]
        return out + self._evaluate_lamps(now_ms, now_ms, lamp_slots, reported, at_ms, explained)

    def _evaluate_cabinets(
        self, now_ms: int, cabinets: npt.NDArray[np.intp], at_ms: npt.NDArray[np.int64]
    ) -> list[Opening]:
        """What these cabinets report themselves, as they now hold it (reported at `at_ms`)."""
        device, _ = cabinet_device_masks(self.cabinets, self.open_work, cabinets)
        derived = self.cabinet_tracker.mask[cabinets] & np.uint32(DERIVED_CABINET_BITS)
        ones = np.ones(len(cabinets), dtype=np.bool_)
        return self._openings(self.cabinet_tracker.update(cabinets, device | derived, ones, now_ms, at_ms), now_ms)

    def _evaluate_lamps(
        self,
        rules_at: int | npt.NDArray[np.int64],
        now_ms: int,
        lamp_slots: npt.NDArray[np.intp],
        reported: npt.NDArray[np.bool_],
        at_ms: npt.NDArray[np.int64],
        explained: npt.NDArray[np.bool_],
    ) -> list[Opening]:
        """These lamps' rules at `rules_at` (now, or each replayed report's own time: the state holds the reports
        being judged); a fault they show is first seen at `at_ms`, their reports' times."""
        if not len(lamp_slots):
            return []
        # One schedule instant for a replay round (its newest report: schedules switch twice a night).
        instant = rules_at if isinstance(rules_at, int) else int(rules_at.max())
        expected = self.lighting.expected_at(instant // 1000 * 1000)
        masks = lamp_masks(
            self.index, self.lighting.state, expected, self.lamp_history, rules_at, self.params, lamp_slots
        )
        keep = ~np.uint32(OUTAGE_FAMILY) | self.lamp_tracker.confirmed[lamp_slots]
        masks = np.where(explained, masks & keep, masks).astype(np.uint32)
        return self._openings(self.lamp_tracker.update(lamp_slots, masks, reported, now_ms, at_ms), now_ms)

    def _evaluate_all(self, now_ms: int) -> list[Opening]:
        """The whole fleet: every rule, the correlation of lamps into cabinet outages, time-based debounce."""
        self.evaluations += 1
        ix, state = self.index, self.lighting.state
        expected = self.lighting.expected_at(now_ms // 1000 * 1000)
        cond = conditions(ix, state, expected)
        cab_mask, explained = cabinet_masks(
            ix,
            self.cabinets,
            self.cabinet_history,
            cond,
            expected.due,
            now_ms,
            self.params,
            self.open_work,
            state.ts_ms,
            self.lamp_history.watch_since,
        )
        self.explained = explained
        cab_slots = np.arange(len(ix.cabinet_ids), dtype=np.intp)
        cab_reported, self.lamps_reported = self.lamps_reported, np.zeros(len(ix.cabinet_ids), dtype=np.bool_)
        decisions = self.cabinet_tracker.update(cab_slots, cab_mask, cab_reported, now_ms)
        lamp_slots = np.arange(ix.n, dtype=np.intp)
        masks = lamp_masks(ix, state, expected, self.lamp_history, now_ms, self.params)
        # Lamps an outage of their cabinet or circuit explains get no tickets of their own for it (faults
        # already opened before the correlation stay theirs until the cabinet ticket absorbs them).
        keep = ~np.uint32(OUTAGE_FAMILY) | self.lamp_tracker.confirmed
        masks = np.where(explained, masks & keep, masks).astype(np.uint32)
        decisions += self.lamp_tracker.update(lamp_slots, masks, np.zeros(ix.n, dtype=np.bool_), now_ms)
        return self._openings(decisions, now_ms)

    def _mains_lost(self, cabinet: int) -> bool:
        return bool(self.cabinets.faults[cabinet] & CABINET_FAULT_BITS["mains_loss"])

    def _openings(self, decisions: list[Decision], now_ms: int) -> list[Opening]:
        ix, state = self.index, self.lighting.state
        if not decisions:
            return []
        expected = self.lighting.expected_at(now_ms // 1000 * 1000)
        cond: npt.NDArray[np.int8] | None = None
        device = lamp_device_mask(state.faults)
        out = []
        for d in decisions:
            if d.asset_type == "cabinet":
                cab = d.slot
                lamps: list[str] = []
                if d.fault in _LISTS_LAMPS and d.action in ("open", "repeat", "reopen"):
                    dead = int(self.cabinets.dead_circuits[cab])
                    if cond is None:
                        cond = conditions(ix, state, expected)
                    listed = outage_lamps(ix, cab, cond, expected.due, device, dead, mains_lost=self._mains_lost(cab))
                    lamps = [ix.lamp_id[i] for i in listed.tolist()]
                district = ix.districts[int(ix.road_district[ix.cabinet_road[cab]])]
                if lamps:
                    self.listed[cab] = len(lamps)
                out.append(Opening(d, ix.cabinet_ids[cab], district, lamps))
            else:
                out.append(Opening(d, ix.lamp_id[d.slot], ix.districts[int(ix.lamp_district[d.slot])]))
        return out

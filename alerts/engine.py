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
from telemetry.fleet import CABINET_FAULT_BITS, CabinetState, FleetIndex, LampColumns
from telemetry.lighting import LightingEngine
from telemetry.models import CabinetRow, StatusRow
from telemetry.rate import conditions

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
        """A committed batch (the lighting engine has applied it): evaluate the lamps and cabinets it touched."""
        ix = self.index
        slots, pick = columns.newest()
        fresh = columns.ts_ms[pick] >= self.lighting.state.ts_ms[slots]  # the reading the state now holds
        slots, pick = slots[fresh], pick[fresh]
        self.lamp_history.observe(
            slots,
            columns.ts_ms[pick],
            columns.on[pick],
            columns.dim[pick],
            columns.power_w[pick],
            ix.rated_w[slots],
            self.params,
        )
        changed_cabinets = self.cabinets.apply_rows(cabinet_rows, now_ms)
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
        self.lamps_reported[ix.lamp_cabinet[slots]] = True
        return self._evaluate_batch(now_ms, lamp_slots, reported, np.unique(np.array(changed_cabinets, dtype=np.intp)))

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
        cabinets: npt.NDArray[np.intp],
    ) -> list[Opening]:
        """Lamps and cabinets a batch touched. What cabinets report themselves is judged at once (a leak is a
        P1); what is derived from their lamps (most dark, silence) waits for the sweep."""
        self.evaluations += 1
        ix, state = self.index, self.lighting.state
        decisions: list[Decision] = []
        explained = self.explained[lamp_slots]
        if len(cabinets):
            device, outage = cabinet_device_masks(self.cabinets, self.open_work, cabinets)
            derived = self.cabinet_tracker.mask[cabinets] & np.uint32(DERIVED_CABINET_BITS)
            decisions += self.cabinet_tracker.update(
                cabinets, device | derived, np.ones(len(cabinets), dtype=np.bool_), now_ms
            )
            out_now = np.zeros(len(ix.cabinet_ids), dtype=np.bool_)
            out_now[cabinets[outage]] = True
            explained = explained | out_now[ix.lamp_cabinet[lamp_slots]]
        expected = self.lighting.expected_at(now_ms // 1000 * 1000)
        masks = lamp_masks(ix, state, expected, self.lamp_history, now_ms, self.params, lamp_slots)
        keep = ~np.uint32(OUTAGE_FAMILY) | self.lamp_tracker.confirmed[lamp_slots]
        masks = np.where(explained, masks & keep, masks).astype(np.uint32)
        decisions += self.lamp_tracker.update(lamp_slots, masks, reported, now_ms)
        return self._openings(decisions, now_ms)

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

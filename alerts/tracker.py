"""Debounce, deduplication and clearing: from fault masks over time to ticket decisions.

Pure and sparse: only assets with a fault (or a fault being watched) have an entry. For each (asset, fault):

- a P1 fault opens at once; a P2–P4 fault opens when it has persisted for 2 consecutive reports or 5 minutes
  (of report time: a backlog uploaded at once is judged as it was reported), so a fault that clears inside that
  window opens nothing;
- a fault's first-seen time is the time of the report that first showed it;
- an opened fault that goes away and comes back while its ticket is open is a repeat (one ticket per asset and
  fault);
- an opened fault clears after 2 healthy reports; what that means for the ticket (transient, verified) is the
  ticket service's decision;
- after a crew resolves a ticket, 2 reports still showing the fault reopen it, 2 healthy ones clear it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from alerts.faults import FaultKind

__all__ = ["DEBOUNCE_MS", "Decision", "Track", "Tracker"]

DEBOUNCE_MS = 5 * 60_000
DEBOUNCE_REPORTS = 2
CLEAR_REPORTS = 2
REOPEN_REPORTS = 2

Action = Literal["open", "repeat", "clear", "reopen", "lamps"]


@dataclass(frozen=True)
class Decision:
    action: Action
    asset_type: str  # "lamp" or "cabinet"
    slot: int
    fault: str
    priority: str
    ts_ms: int
    first_ms: int


@dataclass
class Track:
    first_ms: int
    reports: int
    confirmed: bool = False
    active: bool = True
    healthy: int = 0
    resolved: bool = False
    faulty_after_resolve: int = 0


class Tracker:
    """One per asset type; `update` takes the masks of some assets at an instant and returns decisions."""

    def __init__(
        self, asset_type: str, kinds: tuple[FaultKind, ...], n: int, *, debounce_ms: int = DEBOUNCE_MS
    ) -> None:
        self.asset_type = asset_type
        self.kinds = kinds
        self.debounce_ms = debounce_ms
        self.tracks: dict[tuple[int, int], Track] = {}
        self.mask = np.zeros(n, dtype=np.uint32)  # last mask seen per asset
        self.confirmed = np.zeros(n, dtype=np.uint32)  # bits with an opened (ticketed) fault
        self.watching = np.zeros(n, dtype=np.bool_)  # has a fault in its debounce window: time alone may open it
        self.tracked = np.zeros(n, dtype=np.uint32)  # bits with a track

    def update(
        self,
        slots: npt.NDArray[np.intp],
        masks: npt.NDArray[np.uint32],
        reported: npt.NDArray[np.bool_],
        now_ms: int,
        at_ms: npt.NDArray[np.int64] | None = None,
    ) -> list[Decision]:
        """Masks of `slots`, decided at `now_ms`; `reported` marks the assets whose new report this evaluation
        carries. `at_ms`: when each asset's masks held (its report's time; default `now_ms`): a new fault is
        first seen then, and the 5-minute debounce counts from there."""
        prev = self.mask[slots]
        interesting = (masks != prev) | (reported & ((masks | prev | self.tracked[slots]) != 0)) | self.watching[slots]
        out: list[Decision] = []
        for i in np.flatnonzero(interesting).tolist():
            at = now_ms if at_ms is None else int(at_ms[i])
            out.extend(self._asset(int(slots[i]), int(masks[i]), bool(reported[i]), now_ms, at))
        self.mask[slots] = masks
        return out

    def _asset(self, slot: int, mask: int, reported: bool, now_ms: int, at_ms: int) -> Iterable[Decision]:
        bits = mask | int(self.tracked[slot])
        watching = False
        b = 0
        while bits >> b:
            if bits >> b & 1:
                d = self._bit(slot, b, bool(mask >> b & 1), reported, now_ms, at_ms)
                if d is not None:
                    yield d
                t = self.tracks.get((slot, b))
                watching |= t is not None and not t.confirmed
            b += 1
        self.watching[slot] = watching

    def _decision(self, action: Action, slot: int, bit: int, now_ms: int, first_ms: int) -> Decision:
        kind = self.kinds[bit]
        return Decision(action, self.asset_type, slot, kind.code, kind.priority, now_ms, first_ms)

    def _bit(self, slot: int, bit: int, active: bool, reported: bool, now_ms: int, at_ms: int) -> Decision | None:
        key = (slot, bit)
        t = self.tracks.get(key)
        if active:
            if t is None:
                t = self._track(slot, bit, Track(first_ms=at_ms, reports=int(reported)))
                if self.kinds[bit].priority == "P1":
                    return self._confirm(t, slot, bit, now_ms)
                return None
            if not t.confirmed:
                t.reports += int(reported)
                if t.reports >= DEBOUNCE_REPORTS or at_ms - t.first_ms >= self.debounce_ms:
                    return self._confirm(t, slot, bit, now_ms)
                return None
            t.healthy = 0
            if t.resolved:
                t.faulty_after_resolve += int(reported)
                if t.faulty_after_resolve >= REOPEN_REPORTS:
                    t.resolved, t.faulty_after_resolve, t.active = False, 0, True
                    return self._decision("reopen", slot, bit, now_ms, t.first_ms)
                return None
            if not t.active:
                t.active = True
                return self._decision("repeat", slot, bit, now_ms, t.first_ms)
            return None
        if t is None:
            return None
        if not t.confirmed:
            self._untrack(slot, bit)  # cleared inside the debounce window: nothing was opened
            return None
        t.active = False
        t.faulty_after_resolve = 0
        t.healthy += int(reported)
        if t.healthy >= CLEAR_REPORTS:
            self._untrack(slot, bit)
            return self._decision("clear", slot, bit, now_ms, t.first_ms)
        return None

    def _track(self, slot: int, bit: int, t: Track) -> Track:
        self.tracks[(slot, bit)] = t
        self.tracked[slot] |= np.uint32(1 << bit)
        if t.confirmed:
            self.confirmed[slot] |= np.uint32(1 << bit)
        return t

    def _untrack(self, slot: int, bit: int) -> None:
        self.tracks.pop((slot, bit), None)
        keep = np.uint32(~(1 << bit) & 0xFFFFFFFF)
        self.tracked[slot] &= keep
        self.confirmed[slot] &= keep

    def _confirm(self, t: Track, slot: int, bit: int, now_ms: int) -> Decision:
        t.confirmed = True
        self.confirmed[slot] |= np.uint32(1 << bit)
        return self._decision("open", slot, bit, now_ms, t.first_ms)

    def past(self, slot: int, bit: int, first_ms: int, now_ms: int) -> Decision | None:
        """A fault found in reports older than the asset's newest (a backlog that arrived after newer reports):
        it opens unless a ticket is already open for it. Gone from the asset's present state, it stays open until
        healthy reports clear it (an untouched ticket then closes as transient)."""
        t = self.tracks.get((slot, bit))
        if t is not None and t.confirmed:
            return None
        active = bool(int(self.mask[slot]) >> bit & 1)
        t = self._track(slot, bit, Track(first_ms=first_ms, reports=DEBOUNCE_REPORTS, active=active))
        return self._confirm(t, slot, bit, now_ms)

    # -- what the ticket service tells the tracker -------------------------------------------------------

    def opened(self, slot: int, fault: str, first_ms: int) -> None:
        """A ticket is open for this fault (at start-up, from the database): watch it as confirmed."""
        bit = self._bit_of(fault)
        if (slot, bit) not in self.tracks:
            self._track(slot, bit, Track(first_ms=first_ms, reports=0, confirmed=True))
        self.mask[slot] |= np.uint32(1 << bit)  # assumed present until reports say otherwise

    def resolved(self, slot: int, fault: str, now_ms: int) -> None:
        """A crew resolved the ticket: the next reports verify it (healthy) or reopen it (fault still there)."""
        bit = self._bit_of(fault)
        t = self.tracks.get((slot, bit))
        if t is None:
            t = self._track(slot, bit, Track(first_ms=now_ms, reports=0, confirmed=True, active=False))
        t.confirmed = True
        self.confirmed[slot] |= np.uint32(1 << bit)
        t.resolved, t.faulty_after_resolve, t.healthy = True, 0, 0

    def forget(self, slot: int, fault: str) -> None:
        """The ticket ended without the fault clearing (cancelled): stop tracking; a new fault opens anew."""
        self._untrack(slot, self._bit_of(fault))

    def _bit_of(self, fault: str) -> int:
        for i, k in enumerate(self.kinds):
            if k.code == fault:
                return i
        raise KeyError(f"unknown {self.asset_type} fault {fault!r}")

"""What the simulated devices switch by: a profile installed on the device by a `schedule` command, or else the
schedules stored in PostgreSQL (standing in for what the devices were commissioned with), evaluated for the
simulated lamps. The composition root wires this; the simulator itself knows only a callable with `install`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from inventory.index import load_index
from kernel.database import DatabaseUnavailable, connect
from lighting.engine import load_schedules, schedules_version
from lighting.expected import Expected
from lighting.schedules import ScheduleError, decode_doc

__all__ = ["ScheduleControl"]

logger = logging.getLogger(__name__)


class ScheduleControl:
    """`control(now_ms)` → (on, level) for the simulator's lamps, in its order; reloads changed schedules."""

    def __init__(self, database_url: str, lamp_ids: list[str], *, reload_every_s: float = 2.0) -> None:
        self.database_url = database_url
        self.reload_every_s = reload_every_s
        with connect(database_url, autocommit=True) as conn:
            self.index = load_index(conn)
            self.version = schedules_version(conn)
            self.expected = Expected(self.index, load_schedules(conn), strict=False)
        self.slots = np.array([self.index.slot_of_id[lamp] for lamp in lamp_ids], dtype=np.intp)
        self._checked = time.monotonic()
        # Profiles installed on devices: one Expected per distinct profile, and each lamp's (−1: none).
        self._installed: dict[bytes, int] = {}
        self._programs: list[Expected] = []
        self.program = np.full(len(lamp_ids), -1, dtype=np.int32)
        self._switches: npt.NDArray[np.int64] | None = None  # upcoming switching instants, sorted

    def install(self, lamp: int, profile: dict[str, Any]) -> str | None:
        """Store `profile` on the simulator's lamp `lamp`; an error text when a device would refuse it."""
        key = msgspec.json.encode(profile, order="sorted")
        program = self._installed.get(key)
        if program is None:
            try:
                doc = decode_doc(msgspec.json.encode({"profile": profile}))
            except ScheduleError as exc:
                return f"profile refused: {exc}"
            program = len(self._programs)
            self._programs.append(Expected(self.index, {("city", "all"): doc}, strict=False))
            self._installed[key] = program
        self.program[lamp] = program
        self._switches = None
        return None

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.reload_every_s:
            return
        self._checked = now
        try:
            with connect(self.database_url, autocommit=True, connect_timeout=3) as conn:
                version = schedules_version(conn)
                if version != self.version:
                    self.expected = Expected(self.index, load_schedules(conn), strict=False)
                    self.version = version
                    self._switches = None
                    logger.info("simulator: schedules changed, devices follow the new ones")
        except DatabaseUnavailable as exc:  # devices keep their last schedule, as real ones do
            logger.warning("simulator: cannot read schedules (keeping the last ones): %s", exc)

    def next_change(self, now_ms: int) -> int | None:
        """The first instant after `now_ms` at which one of the simulator's lamps switches on or off (None: none
        through the next day), so the devices switch on the millisecond however seldom the schedule is evaluated.
        The instants are worked out once and kept until they run out or the schedules change."""
        if self._switches is None or (len(self._switches) and self._switches[-1] <= now_ms):
            parts = [self.expected.switch_times(now_ms, self.slots)]
            parts += [program.switch_times(now_ms, self.slots[mine]) for program, mine in self._installed_groups()]
            self._switches = np.unique(np.concatenate(parts))
        i = int(np.searchsorted(self._switches, now_ms, side="right"))
        return int(self._switches[i]) if i < len(self._switches) else None

    def __call__(self, now_ms: int) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int16]]:
        """Lamps in a planned outage or maintenance window are off, as if their circuit were isolated."""
        self._maybe_reload()
        e = self.expected.at(now_ms)
        on, level = e.due[self.slots], e.level[self.slots]
        for program, mine in self._installed_groups():
            p = program.at(now_ms)
            on[mine] = p.due[self.slots[mine]]
            level[mine] = p.level[self.slots[mine]]
        return on, level

    def _installed_groups(self) -> list[tuple[Expected, npt.NDArray[np.bool_]]]:
        """Each installed profile in use, with the mask of the lamps running it."""
        return [(self._programs[p], self.program == p) for p in np.unique(self.program[self.program >= 0]).tolist()]

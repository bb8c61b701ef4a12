"""The simulated fleet: vectorised lamp state and the docs/protocol.md payloads it produces.

Single-lamp controllers report on their own topics; concentrators report all their lamps in one cabinet report.
State is held in numpy arrays indexed by lamp, so one process drives a whole city. A step costs little more than
the reports it sends: the schedule is looked at once per clock second, at each lamp's switching instant (when
the control can tell it) and at once after a schedule command; overrides when they change or end; energy is
integrated per lamp only when its draw changes or it reports; readings are drawn only for the lamps that report.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from inventory.queries import devices_in_service
from protocol.topics import device_topic
from simulator.degradation import Degradation, Rates
from simulator.sun import is_night
from simulator.wire import SimulatorError

__all__ = ["FAULT_CODES", "Fleet", "FleetSpec", "Report"]

SEQ_MAX = 2**31 - 1
# Fault a failing lamp reports, with its share of failures and what the lamp then looks like.
FAULT_CODES = ("lamp_failure", "driver_failure", "relay_failure")
_FAULT_P = (0.6, 0.25, 0.15)
_XINING = (36.62, 101.78)
_encode = msgspec.json.Encoder().encode


def _ambient(now_ms: int) -> float:
    """Xining's night air: near -14 °C in January, near +10 °C in July."""
    doy = datetime.fromtimestamp(now_ms / 1000, tz=UTC).timetuple().tm_yday
    return -2.0 - 12.0 * math.cos(2 * math.pi * (doy - 15) / 365)


@dataclass(frozen=True)
class FleetSpec:
    """The inventory as the simulator needs it (from the database or built in tests)."""

    lamp_id: list[str]
    lamp_district: list[str]
    lamp_cabinet: npt.NDArray[np.int32]  # index into cabinet lists
    lamp_concentrator: npt.NDArray[np.bool_]
    lamp_rated_w: npt.NDArray[np.float32]
    lamp_led: npt.NDArray[np.bool_]
    cabinet_id: list[str]
    cabinet_district: list[str]
    cabinet_circuits: npt.NDArray[np.int16]
    cabinet_concentrator: npt.NDArray[np.bool_]
    lamp_circuit: npt.NDArray[np.int16] | None = None  # 1-based circuit of each lamp in its cabinet

    @classmethod
    def from_db(cls, conn: Any) -> FleetSpec:
        cabs, lamps = devices_in_service(conn)
        index = {c[0]: i for i, c in enumerate(cabs)}
        return cls(
            lamp_id=[r[0] for r in lamps],
            lamp_district=[r[1] for r in lamps],
            lamp_cabinet=np.array([index[r[2]] for r in lamps], dtype=np.int32),
            lamp_concentrator=np.array([r[3] for r in lamps], dtype=np.bool_),
            lamp_rated_w=np.array([r[4] for r in lamps], dtype=np.float32),
            lamp_led=np.array([r[5] for r in lamps], dtype=np.bool_),
            cabinet_id=[c[0] for c in cabs],
            cabinet_district=[c[1] for c in cabs],
            cabinet_circuits=np.array([c[2] for c in cabs], dtype=np.int16),
            cabinet_concentrator=np.array([c[3] for c in cabs], dtype=np.bool_),
            lamp_circuit=np.array([r[6] for r in lamps], dtype=np.int16),
        )


@dataclass(frozen=True, slots=True)
class Report:
    topic: bytes
    payload: bytes
    lamps: int  # lamp readings carried (1 for a single lamp, n for a cabinet report, 0 for a status)


class Fleet:
    """Every lamp's state; `due_reports(now_ms)` advances it to `now_ms` and returns the reports to send."""

    def __init__(
        self,
        spec: FleetSpec,
        *,
        interval_s: float = 300.0,
        jitter: float = 1.0,
        seed: int = 1,
        failure_rate_per_day: float = 0.0005,
        start_ms: int = 0,
        control: Callable[[int], tuple[npt.NDArray[np.bool_], npt.NDArray[np.int16]]] | None = None,
        degradation: Degradation | None = None,
        d4i_share: float = 0.8,
        leak_sensor_share: float = 0.5,
    ) -> None:
        """`control(now_ms)` → (on, level) per lamp is the schedule the devices follow; without it they switch at
        Xining's sunset and sunrise at full level. `degradation`: lamps wearing out before they fail
        (`simulator.degradation`). `d4i_share` of the LED lamps have a D4i driver that reports its burning hours,
        switch-ons and temperature, `leak_sensor_share` of all lamps an earth-leakage sensor."""
        if interval_s <= 0:
            raise SimulatorError(f"reporting interval must be positive, got {interval_s}")
        if not 0 <= jitter <= 1:
            raise SimulatorError(f"jitter is a fraction of the interval, 0..1, got {jitter}")
        self.spec = spec
        self.interval_ms = int(interval_s * 1000)
        self.jitter = jitter
        self.failure_rate_per_day = failure_rate_per_day
        self.control = control
        self.rng = np.random.default_rng(seed)
        n = len(spec.lamp_id)
        self.n = n
        self.on = np.zeros(n, dtype=np.bool_)
        self.dim = np.full(n, 100, dtype=np.int16)
        self.fault = np.zeros(n, dtype=np.int8)  # 0 healthy, else 1 + index into FAULT_CODES
        self.leaking = np.zeros(n, dtype=np.bool_)  # residual current to the pole: reported, lamp still lit
        self.cut = np.zeros(n, dtype=np.bool_)  # supply lost (a cut cable): a last gasp, then silence
        self.gasped = np.zeros(n, dtype=np.bool_)  # its controller has sent the last gasp
        self.lamp_circuit = (
            spec.lamp_circuit.astype(np.int16) if spec.lamp_circuit is not None else np.ones(n, dtype=np.int16)
        )
        # Energy meters: the reading at energy_ms, then the present draw (W) until the lamp's state next changes.
        self.energy_wh = self.rng.uniform(0, 2_000_000, n)
        self.energy_ms = np.full(n, start_ms, dtype=np.int64)
        self.draw = np.zeros(n)
        self.lamp_seq = np.zeros(n, dtype=np.int64)
        self.rssi = self.rng.integers(-110, -65, n).astype(np.int16)
        # Counters and sensors of their own seed, so the draws above stay what they were.
        self.aux = np.random.default_rng([seed, 0xC0])
        self.d4i = spec.lamp_led & (self.aux.random(n) < d4i_share)
        self.leak_sensor = self.aux.random(n) < leak_sensor_share
        self.burn_s = self.aux.uniform(0, 40_000, n) * 3600.0  # the lamps' ages, up to about nine years of nights
        self.starts = (self.burn_s / 3600 / 11.5).astype(np.int64)
        self.degradation = degradation
        self._deg_ms = start_ms
        self._sched_on = np.zeros(n, dtype=np.bool_)
        self._off_at = np.full(n, np.iinfo(np.int64).min // 2, dtype=np.int64)  # when the schedule last switched off
        self.pf = np.where(spec.lamp_led, self.rng.uniform(0.95, 0.99, n), self.rng.uniform(0.85, 0.9, n))
        # Devices: every single-lamp controller, and every cabinet with a concentrator.
        self.single = np.flatnonzero(~spec.lamp_concentrator)
        self.conc_cabinets = np.flatnonzero(spec.cabinet_concentrator)
        order = np.argsort(spec.lamp_cabinet, kind="stable")
        bounds = np.searchsorted(spec.lamp_cabinet[order], np.arange(len(spec.cabinet_id) + 1))
        self.cabinet_lamps = [order[bounds[c] : bounds[c + 1]] for c in range(len(spec.cabinet_id))]
        self.cab_seq = np.zeros(len(spec.cabinet_id), dtype=np.int64)
        self.cab_energy = self.rng.uniform(0, 50_000_000, len(spec.cabinet_id))
        # The first report of each device falls somewhere in the first interval (jitter spreads them).
        self.next_single = start_ms + (self.rng.random(len(self.single)) * self.interval_ms * max(jitter, 1e-3)).astype(
            np.int64
        )
        self.next_cab = start_ms + (
            self.rng.random(len(self.conc_cabinets)) * self.interval_ms * max(jitter, 1e-3)
        ).astype(np.int64)
        self.last_ms = start_ms
        self.switches = 0
        self._started = False
        # Overrides by command: until (epoch ms; −1 until the schedule next switches; 0 none), on and level
        # (−1: the schedule's).
        self.ovr_until = np.zeros(n, dtype=np.int64)
        self.ovr_on = np.full(n, -1, dtype=np.int8)
        self.ovr_level = np.full(n, -1, dtype=np.int16)
        self._base_on = np.zeros(n, dtype=np.bool_)
        self._schedule: tuple[npt.NDArray[np.bool_], npt.NDArray[np.int16]] | None = None
        self._schedule_s = -1  # the clock second the schedule was last looked at
        self._next_switch: int | None = None  # epoch ms of the next switching the control announced
        self._overrides_changed = True
        self._next_override_end = -1  # epoch ms at which the first override with a time ends (−1: none)
        # Readings of the lamps that report this step (the rest of each buffer is stale).
        self._buf = {
            k: np.zeros(n) for k in ("power", "voltage", "current", "temp", "energy", "pf", "dtemp", "leak", "burn")
        }
        self._buf["dropout"] = np.zeros(n)
        self.topics_single = [
            device_topic(spec.lamp_district[i], "lamp", spec.lamp_id[i], "state").encode() for i in self.single
        ]
        self.topics_cab = [
            device_topic(spec.cabinet_district[c], "cabinet", spec.cabinet_id[c], "state").encode()
            for c in self.conc_cabinets
        ]

    # -- state changes ---------------------------------------------------------------------------------------

    def fail(self, lamps: npt.ArrayLike, code: str, now_ms: int) -> None:
        """Inject a fault on the given lamp indices; they report at once."""
        idx = np.asarray(lamps, dtype=np.int64)
        self._settle(idx, now_ms)
        self.fault[idx] = FAULT_CODES.index(code) + 1
        self._redraw(idx)
        self._report_now(idx, now_ms)

    def repair(self, lamps: npt.ArrayLike, now_ms: int) -> None:
        idx = np.asarray(lamps, dtype=np.int64)
        self._settle(idx, now_ms)
        self.fault[idx] = 0
        self._redraw(idx)
        self._report_now(idx, now_ms)

    def leak(self, lamps: npt.ArrayLike, now_ms: int, *, on: bool = True) -> None:
        """Residual current at these lamps (or its end): they report `leakage_current` at once."""
        idx = np.asarray(lamps, dtype=np.int64)
        self.leaking[idx] = on
        self._report_now(idx, now_ms)

    def degrade(self, lamps: npt.ArrayLike, mode: str, now_ms: int, *, lifetime: float | None = None) -> None:
        """Put these lamps into a degradation mode now (`simulator.degradation`), on the way to its fault."""
        if self.degradation is None:
            self.degradation = Degradation(self.n, rates=Rates.zero(), lamp_ids=self.spec.lamp_id)
            self._deg_ms = now_ms
        self.degradation.start(np.asarray(lamps, dtype=np.int64), mode, now_ms, lifetime=lifetime)

    def cut_cable(self, cabinet: int, circuit: int, now_ms: int) -> npt.NDArray[np.int64]:
        """Cut one circuit of a cabinet (theft, digging): its single-lamp controllers send a last gasp
        (`supply_loss`) and fall silent, its concentrator reports `circuit_open` and no longer hears those lamps.
        Returns the lamps cut off."""
        lamps = np.flatnonzero((self.spec.lamp_cabinet == cabinet) & (self.lamp_circuit == circuit))
        self._settle(lamps, now_ms)
        self.cut[lamps] = True
        self.gasped[lamps] = False
        self._redraw(lamps)
        self._report_now(lamps, now_ms)
        return lamps

    def restore_cable(self, cabinet: int, circuit: int, now_ms: int) -> None:
        lamps = np.flatnonzero((self.spec.lamp_cabinet == cabinet) & (self.lamp_circuit == circuit))
        self._settle(lamps, now_ms)
        self.cut[lamps] = False
        self.gasped[lamps] = False
        self._redraw(lamps)
        self._report_now(lamps, now_ms)

    def _report_now(self, lamp_idx: npt.NDArray[np.int64], now_ms: int, *, gather_ms: int = 0) -> None:
        single_pos = np.flatnonzero(np.isin(self.single, lamp_idx))
        self.next_single[single_pos] = now_ms
        cabs = np.unique(self.spec.lamp_cabinet[lamp_idx])
        cab_pos = np.flatnonzero(np.isin(self.conc_cabinets, cabs))
        self.next_cab[cab_pos] = np.minimum(self.next_cab[cab_pos], now_ms + gather_ms)

    def _wear(self, now_ms: int) -> None:
        """Degrading lamps wear for the time since the last look (once a clock second), and those at their end
        fail as their mode fails."""
        deg = self.degradation
        if deg is None or now_ms - self._deg_ms < 1000:
            return
        dt_ms, self._deg_ms = now_ms - self._deg_ms, now_ms
        lit = self._lit(np.arange(self.n))
        temp = self._driver_temp(np.arange(self.n), now_ms, lit)
        healthy = (self.fault == 0) & ~self.leaking & ~self.cut
        failed = deg.advance(now_ms, dt_ms, burning=lit, driver_temp_c=temp, healthy=healthy)
        self._degraded(failed, now_ms)
        cycling = np.flatnonzero(lit & deg.of("driver"))
        if len(cycling):
            restarts = self.aux.poisson(deg.dropouts_per_hour(cycling) * dt_ms / 3_600_000)
            self.starts[cycling] += restarts

    def _degraded(self, failed: dict[str, npt.NDArray[np.int64]], now_ms: int) -> None:
        for mode, lamps in failed.items():
            if mode in ("driver", "relay"):
                self._settle(lamps, now_ms)
                self.fault[lamps] = FAULT_CODES.index(f"{mode}_failure") + 1
                self._redraw(lamps)
                self._report_now(lamps, now_ms)
            elif mode == "water":
                self.leak(lamps, now_ms)
            # photocell: its lamp goes on day-burning (the backend's rule); lumen: nothing a device can tell

    def _lit(self, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Burning: switched on, its driver and relay sound and its supply there."""
        lit: npt.NDArray[np.bool_] = self.on[idx] & (self.dim[idx] > 0) & (self.fault[idx] == 0) & ~self.cut[idx]
        return lit

    def _driver_temp(self, idx: npt.NDArray[np.int64], now_ms: int, lit: npt.NDArray[np.bool_]) -> npt.NDArray[Any]:
        heat = self.degradation.driver_heat(idx) if self.degradation is not None else 0.0
        return _ambient(now_ms) + 35.0 * lit * self.dim[idx] / 100.0 + heat

    def _advance(self, now_ms: int) -> None:
        dt_ms = max(0, now_ms - self.last_ms)
        self._wear(now_ms)
        if self.failure_rate_per_day > 0 and dt_ms:
            p = self.failure_rate_per_day * dt_ms / 86_400_000
            drawn = np.unique(self.rng.integers(0, self.n, self.rng.binomial(self.n, min(p, 1.0))))
            new = drawn[self.fault[drawn] == 0]
            if len(new):
                codes = self.rng.choice(len(FAULT_CODES), size=len(new), p=_FAULT_P) + 1
                self._settle(new, now_ms)
                self.fault[new] = codes
                self._redraw(new)
                self._report_now(new, now_ms)
        second = now_ms // 1000
        switching = self._next_switch is not None and now_ms >= self._next_switch
        if second != self._schedule_s or self._schedule is None or switching:
            if self._schedule is None or switching or self._next_switch is None:
                next_change = getattr(self.control, "next_change", None)
                self._next_switch = next_change(now_ms) if next_change is not None else None
            self._schedule = self._scheduled(now_ms)
            self._schedule_s = second
            self._overrides_changed = True
        if self._overrides_changed or 0 < self._next_override_end <= now_ms:
            self._overrides_changed = False
            on, level = self._overridden(now_ms, *self._schedule)
            ends = self.ovr_until[self.ovr_until > 0]
            self._next_override_end = int(ends.min()) if len(ends) else -1
            if self.degradation is not None:
                self._photocells(now_ms, on, level)
            dim = np.where(on, level, 0).astype(np.int16)
            changed = np.flatnonzero((on != self.on) | (dim != self.dim))
            if len(changed):
                self._switched_on(changed[on[changed] & ~self.on[changed]], now_ms)
                self._settle(changed, now_ms)
                self.on[changed] = on[changed]
                self.dim[changed] = dim[changed]
                self._redraw(changed)
                if self._started:
                    # A switching or dimming step: the lamps that changed report it at once (docs/protocol.md).
                    self.switches += 1
                    self._report_now(changed, now_ms)
        self._started = True
        self.last_ms = now_ms

    def _photocells(self, now_ms: int, on: npt.NDArray[np.bool_], level: npt.NDArray[np.int16]) -> None:
        """A drifting photocell keeps its lamp on for a while after the schedule switched it off."""
        assert self.degradation is not None
        pc = np.flatnonzero(self.degradation.of("photocell"))
        if len(pc) == 0:
            return
        went_off = pc[~on[pc] & self._sched_on[pc]]
        self._off_at[went_off] = now_ms
        self._sched_on[pc] = on[pc]
        late = pc[~on[pc] & (now_ms - self._off_at[pc] < self.degradation.late_off_ms(pc))]
        on[late] = True
        level[late] = np.where(self.dim[late] > 0, self.dim[late], 100)

    def _switched_on(self, lamps: npt.NDArray[np.int64], now_ms: int) -> None:
        """These lamps' relays close: one more start each (and a worn relay's chatter), and relay wear."""
        if len(lamps) == 0:
            return
        self.starts[lamps] += 1
        if self.degradation is not None:
            self.starts[lamps] += self.aux.poisson(self.degradation.chatter(lamps))
            self._degraded(self.degradation.switched_on(lamps, now_ms), now_ms)

    def _settle(self, idx: npt.NDArray[np.int64], now_ms: int) -> None:
        """Bring these lamps' energy meters and burning hours up to `now_ms` at their present draw (before the
        draw changes)."""
        self.energy_wh[idx] = self._energy(idx, now_ms)
        self.burn_s[idx] = self._burned(idx, now_ms)
        self.energy_ms[idx] = now_ms

    def _burned(self, idx: npt.NDArray[np.int64], now_ms: int) -> npt.NDArray[np.float64]:
        return self.burn_s[idx] + self._lit(idx) * np.maximum(now_ms - self.energy_ms[idx], 0) / 1000.0

    def _energy(self, idx: npt.NDArray[np.int64], now_ms: int) -> npt.NDArray[np.float64]:
        return self.energy_wh[idx] + self.draw[idx] * np.maximum(now_ms - self.energy_ms[idx], 0) / 3_600_000

    def _redraw(self, idx: npt.NDArray[np.int64]) -> None:
        self.draw[idx] = self._power(idx)

    def _scheduled(self, now_ms: int) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int16]]:
        """What the devices' schedule says: the given control, or Xining's sunset and sunrise at full level."""
        if self.control is not None:
            on, level = self.control(now_ms)
            return on.astype(np.bool_), level.astype(np.int16)
        night = is_night(datetime.fromtimestamp(now_ms / 1000, tz=UTC), *_XINING)
        return np.full(self.n, night), np.full(self.n, 100, dtype=np.int16)

    def _overridden(
        self, now_ms: int, base_on: npt.NDArray[np.bool_], base_level: npt.NDArray[np.int16]
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int16]]:
        """Operators' overrides on top of the schedule, each until its time or the schedule's next switching."""
        flipped = base_on != self._base_on
        self._base_on = base_on.copy()
        ended = ((self.ovr_until > 0) & (self.ovr_until <= now_ms)) | ((self.ovr_until == -1) & flipped)
        if ended.any():
            self.ovr_until[ended] = 0
            self.ovr_on[ended] = -1
            self.ovr_level[ended] = -1
        active = self.ovr_until != 0
        on = np.where(active & (self.ovr_on >= 0), self.ovr_on == 1, base_on)
        level = np.where(active & (self.ovr_level >= 0), self.ovr_level, np.where(base_level > 0, base_level, 100))
        return on, level.astype(np.int16)

    # -- commands --------------------------------------------------------------------------------------------

    def command(self, lamp: int, cmd: dict[str, Any], now_ms: int, *, report: bool = True) -> str | None:
        """Carry out one device command on a lamp; returns an error text when the device cannot. The lamp
        reports at once (`report=False`: the caller batches that for many lamps with `report_now`)."""
        op = cmd.get("op")
        until = cmd.get("until")
        hold = int(until) if isinstance(until, int) and until > now_ms else -1
        if op == "switch":
            self.ovr_on[lamp] = 1 if cmd.get("on") else 0
            self.ovr_until[lamp] = hold
        elif op == "dim":
            level = cmd.get("level")
            if not isinstance(level, int) or not 0 <= level <= 100:
                return f"dim level {level!r} out of range"
            self.ovr_level[lamp] = level
            self.ovr_until[lamp] = hold
        elif op == "resume":
            self.ovr_until[lamp], self.ovr_on[lamp], self.ovr_level[lamp] = 0, -1, -1
        elif op == "schedule":
            # The device stores the profile and switches by it from now on, whether or not the network is up.
            install = getattr(self.control, "install", None)
            profile = cmd.get("profile")
            if not isinstance(profile, dict):
                return "a schedule command without a profile"
            if install is None:
                return "this simulated device keeps its built-in sunset/sunrise schedule"
            error: str | None = install(lamp, profile)
            if error:
                return error
        elif op == "report":
            pass  # a report follows below
        else:
            return f"unsupported op {op!r}"
        self._overrides_changed = True
        if op == "schedule":
            self._schedule = None  # the devices switch by the new profile from this step on
        if report:
            self._report_now(np.array([lamp]), now_ms)
        return None

    def report_now(self, lamps: npt.ArrayLike, now_ms: int, *, gather_ms: int = 0) -> None:
        """These lamps (their devices) report at the next step. With `gather_ms`, a concentrator waits that long
        for more of its lamps to change and then sends one report for them all, as a real one batches its
        lamps' answers, rather than one report of its whole cabinet per changed lamp."""
        idx = np.asarray(lamps, dtype=np.int64)
        if len(idx):
            self._report_now(idx, now_ms, gather_ms=gather_ms)

    def _power(self, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """What these lamps draw now (W)."""
        on = self.on[idx]
        p = self.spec.lamp_rated_w[idx].astype(np.float64) * self.dim[idx] / 100.0 * on
        fault = self.fault[idx]
        if self.degradation is not None:
            p = p * self.degradation.power_rise(idx)  # an ageing driver draws more for the same light
        p = np.where(fault == 1, 2.0 * on, p)  # lamp failed: driver idles
        p = np.where(fault >= 2, 0.0, p)  # driver or relay failed: nothing drawn
        return np.where(self.cut[idx], 0.0, p)

    # -- reports ---------------------------------------------------------------------------------------------

    def due_reports(self, now_ms: int) -> list[Report]:
        """Advance to `now_ms` and encode every report that is due; reschedules those devices."""
        self._advance(now_ms)
        out: list[Report] = []
        due_s = np.flatnonzero(self.next_single <= now_ms)
        due_c = np.flatnonzero(self.next_cab <= now_ms)
        if len(due_s) == 0 and len(due_c) == 0:
            return out
        parts = [self.single[due_s]] + [self.cabinet_lamps[int(c)] for c in self.conc_cabinets[due_c].tolist()]
        values = self._values(now_ms, np.concatenate(parts).astype(np.int64))
        for pos in due_s.tolist():
            lamp = int(self.single[pos])
            if self.cut[lamp]:
                if self.gasped[lamp]:
                    continue  # no supply, no radio
                self.gasped[lamp] = True
            out.append(Report(self.topics_single[pos], _encode(self._lamp_obj(lamp, now_ms, values, radio=True)), 1))
        for pos in due_c.tolist():
            cab = int(self.conc_cabinets[pos])
            out.append(self._cabinet_report(cab, pos, now_ms, values))
        self.next_single[due_s] = self._next_times(now_ms, len(due_s))
        self.next_cab[due_c] = self._next_times(now_ms, len(due_c))
        return out

    def _next_times(self, now_ms: int, n: int) -> npt.NDArray[np.int64]:
        # Next report one interval on, ±2 % so devices drift apart rather than marching in lock-step.
        return now_ms + (self.interval_ms * self.rng.uniform(0.98, 1.02, n)).astype(np.int64)

    def _values(self, now_ms: int, idx: npt.NDArray[np.int64]) -> dict[str, npt.NDArray[Any]]:
        """Readings of the lamps `idx` at `now_ms`, in buffers indexed by lamp (other lamps' entries are stale)."""
        n = len(idx)
        ambient = _ambient(now_ms)
        grid = 220.0 + 4.0 * math.sin(now_ms / 3_600_000 * 2 * math.pi / 24)
        power = np.maximum(self.draw[idx] * (1 + self.rng.normal(0, 0.02, n)), 0.0)
        voltage = grid + self.rng.normal(0, 2.0, n)
        b = self._buf
        pf = self.pf[idx]
        deg = self.degradation
        if deg is not None:
            power = np.maximum(power * (1 + deg.ripple(idx) * self.aux.standard_normal(n)), 0.0)
            pf = pf - deg.pf_drop(idx)
            # A report that catches a driver near its end dropped out: off for a moment, drawing nothing.
            b["dropout"][idx] = self.aux.random(n) < np.minimum(deg.dropouts_per_hour(idx) / 40.0, 0.5)
            b["leak"][idx] = deg.leakage_ma(idx) + np.abs(self.aux.normal(0, 0.1, n))
            power = np.where(b["dropout"][idx] > 0, 0.0, power)
        else:
            b["leak"][idx] = 0.3 + np.abs(self.aux.normal(0, 0.1, n))
        b["power"][idx] = power
        b["voltage"][idx] = voltage
        b["pf"][idx] = pf
        b["current"][idx] = np.where(power > 0, power / (voltage * pf), 0.0)
        b["temp"][idx] = ambient + np.where(self.on[idx], 12.0, 2.0) + self.rng.normal(0, 1.0, n)
        lit = self._lit(idx)
        b["dtemp"][idx] = self._driver_temp(idx, now_ms, lit) + self.aux.normal(0, 0.5, n)
        b["energy"][idx] = self._energy(idx, now_ms)
        b["burn"][idx] = self._burned(idx, now_ms)
        return b

    def _lamp_obj(self, lamp: int, now_ms: int, v: dict[str, npt.NDArray[Any]], *, radio: bool) -> dict[str, Any]:
        seq = int(self.lamp_seq[lamp])
        self.lamp_seq[lamp] = 0 if seq >= SEQ_MAX else seq + 1
        fault = int(self.fault[lamp])
        cut = bool(self.cut[lamp])
        on = bool(self.on[lamp]) and fault != 3 and not cut  # a failed relay stays open
        if v["dropout"][lamp]:
            on = False
        obj: dict[str, Any] = {
            "ts": now_ms,
            "seq": seq,
            "on": on,
            "dim": int(self.dim[lamp]),
            "power_w": round(float(v["power"][lamp]), 1),
            "voltage_v": round(float(v["voltage"][lamp]), 1),
            "current_a": round(float(v["current"][lamp]), 3),
            "power_factor": round(float(v["pf"][lamp]), 2),
            "energy_wh": int(v["energy"][lamp]),
            "temp_c": round(float(v["temp"][lamp]), 1),
            "mode": "manual" if self.ovr_until[lamp] != 0 else "auto",
            "faults": [FAULT_CODES[fault - 1]] if fault else [],
        }
        if self.leaking[lamp]:
            obj["faults"].append("leakage_current")
        if cut:
            obj["faults"].append("supply_loss")  # the last gasp
        if radio:
            obj["rssi_dbm"] = int(self.rssi[lamp])
        if self.d4i[lamp]:
            obj["burn_h"] = int(v["burn"][lamp] // 3600)
            obj["starts"] = int(self.starts[lamp])
            obj["driver_temp_c"] = round(float(v["dtemp"][lamp]))  # D4i: whole degrees
        if self.leak_sensor[lamp]:
            obj["leakage_ma"] = round(float(v["leak"][lamp]), 1)
        return obj

    def _cabinet_report(self, cab: int, pos: int, now_ms: int, v: dict[str, npt.NDArray[Any]]) -> Report:
        lamps = self.cabinet_lamps[cab]
        circuits = int(self.spec.cabinet_circuits[cab])
        on = bool(self.on[lamps].any()) if len(lamps) else False
        seq = int(self.cab_seq[cab])
        self.cab_seq[cab] = 0 if seq >= SEQ_MAX else seq + 1
        lamp_objs = []
        for lamp in lamps.tolist():
            if self.cut[lamp]:
                continue  # power-line carrier: a lamp without supply cannot answer its concentrator
            o = self._lamp_obj(lamp, now_ms, v, radio=False)
            o["id"] = self.spec.lamp_id[lamp]
            lamp_objs.append(o)
        total_w = float(v["power"][lamps].sum()) if len(lamps) else 0.0
        per_circuit = round(total_w / 220.0 / circuits, 2)
        cut_circuits = sorted({int(c) for c in self.lamp_circuit[lamps[self.cut[lamps]]].tolist()})
        currents = [0.0 if c + 1 in cut_circuits else per_circuit for c in range(circuits)]
        obj = {
            "ts": now_ms,
            "seq": seq,
            "door_open": False,
            "contactors": [on] * circuits,
            "phase_voltage_v": [round(float(x), 1) for x in 220 + self.rng.normal(0, 1.5, 3)],
            "circuit_current_a": currents,
            "leakage_ma": round(float(self.rng.uniform(2, 8)), 1),
            "energy_wh": int(self.cab_energy[cab] + v["energy"][lamps].sum()),
            "faults": ["circuit_open"] if cut_circuits and on else [],
            "lamps": lamp_objs,
        }
        return Report(self.topics_cab[pos], _encode(obj), len(lamp_objs))

    def status_topics(self) -> list[tuple[str, bytes]]:
        """(topic, device) of every device with its own connection: single lamps and concentrators."""
        s = self.spec
        out = [(device_topic(s.lamp_district[i], "lamp", s.lamp_id[i], "status"), b"") for i in self.single.tolist()]
        out += [
            (device_topic(s.cabinet_district[c], "cabinet", s.cabinet_id[c], "status"), b"")
            for c in self.conc_cabinets.tolist()
        ]
        return out

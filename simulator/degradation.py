"""How simulated lamps wear out before they fail: the precursors a failure forecaster can learn from.

Each mode is a damage variable per lamp that grows from 0 at its onset to 1 at its failure, at a pace drawn per
lamp (a log-normal spread around the mode's median lifetime) and driven by what physically drives it:

- `driver` — the LED driver's electrolytic output capacitor dries out: its ESR rises and its capacitance falls, so
  the driver loses efficiency (more input power at the same dimming level), its power factor falls and its output
  ripples; near the end it drops out and restarts (cycling), then fails (`driver_failure`). Damage accrues only
  while the lamp burns, twice as fast for every 10 °C hotter the driver runs (the Arrhenius rule of thumb for
  electrolytic capacitors): a hot summer ages drivers sooner than a cold winter.
- `water` — water in the luminaire or the pole: the earth leakage current creeps up over days, three times as fast
  on a rainy day, until it passes the 30 mA a residual-current device trips at (`leakage_current`). Only lamps
  with a leakage sensor report the creep; every controller raises the fault.
- `relay` — the switching relay's contacts pit with each switch-on (an LED driver's inrush current): damage per
  switching, and past 70 % the contacts chatter, which the controller counts as extra switch-ons, until the relay
  no longer closes (`relay_failure`).
- `photocell` — a dirty or ageing photocell sees the morning too late: the lamp stays on after its schedule
  switched it off, a little longer each morning up to 14 minutes; at its failure 25, past the 15 minutes the
  backend calls day-burning (`day_burning`).
- `lumen` — the LEDs' light falls (to L70) while the power stays the same: nothing a controller measures changes.
  Only an inspection (or a luminance survey) sees it; the simulator records it in the ground truth, and a forecaster
  that reads electrical data cannot foresee it.

Onsets: lamps enter each mode at random at `Rates` per lamp-year; `start` puts chosen lamps into a mode now (the
demo's and the tests' way). The ground truth — each onset and each failure, with lamp, mode and time — goes to a
JSON-lines file that nothing in the backend reads. Pure numpy, no I/O but that file; its own random generator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["FAULT_OF", "MODES", "Degradation", "Lifetimes", "Rates"]

MODES = ("driver", "water", "relay", "photocell", "lumen")
# The fault each mode ends in: a device fault the controller raises, or the backend's own rule (day_burning).
FAULT_OF = {
    "driver": "driver_failure",
    "water": "leakage_current",
    "relay": "relay_failure",
    "photocell": "day_burning",
    "lumen": None,
}
DAY_MS = 86_400_000
_REF_TEMP_C = 40.0  # the driver temperature at which a driver's median lifetime holds
LEAK_TRIP_MA = 30.0
PHOTOCELL_DRIFT_MIN = 14.0  # minutes of late switch-off just before failure: under the 15 of day-burning …
PHOTOCELL_FAILED_MIN = 25.0  # … and once failed, past it
CHATTER_FROM = 0.7
CYCLING_FROM = 0.85


@dataclass(frozen=True)
class Rates:
    """Lamps per lamp-year that start to degrade in each mode (docs/forecast.md gives the sources)."""

    driver: float = 0.03
    water: float = 0.004
    relay: float = 0.003
    photocell: float = 0.01
    lumen: float = 0.02

    @classmethod
    def zero(cls) -> Rates:
        return cls(0.0, 0.0, 0.0, 0.0, 0.0)

    def of(self, mode: str) -> float:
        return float(getattr(self, mode))


@dataclass(frozen=True)
class Lifetimes:
    """Each mode's median time from onset to failure and its spread (σ of the logarithm): days of burning at
    40 °C for a driver, switchings for a relay (about one a night), days for the rest."""

    driver: tuple[float, float] = (15.0, 0.35)
    water: tuple[float, float] = (20.0, 0.4)
    relay: tuple[float, float] = (40.0, 0.35)
    photocell: tuple[float, float] = (30.0, 0.35)
    lumen: tuple[float, float] = (300.0, 0.3)

    def of(self, mode: str) -> tuple[float, float]:
        median, sigma = getattr(self, mode)
        return float(median), float(sigma)


class Degradation:
    """The degrading lamps among `n` (by index; `lamp_ids` name them in the ground truth)."""

    def __init__(
        self,
        n: int,
        *,
        seed: int = 1,
        rates: Rates | None = None,
        lifetimes: Lifetimes | None = None,
        rain_p: float = 0.2,
        truth: Path | None = None,
        lamp_ids: list[str] | None = None,
    ) -> None:
        self.n = n
        self.rng = np.random.default_rng([seed, 0xDE6])
        self.rates = rates if rates is not None else Rates()
        self.lifetimes = lifetimes if lifetimes is not None else Lifetimes()
        self.rain_p = rain_p
        self.lamp_ids = lamp_ids
        self.mode = np.zeros(n, dtype=np.int8)  # 0 none, else 1 + index into MODES
        self.damage = np.zeros(n)
        self.pace = np.zeros(n)  # damage per unit of the mode's driver (a day, a switching)
        self.onset_ms = np.zeros(n, dtype=np.int64)
        self.failed_ms = np.zeros(n, dtype=np.int64)  # 0: not (yet)
        self.base_leak = self.rng.uniform(0.2, 0.8, n)  # a healthy installation's leakage, mA
        self.raining = False
        self._day = -1
        self.truth = truth
        self.events: list[dict[str, Any]] = []  # the ground truth, also kept here

    # -- who degrades ---------------------------------------------------------------------------------------

    def start(self, lamps: npt.ArrayLike, mode: str, now_ms: int, *, lifetime: float | None = None) -> None:
        """Put these lamps into `mode` now, each with a lifetime drawn around the mode's median (or `lifetime`, in
        the mode's units, for all of them)."""
        if mode not in MODES:
            raise ValueError(f"unknown degradation mode {mode!r}; known: {', '.join(MODES)}")
        idx = np.asarray(lamps, dtype=np.int64)
        if lifetime is not None and lifetime <= 0:
            raise ValueError(f"a lifetime must be positive, got {lifetime}")
        median, sigma = self.lifetimes.of(mode)
        life = np.full(len(idx), lifetime) if lifetime is not None else median * self.rng.lognormal(0, sigma, len(idx))
        self.mode[idx] = MODES.index(mode) + 1
        self.damage[idx] = 0.0
        self.pace[idx] = 1.0 / life
        self.onset_ms[idx] = now_ms
        self.failed_ms[idx] = 0
        for i, days in zip(idx.tolist(), life.tolist(), strict=True):
            self._record({"event": "onset", "lamp": self._name(i), "mode": mode, "ts": now_ms, "lifetime": days})

    def of(self, mode: str) -> npt.NDArray[np.bool_]:
        found: npt.NDArray[np.bool_] = self.mode == MODES.index(mode) + 1
        return found

    def level(self, mode: str, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """Damage of these lamps in `mode` (0 for lamps in another mode or none)."""
        return np.where(self.mode[idx] == MODES.index(mode) + 1, self.damage[idx], 0.0)

    # -- time passes ----------------------------------------------------------------------------------------

    def advance(
        self,
        now_ms: int,
        dt_ms: int,
        *,
        burning: npt.NDArray[Any],
        driver_temp_c: npt.NDArray[np.float64] | float,
        healthy: npt.NDArray[np.bool_],
    ) -> dict[str, npt.NDArray[np.int64]]:
        """`dt_ms` more of wear, ending at `now_ms`; new onsets among `healthy` lamps (no fault, no mode yet).
        `burning`: per lamp, whether it burned (or the share of `dt_ms` it did). Returns the lamps that failed in
        this step, by mode."""
        day = now_ms // DAY_MS
        if day != self._day:
            self._day = day
            self.raining = bool(self.rng.random() < self.rain_p)
        if dt_ms <= 0:
            return {}
        days = dt_ms / DAY_MS
        for name in MODES:
            rate = self.rates.of(name)
            if rate <= 0:
                continue
            count = self.rng.binomial(self.n, min(rate * days / 365.0, 1.0))
            if count:
                drawn = np.unique(self.rng.integers(0, self.n, count))
                drawn = drawn[(self.mode[drawn] == 0) & healthy[drawn]]
                if len(drawn):
                    self.start(drawn, name, now_ms)
        active = np.flatnonzero((self.mode > 0) & (self.failed_ms == 0))
        if len(active) == 0:
            return {}
        mode = self.mode[active]
        temp = np.broadcast_to(np.asarray(driver_temp_c, dtype=np.float64), (self.n,))[active]
        step = np.zeros(len(active))
        driver = mode == MODES.index("driver") + 1
        step[driver] = days * burning[active][driver] * 2.0 ** ((temp[driver] - _REF_TEMP_C) / 10.0)
        water = mode == MODES.index("water") + 1
        step[water] = days * (3.0 if self.raining else 1.0)
        timed = (mode == MODES.index("photocell") + 1) | (mode == MODES.index("lumen") + 1)
        step[timed] = days
        self.damage[active] += step * self.pace[active]
        return self._failures(active, now_ms)

    def switched_on(self, lamps: npt.NDArray[np.int64], now_ms: int) -> dict[str, npt.NDArray[np.int64]]:
        """These lamps' relays closed once more: relay wear. Returns the relays that failed."""
        relay = lamps[(self.mode[lamps] == MODES.index("relay") + 1) & (self.failed_ms[lamps] == 0)]
        if len(relay) == 0:
            return {}
        self.damage[relay] += self.pace[relay]
        return self._failures(relay, now_ms)

    def _failures(self, idx: npt.NDArray[np.int64], now_ms: int) -> dict[str, npt.NDArray[np.int64]]:
        done = idx[self.damage[idx] >= 1.0]
        if len(done) == 0:
            return {}
        self.failed_ms[done] = now_ms
        out: dict[str, npt.NDArray[np.int64]] = {}
        for k, mode in enumerate(MODES):
            lamps = done[self.mode[done] == k + 1]
            if len(lamps):
                out[mode] = lamps
                for i in lamps.tolist():
                    self._record(
                        {"event": "failure", "lamp": self._name(i), "mode": mode, "ts": now_ms, "fault": FAULT_OF[mode]}
                    )
        return out

    # -- what the lamps show --------------------------------------------------------------------------------

    def power_rise(self, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """How much the power is above what a healthy driver draws at the same level (a multiplier)."""
        return 1.0 + 0.15 * np.minimum(self.level("driver", idx), 1.0) ** 2

    def pf_drop(self, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        return 0.12 * np.minimum(self.level("driver", idx), 1.0) ** 1.5

    def ripple(self, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """Extra relative noise on the power reading."""
        return 0.10 * np.minimum(self.level("driver", idx), 1.0) ** 3

    def driver_heat(self, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """Degrees the ageing driver runs hotter."""
        return 10.0 * np.minimum(self.level("driver", idx), 1.0)

    def dropouts_per_hour(self, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """How often a driver near its end drops out and restarts while on."""
        d = self.level("driver", idx)
        return np.where((d >= CYCLING_FROM) & (d < 1.0), 20.0 * (d - CYCLING_FROM) / (1.0 - CYCLING_FROM), 0.0)

    def leakage_ma(self, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        d = np.minimum(self.level("water", idx), 1.2)
        return self.base_leak[idx] + LEAK_TRIP_MA * d**2

    def chatter(self, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """Mean extra switch-ons counted at each switching (contact bounce of a worn relay)."""
        d = self.level("relay", idx)
        return np.where(d >= CHATTER_FROM, 6.0 * (d - CHATTER_FROM) / (1.0 - CHATTER_FROM), 0.0)

    def late_off_ms(self, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """How long after its schedule switches it off a lamp's drifting photocell keeps it on: creeping up to 14
        minutes, then (failed) 25, which the backend's day-burning rule (15) sees."""
        d = self.level("photocell", idx)
        minutes = np.where(d >= 1.0, PHOTOCELL_FAILED_MIN, np.minimum(d, 1.0) * PHOTOCELL_DRIFT_MIN)
        return (minutes * 60_000).astype(np.int64)

    # -- the ground truth -----------------------------------------------------------------------------------

    def _name(self, i: int) -> str | int:
        return self.lamp_ids[i] if self.lamp_ids is not None else i

    def _record(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        if self.truth is not None:  # rare (a lamp's onset and its failure): opened for each, nothing held open
            with self.truth.open("a", encoding="utf-8") as f:
                f.write(json.dumps(event) + "\n")

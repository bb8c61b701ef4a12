"""The lighting rate (亮灯率) exactly as DOMAIN.md defines it, for the city and every grouping at once.

Pure numpy: `conditions` classifies every lamp (off, lit, dark, unknown, day-burning, excluded) from its latest
report and its expected state; `breakdown` counts them per city, district, road class, road and cabinet with
two `bincount`s over the fleet; `road_verdicts` applies the per-road inspection rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from telemetry.expected import ExpectedState
from telemetry.fleet import OUTPUT_FAULT_MASK, ROAD_CLASSES, FleetIndex, FleetState

__all__ = [
    "CONDITIONS",
    "Breakdown",
    "Counts",
    "breakdown",
    "class_target",
    "conditions",
    "rate_of",
    "road_verdicts",
]

OFF, LIT, DARK, UNKNOWN, DAY_BURNING, EXCLUDED = range(6)
CONDITIONS = ("off", "lit", "dark", "unknown", "day_burning", "excluded")
_K = len(CONDITIONS)

CITY_TARGET = 98.0
_CLASS_TARGET = {"expressway": 98.0, "arterial": 98.0, "secondary": 96.0, "branch": 96.0}
# Per-road assessment: roads of 200+ lamps need this rate; shorter ones a cap on dark lamps by size.
_ROAD_RULE_RATE = {"expressway": 97.0, "arterial": 97.0, "secondary": 97.0, "branch": 95.0}
_DARK_CAPS = ((150, 4), (100, 3), (0, 2))
MIN_POWER_SHARE = 0.2  # a lamp drawing under 20 % of rated × dim is not lit
FRESH_GRACE_MS = 60_000


def class_target(road_class: str) -> float:
    return _CLASS_TARGET[road_class]


def conditions(index: FleetIndex, state: FleetState, expected: ExpectedState) -> npt.NDArray[np.int8]:
    """Each lamp's condition at `expected.ts_ms` (one of the CONDITIONS, as its position)."""
    now = expected.ts_ms
    window = 2 * index.interval_s.astype(np.int64) * 1000 + FRESH_GRACE_MS
    fresh = (state.ts_ms > 0) & (state.ts_ms >= now - window)
    with np.errstate(invalid="ignore"):
        underpowered = state.power_w < MIN_POWER_SHARE * index.rated_w * state.dim / 100.0  # NaN power: False
    lit = state.on & (state.dim > 0) & ((state.faults & OUTPUT_FAULT_MASK) == 0) & ~underpowered
    cond = np.full(index.n, OFF, dtype=np.int8)
    due = expected.due
    cond[due & fresh & lit] = LIT
    cond[due & fresh & ~lit] = DARK
    cond[due & ~fresh] = UNKNOWN
    cond[~due & fresh & state.on] = DAY_BURNING
    cond[expected.excluded] = EXCLUDED
    return cond


def rate_of(due: npt.ArrayLike, lit: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """lit / due × 100, two decimals; NaN where nothing is due."""
    d = np.asarray(due, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        share: npt.NDArray[np.float64] = np.where(d > 0, np.asarray(lit, dtype=np.float64) * 100.0 / d, np.nan)
    return np.round(share, 2)


@dataclass(frozen=True)
class Counts:
    """Per group, counts of each condition: shape (groups, 6) in CONDITIONS order."""

    keys: list[str]
    by_condition: npt.NDArray[np.int64]
    target: npt.NDArray[np.float64]

    @property
    def lit(self) -> npt.NDArray[np.int64]:
        return self.by_condition[:, LIT]

    @property
    def dark(self) -> npt.NDArray[np.int64]:
        return self.by_condition[:, DARK]

    @property
    def unknown(self) -> npt.NDArray[np.int64]:
        return self.by_condition[:, UNKNOWN]

    @property
    def day_burning(self) -> npt.NDArray[np.int64]:
        return self.by_condition[:, DAY_BURNING]

    @property
    def due(self) -> npt.NDArray[np.int64]:
        c = self.by_condition
        return c[:, LIT] + c[:, DARK] + c[:, UNKNOWN]

    @property
    def rate(self) -> npt.NDArray[np.float64]:
        return rate_of(self.due, self.lit)

    def rows(self) -> list[dict[str, object]]:
        """JSON-ready rows: key, due, lit, dark, unknown, day_burning, rate (None when nothing is due), target."""
        due, rate = self.due, self.rate
        out = []
        for i, key in enumerate(self.keys):
            r = None if np.isnan(rate[i]) else float(rate[i])
            out.append(
                {
                    "key": key,
                    "due": int(due[i]),
                    "lit": int(self.lit[i]),
                    "dark": int(self.dark[i]),
                    "unknown": int(self.unknown[i]),
                    "day_burning": int(self.day_burning[i]),
                    "rate": r,
                    "target": float(self.target[i]),
                    "meets_target": None if r is None else r >= float(self.target[i]),
                }
            )
        return out


@dataclass(frozen=True)
class Breakdown:
    ts_ms: int
    city: Counts
    district: Counts
    road_class: Counts
    road: Counts
    cabinet: Counts
    integrity: float | None  # facility integrity rate, percent

    def grouping(self, name: str) -> Counts:
        return {"district": self.district, "road_class": self.road_class, "road": self.road, "cabinet": self.cabinet}[
            name
        ]


def breakdown(index: FleetIndex, state: FleetState, expected: ExpectedState) -> Breakdown:
    """Counts for the city and every grouping, and the facility integrity rate."""
    cond = conditions(index, state, expected)
    roads = len(index.road_ids)
    cabinets = len(index.cabinet_ids)
    by_road = np.bincount(index.lamp_road * _K + cond, minlength=roads * _K).reshape(roads, _K)
    by_cabinet = np.bincount(index.lamp_cabinet * _K + cond, minlength=cabinets * _K).reshape(cabinets, _K)
    by_district = np.zeros((len(index.districts), _K), dtype=np.int64)
    np.add.at(by_district, index.road_district, by_road)
    by_class = np.zeros((len(ROAD_CLASSES), _K), dtype=np.int64)
    np.add.at(by_class, index.road_class, by_road)
    city = by_road.sum(axis=0, keepdims=True)
    road_target = np.array([_CLASS_TARGET[ROAD_CLASSES[c]] for c in index.road_class], dtype=np.float64)
    in_service = int(index.in_service.sum())
    # Interim until tickets exist: a lamp has an open fault when it reports any fault code or is dark.
    faulty = int(np.count_nonzero(index.in_service & ((state.faults != 0) | (cond == DARK))))
    integrity = round((in_service - faulty) * 100.0 / in_service, 2) if in_service else None
    return Breakdown(
        ts_ms=expected.ts_ms,
        city=Counts(["all"], city, np.array([CITY_TARGET])),
        district=Counts(list(index.districts), by_district, np.full(len(index.districts), CITY_TARGET)),
        road_class=Counts(list(ROAD_CLASSES), by_class, np.array([_CLASS_TARGET[c] for c in ROAD_CLASSES])),
        road=Counts([str(r) for r in index.road_ids], by_road, road_target),
        cabinet=Counts(list(index.cabinet_ids), by_cabinet, road_target[index.cabinet_road]),
        integrity=integrity,
    )


def road_verdicts(index: FleetIndex, roads: Counts) -> list[dict[str, object]]:
    """The inspectors' per-road assessment: 200+ lamps by rate, shorter roads by a cap on dark lamps.

    A road's size is its lamps in service; a road with nothing due has no verdict (`passes` None).
    """
    out = []
    due, rate, dark = roads.due, roads.rate, roads.dark
    for i, key in enumerate(roads.keys):
        cls = ROAD_CLASSES[int(index.road_class[i])]
        size = int(index.road_size[i])
        if size >= 200:
            rule, limit = "rate", _ROAD_RULE_RATE[cls]
            passes = None if due[i] == 0 else bool(rate[i] >= limit)
        else:
            rule = "dark_cap"
            limit = float(next(cap for floor, cap in _DARK_CAPS if size >= floor))
            passes = None if due[i] == 0 else bool(dark[i] <= limit)
        out.append(
            {
                "road": key,
                "road_class": cls,
                "lamps": size,
                "due": int(due[i]),
                "dark": int(dark[i]),
                "rate": None if np.isnan(rate[i]) else float(rate[i]),
                "rule": rule,
                "limit": limit,
                "passes": passes,
            }
        )
    return out

"""The lighting rate (亮灯率) exactly as docs/domain.md defines it, for the city and every grouping at once.

Pure numpy: `conditions` classifies every lamp (off, lit, dark, unknown, day-burning, excluded) from its latest
report and its expected state; `breakdown` counts them per city, district, road class, road and cabinet with
two `bincount`s over the fleet; `road_verdicts` applies the per-road inspection rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from inventory.index import ROAD_CLASSES, FleetIndex
from lighting.expected import ExpectedState
from telemetry.fleet import FleetState

__all__ = [
    "CONDITIONS",
    "DARK",
    "DAY_BURNING",
    "EXCLUDED",
    "LIT",
    "OFF",
    "UNKNOWN",
    "Breakdown",
    "Counts",
    "RoadVerdicts",
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
_CLASS_TARGETS = np.array([_CLASS_TARGET[c] for c in ROAD_CLASSES])
# Per-road assessment: roads of 200+ lamps need this rate; shorter ones a cap on dark lamps by size.
_ROAD_RULE_RATE = {"expressway": 97.0, "arterial": 97.0, "secondary": 97.0, "branch": 95.0}


def _condition_table() -> npt.NDArray[np.int8]:
    """Condition by a 5-bit key: excluded, due, fresh, lit report, on (high to low)."""
    table = np.empty(32, dtype=np.int8)
    for key in range(32):
        excluded, due, fresh, lit, on = (bool(key >> b & 1) for b in (4, 3, 2, 1, 0))
        if excluded:
            table[key] = EXCLUDED
        elif due:
            table[key] = (LIT if lit else DARK) if fresh else UNKNOWN
        else:
            table[key] = DAY_BURNING if fresh and on else OFF
    return table


_TABLE = _condition_table()


def class_target(road_class: str) -> float:
    return _CLASS_TARGET[road_class]


def conditions(index: FleetIndex, state: FleetState, expected: ExpectedState) -> npt.NDArray[np.int8]:
    """Each lamp's condition at `expected.ts_ms` (one of the CONDITIONS, as its position).

    lit: due, fresh, and the report shows light (see FleetState.lit_report); dark: due, fresh, not lit;
    unknown: due, not fresh; day-burning: not due, fresh, on; excluded: out of service or inside a window.
    """
    fresh = state.fresh_until >= expected.ts_ms
    key = expected.excluded.view(np.uint8) << 4
    key |= expected.due.view(np.uint8) << 3
    key |= fresh.view(np.uint8) << 2
    key |= state.lit_report.view(np.uint8) << 1
    key |= state.on.view(np.uint8)
    cond: npt.NDArray[np.int8] = np.take(_TABLE, key)
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

    def within(self, index: FleetIndex, district: int) -> Breakdown:
        """The same figures for one district (its position in `index.districts`): the district as the whole,
        and its road classes, roads and cabinets as the groups."""
        roads = index.road_district == district
        cabinets = roads[index.cabinet_road]
        classes = _fold(self.road.by_condition[roads], index.road_class[roads], len(ROAD_CLASSES))

        def subset(c: Counts, keep: npt.NDArray[np.bool_]) -> Counts:
            return Counts(
                [k for k, ok in zip(c.keys, keep.tolist(), strict=True) if ok], c.by_condition[keep], c.target[keep]
            )

        one = np.arange(len(index.districts)) == district
        return Breakdown(
            ts_ms=self.ts_ms,
            city=subset(self.district, one),
            district=subset(self.district, one),
            road_class=Counts(list(ROAD_CLASSES), classes, _CLASS_TARGETS),
            road=subset(self.road, roads),
            cabinet=subset(self.cabinet, cabinets),
            integrity=None,
        )


def _fold(counts: npt.NDArray[np.int64], into: npt.NDArray[Any], groups: int) -> npt.NDArray[np.int64]:
    """Sum the rows of `counts` (shape (rows, K)) into `groups` rows by the group of each row (`into`)."""
    keys = (into.astype(np.intp)[:, None] * _K + np.arange(_K)).ravel()
    summed = np.bincount(keys, weights=counts.ravel(), minlength=groups * _K)  # exact: counts < 2**53
    return summed.astype(np.int64).reshape(groups, _K)


def breakdown(index: FleetIndex, state: FleetState, expected: ExpectedState) -> Breakdown:
    """Counts for the city and every grouping, and the facility integrity rate."""
    cond = conditions(index, state, expected)
    roads = len(index.road_ids)
    cabinets = len(index.cabinet_ids)
    segments = len(index.segment_road)
    by_segment = np.bincount(index.segment_key(_K) + cond, minlength=segments * _K).reshape(segments, _K)
    by_road = _fold(by_segment, index.segment_road, roads)
    by_cabinet = _fold(by_segment, index.segment_cabinet, cabinets)
    by_district = _fold(by_road, index.road_district, len(index.districts))
    by_class = _fold(by_road, index.road_class, len(ROAD_CLASSES))
    city = by_road.sum(axis=0, keepdims=True)
    road_target = _CLASS_TARGETS[index.road_class]
    in_service = int(index.in_service.sum())
    # Interim until tickets exist: a lamp has an open fault when it reports any fault code or is dark.
    faulty = int(np.count_nonzero(index.in_service & (state.faulted | (cond == DARK))))
    integrity = round((in_service - faulty) * 100.0 / in_service, 2) if in_service else None
    return Breakdown(
        ts_ms=expected.ts_ms,
        city=Counts(["all"], city, np.array([CITY_TARGET])),
        district=Counts(index.districts, by_district, np.full(len(index.districts), CITY_TARGET)),
        road_class=Counts(list(ROAD_CLASSES), by_class, _CLASS_TARGETS),
        road=Counts(index.road_keys, by_road, road_target),
        cabinet=Counts(index.cabinet_ids, by_cabinet, road_target[index.cabinet_road]),
        integrity=integrity,
    )


@dataclass(frozen=True)
class RoadVerdicts:
    """The inspectors' per-road assessment, column-wise. `passes` is 1, 0, or −1 where nothing is due."""

    index: FleetIndex
    roads: Counts
    rule_is_rate: npt.NDArray[np.bool_]
    limit: npt.NDArray[np.float64]
    passes: npt.NDArray[np.int8]

    def rows(self) -> list[dict[str, object]]:
        ix, due, dark, rate = self.index, self.roads.due, self.roads.dark, self.roads.rate
        return [
            {
                "road": key,
                "road_class": ROAD_CLASSES[int(ix.road_class[i])],
                "lamps": int(ix.road_size[i]),
                "due": int(due[i]),
                "dark": int(dark[i]),
                "rate": None if np.isnan(rate[i]) else float(rate[i]),
                "rule": "rate" if self.rule_is_rate[i] else "dark_cap",
                "limit": float(self.limit[i]),
                "passes": None if self.passes[i] < 0 else bool(self.passes[i]),
            }
            for i, key in enumerate(self.roads.keys)
        ]


def road_verdicts(index: FleetIndex, roads: Counts) -> RoadVerdicts:
    """Roads of 200+ lamps in service pass on their rate (97 %, branch roads 95 %); shorter ones on a cap of
    dark lamps (4 for 150–199 lamps, 3 for 100–149, 2 below). A road with nothing due has no verdict."""
    size = index.road_size
    rule_is_rate = size >= 200
    rate_limit = np.array([_ROAD_RULE_RATE[c] for c in ROAD_CLASSES])[index.road_class]
    cap = np.select([size >= 150, size >= 100], [4.0, 3.0], 2.0)
    limit = np.where(rule_is_rate, rate_limit, cap)
    with np.errstate(invalid="ignore"):
        ok = np.where(rule_is_rate, roads.rate >= limit, roads.dark <= limit)
    passes = np.where(roads.due > 0, ok, -1).astype(np.int8)
    return RoadVerdicts(index, roads, rule_is_rate, limit, passes)

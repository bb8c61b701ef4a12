"""The inventory in memory, column-wise: arrays indexed by lamp (its slot), with the small per-district, per-road
and per-cabinet arrays they point into. Built once from PostgreSQL (`load_index`) or from a generated city in the
benchmarks; every room that counts over the fleet (lighting, alerts, energy, commands' targets, the map) reads it.
Pure numpy beyond the loader, which takes an open connection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import psycopg

from inventory.city import ROAD_CLASSES
from kernel.binary import binary_rows

__all__ = ["FRESH_GRACE_MS", "ROAD_CLASSES", "FleetIndex", "load_index"]

# A report stays fresh for two reporting intervals plus this (docs/domain.md).
FRESH_GRACE_MS = 60_000


@dataclass
class FleetIndex:
    """The inventory, column-wise, lamps in `no` order. Group keys index the small per-group arrays."""

    lamp_id: list[str]
    lamp_no: npt.NDArray[np.int32]
    lat: npt.NDArray[np.float64]
    lon: npt.NDArray[np.float64]
    rated_w: npt.NDArray[np.float32]
    in_service: npt.NDArray[np.bool_]
    interval_s: npt.NDArray[np.int32]
    lamp_district: npt.NDArray[np.int16]  # → districts
    lamp_road: npt.NDArray[np.int32]  # → road_ids
    lamp_cabinet: npt.NDArray[np.int32]  # → cabinet_ids
    districts: list[str]
    road_ids: npt.NDArray[np.int32]
    road_class: npt.NDArray[np.int8]  # → ROAD_CLASSES
    road_district: npt.NDArray[np.int16]
    cabinet_ids: list[str]
    cabinet_road: npt.NDArray[np.int32]  # → road_ids
    # Optional detail (defaults when absent): circuit of each lamp, whether it has its own controller (single)
    # rather than reporting through its cabinet's concentrator, each cabinet's number and concentrator flag.
    lamp_circuit: npt.NDArray[np.int8] | None = None
    lamp_single: npt.NDArray[np.bool_] | None = None
    cabinet_no: npt.NDArray[np.int32] | None = None
    cabinet_concentrator: npt.NDArray[np.bool_] | None = None

    def __post_init__(self) -> None:
        self.n = len(self.lamp_id)
        cabinets = len(self.cabinet_ids)
        if self.lamp_circuit is None:
            self.lamp_circuit = np.ones(self.n, dtype=np.int8)
        if self.lamp_single is None:
            self.lamp_single = np.ones(self.n, dtype=np.bool_)
        if self.cabinet_no is None:
            self.cabinet_no = np.arange(1, cabinets + 1, dtype=np.int32)
        if self.cabinet_concentrator is None:
            self.cabinet_concentrator = np.zeros(cabinets, dtype=np.bool_)
        self.cabinet_slot_of_no = {int(no): i for i, no in enumerate(self.cabinet_no.tolist())}
        # A concentrator reports as often as its lamps do; the slowest of them sets its freshness.
        interval = np.zeros(cabinets, dtype=np.int64)
        np.maximum.at(interval, self.lamp_cabinet, self.interval_s.astype(np.int64))
        self.cabinet_interval_ms = np.where(interval > 0, interval, 300) * 1000
        self._by_cabinet = np.argsort(self.lamp_cabinet, kind="stable")
        self._cabinet_bounds = np.searchsorted(self.lamp_cabinet[self._by_cabinet], np.arange(cabinets + 1))
        self.cabinet_stale_ms = self.cabinet_interval_ms * 2 + FRESH_GRACE_MS
        top = int(self.lamp_no.max()) if self.n else 0
        self.slot_of_no = np.full(top + 1, -1, dtype=np.int32)
        self.slot_of_no[self.lamp_no] = np.arange(self.n, dtype=np.int32)
        self.lamp_class = self.road_class[self.lamp_road]
        self.slot_of_id = {lamp: i for i, lamp in enumerate(self.lamp_id)}
        self.district_of = {d: i for i, d in enumerate(self.districts)}
        self.road_of = {int(r): i for i, r in enumerate(self.road_ids)}
        self.road_keys = [str(r) for r in self.road_ids.tolist()]
        self.cabinet_of = {c: i for i, c in enumerate(self.cabinet_ids)}
        # Lamps per road in service: the size class of the per-road assessment.
        self.road_size = np.bincount(self.lamp_road[self.in_service], minlength=len(self.road_ids))
        # A report stays fresh for two reporting intervals plus a minute (docs/domain.md).
        self.stale_ms = self.interval_s.astype(np.int64) * 2000 + FRESH_GRACE_MS
        # Segments: distinct (cabinet, road) pairs. Counting per segment once, then folding segments into roads
        # and cabinets, costs one pass over the fleet instead of two.
        pair = self.lamp_cabinet.astype(np.int64) * max(len(self.road_ids), 1) + self.lamp_road
        pairs, seg = np.unique(pair, return_inverse=True)
        self.lamp_segment = seg.astype(np.intp).reshape(-1)
        self.segment_cabinet = (pairs // max(len(self.road_ids), 1)).astype(np.intp)
        self.segment_road = (pairs % max(len(self.road_ids), 1)).astype(np.intp)
        self._segment_keys: dict[int, npt.NDArray[np.intp]] = {}

    def segment_key(self, k: int) -> npt.NDArray[np.intp]:
        """lamp_segment × k, kept: the base of a per-segment bincount over k categories."""
        key = self._segment_keys.get(k)
        if key is None:
            key = self._segment_keys[k] = self.lamp_segment * k
        return key

    def lamps_of_cabinet(self, cabinet: int) -> npt.NDArray[np.intp]:
        """Slots of the lamps behind one cabinet, in lamp order."""
        lo, hi = self._cabinet_bounds[cabinet], self._cabinet_bounds[cabinet + 1]
        lamps: npt.NDArray[np.intp] = self._by_cabinet[lo:hi]
        return lamps

    def slots(self, lamp_no: npt.ArrayLike) -> npt.NDArray[np.int32]:
        """Lamp numbers → slots (−1 for numbers not in this index)."""
        nos = np.asarray(lamp_no, dtype=np.int64)
        out = np.full(nos.shape, -1, dtype=np.int32)
        ok = (nos >= 0) & (nos < len(self.slot_of_no))
        out[ok] = self.slot_of_no[nos[ok]]
        return out


# The lamps' numeric columns in binary COPY, read straight into arrays: a city of a million lamps as Python rows
# took several hundred MB of small objects that the process kept after they were freed. Districts, roads and
# cabinets come as their positions in the lists load_index builds (same orders).
_INDEX_COPY = """
COPY (
    SELECT l.no, l.lat, l.lon, l.rated_w, l.in_service, l.report_interval_s, d.i::int2, r.i::int4, c.i::int4,
           l.circuit, l.controller = 'single'
    FROM lamps l
    JOIN (SELECT code, row_number() OVER (ORDER BY code) - 1 AS i FROM districts) d ON d.code = l.district
    JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS i FROM roads) r ON r.id = l.road_id
    JOIN (SELECT id, row_number() OVER (ORDER BY no) - 1 AS i FROM cabinets) c ON c.id = l.cabinet_id
    ORDER BY l.no
) TO STDOUT (FORMAT BINARY)
"""
_INDEX_ROW = [
    ("no", ">i4"),
    ("lat", ">f8"),
    ("lon", ">f8"),
    ("w", ">f4"),
    ("svc", "u1"),
    ("iv", ">i4"),
    ("d", ">i2"),
    ("r", ">i4"),
    ("c", ">i4"),
    ("ci", ">i2"),
    ("s", "u1"),
]


def _read_all(cp: psycopg.Copy) -> bytearray:
    """A COPY's output in one buffer, grown in place (a list of its chunks joined would hold it twice)."""
    out = bytearray()
    for chunk in cp:
        out += chunk
    return out


def load_index(conn: psycopg.Connection) -> FleetIndex:
    """The inventory from PostgreSQL."""
    districts = [r[0] for r in conn.execute("SELECT code FROM districts ORDER BY code")]
    district_of = {d: i for i, d in enumerate(districts)}
    roads = conn.execute("SELECT id, road_class, district FROM roads ORDER BY id").fetchall()
    road_ids = np.array([r[0] for r in roads], dtype=np.int32)
    road_of = {int(r): i for i, r in enumerate(road_ids)}
    cabinets = conn.execute("SELECT id, road_id, no, concentrator FROM cabinets ORDER BY no").fetchall()
    with conn.cursor() as cur:
        with cur.copy("COPY (SELECT id FROM lamps ORDER BY no) TO STDOUT") as cp:
            lamp_id = _read_all(cp).decode().split("\n")[:-1]
        with cur.copy(_INDEX_COPY) as cp:
            raw = _read_all(cp)
    cols = binary_rows(raw, _INDEX_ROW)
    return FleetIndex(
        lamp_id=lamp_id,
        lamp_no=cols["no"].astype(np.int32),
        lat=cols["lat"].astype(np.float64),
        lon=cols["lon"].astype(np.float64),
        rated_w=cols["w"].astype(np.float32),
        in_service=cols["svc"].astype(np.bool_),
        interval_s=cols["iv"].astype(np.int32),
        lamp_district=cols["d"].astype(np.int16),
        lamp_road=cols["r"].astype(np.int32),
        lamp_cabinet=cols["c"].astype(np.int32),
        districts=districts,
        road_ids=road_ids,
        road_class=np.array([ROAD_CLASSES.index(r[1]) for r in roads], dtype=np.int8),
        road_district=np.array([district_of[r[2]] for r in roads], dtype=np.int16),
        cabinet_ids=[c[0] for c in cabinets],
        cabinet_road=np.array([road_of[c[1]] for c in cabinets], dtype=np.int32),
        lamp_circuit=cols["ci"].astype(np.int8),
        lamp_single=cols["s"].astype(np.bool_),
        cabinet_no=np.array([c[2] for c in cabinets], dtype=np.int32),
        cabinet_concentrator=np.array([c[3] for c in cabinets], dtype=np.bool_),
    )

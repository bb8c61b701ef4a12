"""Deterministic city inventory: districts → streets → cabinets → circuits → lamps, Xining by default.

The streets follow the valleys: along each district's river run two riverside avenues and an expressway, and a
grid of arterial, secondary and branch roads (a block of about 220 m) fills the built-up area around the centre,
which grows along the valley with the number of lamps. Lamps stand 25-40 m apart by road class, on one side of a
branch road and on both sides of the others; each cabinet feeds the lamps of a few neighbouring blocks. The rivers
and the districts' territories are fixed (`seeds.geography`).

Same `lamps` and `seed` give the same inventory, byte for byte, on any machine (numpy's PCG64 generator).
Pure: returns columns (`inventory.city.Inventory`); `inventory.loader` writes them to PostgreSQL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import numpy.typing as npt

from inventory.city import ROAD_CLASSES, Inventory
from seeds.errors import SeedError
from seeds.geography import (
    RIVERS,
    Points,
    Proximity,
    arc_lengths,
    courses,
    inside,
    offset_polyline,
    resample,
    territories,
    to_latlon,
    to_xy,
)

__all__ = ["DISTRICTS", "ROAD_CLASSES", "District", "generate"]

DEFAULT_LAMPS = 110_000


@dataclass(frozen=True)
class District:
    code: str
    name_zh: str
    name_en: str
    lat: float
    lon: float
    weight: float  # share of the city's lamps
    river: str  # the river whose valley its main roads follow
    power_km: float  # weight in the power diagram that draws the borders: larger pushes the border out
    reach_km: float  # the territory's outer limit, about this far from the centre


# Xining's four urban districts, Huangzhong district and the two counties; centres approximate.
DISTRICTS: tuple[District, ...] = (
    District("cd", "城东区", "Chengdong", 36.612, 101.820, 0.17, "huangshui", 5.0, 11.0),
    District("cz", "城中区", "Chengzhong", 36.598, 101.772, 0.15, "nanchuan", 4.5, 11.0),
    District("cx", "城西区", "Chengxi", 36.630, 101.735, 0.16, "huangshui", 5.0, 10.0),
    District("cb", "城北区", "Chengbei", 36.672, 101.758, 0.16, "beichuan", 5.5, 12.0),
    District("hz", "湟中区", "Huangzhong", 36.500, 101.570, 0.16, "nanchuan", 13.0, 24.0),
    District("dt", "大通县", "Datong", 36.930, 101.685, 0.11, "beichuan", 14.0, 24.0),
    District("hy", "湟源县", "Huangyuan", 36.682, 101.256, 0.09, "huangshui", 12.0, 20.0),
)

_EXPRESSWAY, _ARTERIAL, _SECONDARY, _BRANCH = range(4)
# Pole spacing (m) and the poles' offsets from the centreline (m; one offset is one side of the road).
_CLASS_SPACING_M = (40.0, 35.0, 30.0, 25.0)
_CLASS_SIDES_M = ((-18.0, 18.0), (-15.0, 15.0), (-10.0, 10.0), (6.0,))
# How far out of town a class is lit: the built-up area is the lamps nearest the centre by distance × this.
_CLASS_REACH = (0.55, 0.75, 1.0, 1.08)
# Rated power (W) choices per class for LED and for high-pressure sodium.
_LED_W = ((200, 250), (150, 200), (100, 120), (60, 80))
_HPS_W = ((250, 400), (250, 250), (150, 150), (100, 100))
_CLASS_SUFFIX_ZH = ("快速路", "大道", "路", "街")
_CLASS_SUFFIX_EN = ("Expressway", "Avenue", "Road", "Street")

_BLOCK_M = 220.0  # grid pitch: every line a branch road, every second a secondary, every sixth an arterial
_ELONGATION = 1.6  # the built-up area is this much longer along the valley than across it
_AVENUE_M = 90.0  # riverside avenues, each side of the river
_EXPRESSWAY_M = 700.0  # the valley's expressway, on one side of the river
_RIVER_CLEAR_M = 150.0  # no grid road runs closer to a river than this (cross streets that bridge it excepted)
_LAMPS_PER_KM2 = 500.0  # roughly, at the standard block: a first guess at the built-up area
_MIN_REMOTE = 30  # the fewest lamps a cabinet of its own feeds on a stretch of road out of town

_NAMES = (
    ("昆仑", "Kunlun"),
    ("海湖", "Haihu"),
    ("五四", "Wusi"),
    ("长江", "Changjiang"),
    ("黄河", "Huanghe"),
    ("祁连", "Qilian"),
    ("湟水", "Huangshui"),
    ("南山", "Nanshan"),
    ("北山", "Beishan"),
    ("西关", "Xiguan"),
    ("东关", "Dongguan"),
    ("建国", "Jianguo"),
    ("胜利", "Shengli"),
    ("人民", "Renmin"),
    ("文化", "Wenhua"),
    ("同仁", "Tongren"),
    ("柴达木", "Qaidam"),
    ("青海湖", "Qinghaihu"),
    ("金沙", "Jinsha"),
    ("宁张", "Ningzhang"),
    ("互助", "Huzhu"),
    ("八一", "Bayi"),
    ("七一", "Qiyi"),
    ("康乐", "Kangle"),
    ("新宁", "Xinning"),
    ("朝阳", "Chaoyang"),
    ("小桥", "Xiaoqiao"),
    ("南川", "Nanchuan"),
    ("东川", "Dongchuan"),
    ("甘河", "Ganhe"),
    ("生物园", "Shengwuyuan"),
    ("光华", "Guanghua"),
    ("通海", "Tonghai"),
    ("湟中", "Huangzhong"),
    ("塔尔", "Ta'er"),
    ("桥头", "Qiaotou"),
    ("城关", "Chengguan"),
    ("宁湖", "Ninghu"),
    ("香格里拉", "Xianggelila"),
    ("丹噶尔", "Danga'er"),
)
_DIRS = (("", ""), ("东", " East"), ("西", " West"), ("南", " South"), ("北", " North"), ("中", " Middle"))


def _split_sizes(rng: np.random.Generator, total: int, lo: int, hi: int) -> list[int]:
    """Split `total` into parts of lo..hi; only a total below `lo` yields a smaller (single) part."""
    sizes: list[int] = []
    left = total
    while left > hi:
        size = int(rng.integers(lo, hi + 1))
        if left - size < lo:  # leave enough for a last part of at least `lo`
            size = left - lo
        sizes.append(size)
        left -= size
    if left > 0:
        sizes.append(left)
    return sizes


def _chain(points: Points) -> npt.NDArray[np.int64]:
    """Each point's rank on a path that starts at the first point and always steps to the nearest point not yet
    visited: neighbours get near ranks."""
    n = len(points)
    rank = np.zeros(n, dtype=np.int64)
    left = np.ones(n, dtype=np.bool_)
    at = 0
    for r in range(n):
        rank[at] = r
        left[at] = False
        if r == n - 1:
            break
        d = np.where(left, np.hypot(*(points - points[at]).T), np.inf)
        at = int(np.argmin(d))
    return rank


def _cabinets(rng: np.random.Generator, xy: Points, far: float) -> list[npt.NDArray[np.intp]]:
    """The lamps (indices into `xy`, laid out in order) each cabinet feeds: 50-250 consecutive ones, a cabinet
    ending where the next lamp is more than `far` from the last, so that it feeds only its neighbours. A stretch of
    road out of town gets a cabinet of its own when it has at least `_MIN_REMOTE` lamps; a shorter one joins the
    nearest cabinet with room for it."""
    jumps = np.flatnonzero(np.hypot(*np.diff(xy, axis=0).T) > far) + 1
    runs = np.split(np.arange(len(xy)), jumps)
    main = [r for r in runs if len(r) >= _MIN_REMOTE] or [np.arange(len(xy))]
    groups: list[npt.NDArray[np.intp]] = []
    for run in main:
        start = 0
        for size in _split_sizes(rng, len(run), 50, 250):
            groups.append(run[start : start + size])
            start += size
    if len(main) < len(runs):
        for run in runs:
            if len(run) >= _MIN_REMOTE:
                continue
            centres = np.array([xy[g].mean(axis=0) for g in groups])
            room = np.array([len(g) + len(run) <= 250 for g in groups])
            d = np.where(room, np.hypot(*(centres - xy[run].mean(axis=0)).T), np.inf)
            if np.isfinite(d).any():
                k = int(np.argmin(d))
                groups[k] = np.concatenate([groups[k], run])
            else:
                groups.append(run)
    return groups


@dataclass
class _Street:
    """A stretch of one road: its centreline and its candidate lamps (positions along it, either side)."""

    cls: int
    line: Points  # centreline vertices in the plane
    straight: bool
    s: npt.NDArray[np.float64]  # candidate lamps' distances along the centreline
    side: npt.NDArray[np.int8]  # index into the class's offsets
    xy: Points  # candidate lamps' positions
    metric: npt.NDArray[np.float64]  # how far out of town (the built-up area takes the smallest)


class _Valley:
    """One district's frame: its centre, the valley's direction there and the roads that follow the river."""

    def __init__(self, d: District, territory: Points, rivers: dict[str, Points], rng: np.random.Generator):
        self.centre = to_xy([d.lat], [d.lon])[0]
        self.territory = territory
        own = rivers[d.river]
        k = int(np.argmin(np.hypot(*(own - self.centre).T)))
        t = own[min(len(own) - 1, k + 150)] - own[max(0, k - 150)]  # the course 3 km either side
        t /= np.hypot(*t)
        turn = float(rng.uniform(-0.14, 0.14))  # the grid is seldom square to the river
        c, s = math.cos(turn), math.sin(turn)
        self.t = np.array([c * t[0] - s * t[1], s * t[0] + c * t[1]])
        self.n = np.array([-self.t[1], self.t[0]])
        side = 1.0 if rng.random() < 0.5 else -1.0
        self.expressway = offset_polyline(own, side * _EXPRESSWAY_M)
        self.corridor = [
            (_ARTERIAL, offset_polyline(own, _AVENUE_M)),
            (_ARTERIAL, offset_polyline(own, -_AVENUE_M)),
            (_EXPRESSWAY, self.expressway),
        ]
        # What grid roads keep clear of: every river (avenues and bridges excepted) and the expressway.
        self.near_river = Proximity(list(rivers.values()), _RIVER_CLEAR_M, territory)
        self.near_expressway = Proximity([self.expressway], 80.0, territory)
        self.block = _BLOCK_M * float(rng.uniform(0.9, 1.1))
        self.phase = rng.random(2) * self.block

    def metric(self, xy: Points, cls: int) -> npt.NDArray[np.float64]:
        rel = xy - self.centre
        return np.hypot((rel @ self.t) / _ELONGATION, rel @ self.n) * _CLASS_REACH[cls]  # type: ignore[no-any-return]

    def lay(self, reach: float, block: float, rng: np.random.Generator) -> list[_Street]:
        """Every candidate lamp within `reach` (of the metric) on the valley's roads and a grid of `block`."""
        streets: list[_Street] = []
        for cls, line in self.corridor:
            near = self.metric(line, cls) <= reach * 1.05
            if near.any():
                idx = np.flatnonzero(near)
                streets += self._cut(cls, line[max(0, idx[0] - 1) : idx[-1] + 2], False, reach, False, rng)
        # The grid: lines along the valley (v fixed) and across it (u fixed), as far as any class may reach.
        u_max = reach * _ELONGATION / _CLASS_REACH[_ARTERIAL]
        v_max = reach / _CLASS_REACH[_ARTERIAL]
        for along in (True, False):
            span = v_max if along else u_max
            phase = self.phase[0 if along else 1] % block
            first = math.floor((-span - phase) / block)
            for k in range(first, math.ceil((span - phase) / block) + 1):
                cls = _ARTERIAL if k % 6 == 3 else _SECONDARY if k % 2 == 0 else _BRANCH
                at = phase + k * block + float(rng.uniform(-0.12, 0.12)) * block
                other = u_max if along else v_max
                a = np.array([-other, at]) if along else np.array([at, -other])
                b = np.array([other, at]) if along else np.array([at, other])
                ends = np.vstack([a, b])
                line = self.centre + ends[:, :1] * self.t + ends[:, 1:] * self.n
                clear = along or cls == _BRANCH  # cross streets of the main classes bridge the river
                streets += self._cut(cls, line, True, reach, clear, rng, along=along)
        return streets

    def _cut(
        self,
        cls: int,
        line: Points,
        straight: bool,
        reach: float,
        clear: bool,
        rng: np.random.Generator,
        along: bool = False,
    ) -> list[_Street]:
        """The candidate lamps on one line, cut into streets where it leaves the district or meets the river."""
        s_line = arc_lengths(line)
        spacing = _CLASS_SPACING_M[cls]
        s = np.arange(float(rng.random()) * spacing, s_line[-1], spacing)
        if len(s) < 3:
            return []
        q = np.column_stack([np.interp(s, s_line, line[:, 0]), np.interp(s, s_line, line[:, 1])])
        keep = inside(q, self.territory) & (self.metric(q, cls) <= reach)
        if clear and keep.any():
            idx = np.flatnonzero(keep)
            bad = self.near_river(q[idx])
            if along:  # nor along the expressway
                bad |= self.near_expressway(q[idx])
            keep[idx[bad]] = False
        out = []
        grad = np.gradient(line, axis=0)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], keep.astype(np.int8), [0]])))
        for lo, hi in zip(edges[0::2], edges[1::2], strict=True):
            if hi - lo < 3:
                continue
            ss = s[lo:hi]
            tx, ty = np.interp(ss, s_line, grad[:, 0]), np.interp(ss, s_line, grad[:, 1])
            norm = np.hypot(tx, ty)
            normal = np.column_stack([-ty / norm, tx / norm])
            offsets = _CLASS_SIDES_M[cls]
            xy = np.concatenate([q[lo:hi] + off * normal for off in offsets])
            side = np.repeat(np.arange(len(offsets), dtype=np.int8), hi - lo)
            metric = np.tile(self.metric(q[lo:hi], cls), len(offsets))
            ok = inside(xy, self.territory)  # a pole beside a road along the border stays on its own side
            out.append(_Street(cls, line, straight, np.tile(ss, len(offsets))[ok], side[ok], xy[ok], metric[ok]))
        return out


def _road_path(st: _Street, s_lo: float, s_hi: float) -> Points:
    """The centreline of a street's lit stretch: its two ends, and for a curved road a vertex every 100 m."""
    s_line = arc_lengths(st.line)
    half = _CLASS_SPACING_M[st.cls] / 2  # the lit stretch runs half a span past its end poles
    s_lo, s_hi = max(0.0, s_lo - half), min(float(s_line[-1]), s_hi + half)
    if st.straight:
        at = np.array([s_lo, s_hi])
    else:
        at = np.arange(s_lo, s_hi - 1.0, 100.0)
        at = np.append(at, s_hi)
    return np.column_stack([np.interp(at, s_line, st.line[:, 0]), np.interp(at, s_line, st.line[:, 1])])


def _lay_district(
    d: District, n: int, valley: _Valley, rng: np.random.Generator
) -> tuple[list[_Street], npt.NDArray[Any]]:
    """The district's streets and the `n` candidate lamps nearest its centre (the built-up area)."""
    reach = math.sqrt(n / _LAMPS_PER_KM2 / (math.pi * _ELONGATION)) * 1000 * 1.2 + _BLOCK_M
    block = valley.block
    extent = float(np.max(valley.metric(valley.territory, _EXPRESSWAY)))
    for _ in range(60):
        streets = valley.lay(reach, block, rng)
        if sum(len(st.s) for st in streets) >= n:
            metric = np.concatenate([st.metric for st in streets])
            return streets, np.argsort(metric, kind="stable")[:n]
        if reach > extent:  # the whole territory is built up: denser streets
            block *= 0.85
        else:
            reach *= 1.3
    raise SeedError(f"{d.name_en}: cannot place {n:,} lamps on its territory's streets")


def generate(lamps: int = DEFAULT_LAMPS, seed: int = 1) -> Inventory:
    """Lay out `lamps` lamps over Xining's districts; deterministic in (lamps, seed)."""
    if lamps < 50:
        raise SeedError(f"lamps must be at least 50 (one cabinet), got {lamps}")
    rng = np.random.default_rng(seed)
    weights = np.array([d.weight for d in DISTRICTS])
    per_district = np.floor(weights / weights.sum() * lamps).astype(int)
    per_district[0] += lamps - per_district.sum()
    centres = to_xy([d.lat for d in DISTRICTS], [d.lon for d in DISTRICTS])
    borders = territories(
        centres,
        np.array([d.power_km * 1000 for d in DISTRICTS]),
        np.array([d.reach_km * 1000 for d in DISTRICTS]),
    )
    rivers = courses()

    roads: dict[str, list[Any]] = {k: [] for k in ("district", "class", "zh", "en", "path")}
    cab: dict[str, list[Any]] = {k: [] for k in ("id", "district", "road", "circuits", "conc", "lat", "lon")}
    cols: dict[str, list[Any]] = {k: [] for k in ("road", "cab", "circuit", "x", "y", "cls")}
    lamp_id: list[str] = []
    lamp_district: list[str] = []

    for d, n_lamps, border in zip(DISTRICTS, per_district, borders, strict=True):
        n_lamps = int(n_lamps)
        if n_lamps <= 0:
            continue
        valley = _Valley(d, border, rivers, rng)
        streets, chosen = _lay_district(d, n_lamps, valley, rng)
        street_of = np.concatenate([np.full(len(st.s), i, dtype=np.int32) for i, st in enumerate(streets)])
        s_all = np.concatenate([st.s for st in streets])
        side_all = np.concatenate([st.side for st in streets])
        xy_all = np.concatenate([st.xy for st in streets])
        # Roads: the streets that got lamps, numbered in the order they were laid, each lit from its first lamp
        # to its last.
        s_lo = np.full(len(streets), np.inf)
        s_hi = np.full(len(streets), -np.inf)
        np.minimum.at(s_lo, street_of[chosen], s_all[chosen])
        np.maximum.at(s_hi, street_of[chosen], s_all[chosen])
        road_no = np.full(len(streets), -1, dtype=np.int32)
        used_names: set[str] = set()
        for i in np.flatnonzero(np.isfinite(s_lo)).tolist():
            st = streets[i]
            road_no[i] = len(roads["district"]) + 1
            zh, en = _road_name(rng, st.cls, used_names)
            lat, lon = to_latlon(_road_path(st, float(s_lo[i]), float(s_hi[i])))
            roads["district"].append(d.code)
            roads["class"].append(ROAD_CLASSES[st.cls])
            roads["zh"].append(zh)
            roads["en"].append(en)
            roads["path"].append(np.column_stack([lon, lat]))
        # Lamp order: block by block (a walk from each block to the nearest one not yet visited), and along each
        # road within a block, so that a cabinet's consecutive lamps are neighbours and a circuit runs along a
        # street.
        xy = xy_all[chosen]
        rel = xy - valley.centre
        cell = 2.5 * valley.block
        cu = np.floor((rel @ valley.t) / cell).astype(np.int64)
        cv = np.floor((rel @ valley.n) / cell).astype(np.int64)
        cells, cell_of = np.unique(np.column_stack([cu, cv]), axis=0, return_inverse=True)
        rank = _chain(cells.astype(np.float64))[cell_of.ravel()]
        order = np.lexsort((s_all[chosen], side_all[chosen], street_of[chosen], rank))
        groups = _cabinets(rng, xy[order], 4 * valley.block)
        order = order[np.concatenate(groups)]
        chosen, xy = chosen[order], xy[order]
        lamp_road = road_no[street_of[chosen]]
        start = 0
        for c_no, size in enumerate((len(g) for g in groups), start=1):
            circuits = int(rng.integers(1, 7)) if size >= 120 else int(rng.integers(1, 4))
            cab_index = len(cab["id"])
            group = xy[start : start + size]
            near = start + int(np.argmin(np.hypot(*(group - group.mean(axis=0)).T)))  # the middle lamp
            lat, lon = to_latlon(xy[near : near + 1] + 6.0)  # the cabinet stands beside that pole
            cab["id"].append(f"XN-{d.code.upper()}-C{c_no:04d}")
            cab["district"].append(d.code)
            cab["road"].append(int(lamp_road[near]))
            cab["circuits"].append(circuits)
            cab["conc"].append(bool(rng.random() < 0.70))
            cab["lat"].append(float(lat[0]))
            cab["lon"].append(float(lon[0]))
            cols["cab"].append(np.full(size, cab_index, dtype=np.int32))
            cols["circuit"].append((np.arange(size) * circuits // size + 1).astype(np.int16))
            start += size
        cols["road"].append(lamp_road)
        cols["x"].append(xy[:, 0])
        cols["y"].append(xy[:, 1])
        cols["cls"].append(np.array([st.cls for st in streets], dtype=np.int8)[street_of[chosen]])
        lamp_id.extend(f"XN-{d.code.upper()}-{i:06d}" for i in range(1, n_lamps + 1))
        lamp_district.extend([d.code] * n_lamps)

    n = len(lamp_id)
    lamp_lat, lamp_lon = to_latlon(np.column_stack([np.concatenate(cols["x"]), np.concatenate(cols["y"])]))
    lamp_cab = np.concatenate(cols["cab"]).astype(np.int32)
    cls_idx = np.concatenate(cols["cls"])
    led = rng.random(n) < 0.80
    choice = rng.integers(0, 2, n)
    led_w = np.array(_LED_W, dtype=np.float32)[cls_idx, choice]
    hps_w = np.array(_HPS_W, dtype=np.float32)[cls_idx, choice]
    epoch_2012 = (date(2012, 1, 1) - date(1970, 1, 1)).days
    span = (date(2025, 12, 31) - date(2012, 1, 1)).days
    # High-pressure sodium lamps are the older stock.
    age = np.where(led, rng.integers(span // 3, span, n), rng.integers(0, span // 2, n))
    concentrator = np.array(cab["conc"], dtype=np.bool_)
    boundary = []
    for border in borders:
        lat, lon = to_latlon(border)
        boundary.append(np.column_stack([lon, lat]))
    waterways = []
    for river in RIVERS:
        lat, lon = to_latlon(resample(rivers[river.code], 100.0))
        waterways.append((river.code, river.name_zh, river.name_en, np.column_stack([lon, lat])))
    return Inventory(
        seed=seed,
        districts=DISTRICTS,
        road_id=np.arange(1, len(roads["district"]) + 1, dtype=np.int32),
        road_district=roads["district"],
        road_class=roads["class"],
        road_name_zh=roads["zh"],
        road_name_en=roads["en"],
        cabinet_id=cab["id"],
        cabinet_district=cab["district"],
        cabinet_road=np.array(cab["road"], dtype=np.int32),
        cabinet_circuits=np.array(cab["circuits"], dtype=np.int16),
        cabinet_concentrator=concentrator,
        cabinet_lat=np.array(cab["lat"]),
        cabinet_lon=np.array(cab["lon"]),
        lamp_id=lamp_id,
        lamp_district=lamp_district,
        lamp_road=np.concatenate(cols["road"]).astype(np.int32),
        lamp_cabinet=lamp_cab,
        lamp_circuit=np.concatenate(cols["circuit"]),
        lamp_lat=lamp_lat,
        lamp_lon=lamp_lon,
        lamp_led=led,
        lamp_rated_w=np.where(led, led_w, hps_w).astype(np.float32),
        lamp_installed=(epoch_2012 + age).astype(np.int32),
        lamp_concentrator=concentrator[lamp_cab],
        road_path=roads["path"],
        district_boundary=boundary,
        waterways=waterways,
    )


def _road_name(rng: np.random.Generator, cls: int, used: set[str]) -> tuple[str, str]:
    """A name for a road of the class, unique in its district (later ones of a name get a section number)."""
    name_i = int(rng.integers(len(_NAMES)))
    dir_i = int(rng.integers(len(_DIRS)))
    zh = f"{_NAMES[name_i][0]}{_DIRS[dir_i][0]}{_CLASS_SUFFIX_ZH[cls]}"
    en = f"{_NAMES[name_i][1]}{_DIRS[dir_i][1]} {_CLASS_SUFFIX_EN[cls]}"
    section, base_zh, base_en = 1, zh, en
    while zh in used:
        section += 1
        zh, en = f"{base_zh}{section}段", f"{base_en} Section {section}"
    used.add(zh)
    return zh, en

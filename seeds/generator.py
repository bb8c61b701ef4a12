"""Deterministic city inventory: districts → roads → cabinets → circuits → lamps, Xining by default.

Same `lamps` and `seed` give the same inventory, byte for byte, on any machine (numpy's PCG64 generator).
Pure: returns columns; `seeds.loader` writes them to PostgreSQL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from seeds.errors import SeedError

__all__ = ["DISTRICTS", "ROAD_CLASSES", "District", "Inventory", "generate"]

DEFAULT_LAMPS = 110_000


@dataclass(frozen=True)
class District:
    code: str
    name_zh: str
    name_en: str
    lat: float
    lon: float
    weight: float  # share of the city's lamps
    radius_km: float  # roads are laid out inside this radius of the centre


# Xining's four urban districts, Huangzhong district and the two counties; centres approximate.
DISTRICTS: tuple[District, ...] = (
    District("cd", "城东区", "Chengdong", 36.612, 101.820, 0.17, 6.0),
    District("cz", "城中区", "Chengzhong", 36.600, 101.780, 0.15, 5.0),
    District("cx", "城西区", "Chengxi", 36.630, 101.740, 0.16, 6.0),
    District("cb", "城北区", "Chengbei", 36.670, 101.760, 0.16, 7.0),
    District("hz", "湟中区", "Huangzhong", 36.500, 101.570, 0.16, 12.0),
    District("dt", "大通县", "Datong", 36.930, 101.685, 0.11, 10.0),
    District("hy", "湟源县", "Huangyuan", 36.682, 101.256, 0.09, 8.0),
)

ROAD_CLASSES = ("expressway", "arterial", "secondary", "branch")
# Share of lamps per road class, lamps per road (min, max) and pole spacing in metres.
_CLASS_SHARE = np.array([0.10, 0.35, 0.30, 0.25])
_CLASS_LAMPS = ((300, 800), (150, 500), (60, 250), (20, 120))
_CLASS_SPACING_M = (35.0, 30.0, 28.0, 25.0)
# Rated power (W) choices per class for LED and for high-pressure sodium.
_LED_W = ((200, 250), (150, 200), (100, 120), (60, 80))
_HPS_W = ((250, 400), (250, 250), (150, 150), (100, 100))
_CLASS_SUFFIX_ZH = ("快速路", "大道", "路", "街")
_CLASS_SUFFIX_EN = ("Expressway", "Avenue", "Road", "Street")

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


@dataclass
class Inventory:
    """Column arrays for each table of the inventory, in the order the loader writes them."""

    seed: int
    districts: tuple[District, ...]
    # roads
    road_id: npt.NDArray[np.int32]
    road_district: list[str]
    road_class: list[str]
    road_name_zh: list[str]
    road_name_en: list[str]
    # cabinets
    cabinet_id: list[str]
    cabinet_district: list[str]
    cabinet_road: npt.NDArray[np.int32]
    cabinet_circuits: npt.NDArray[np.int16]
    cabinet_concentrator: npt.NDArray[np.bool_]
    cabinet_lat: npt.NDArray[np.float64]
    cabinet_lon: npt.NDArray[np.float64]
    # lamps
    lamp_id: list[str]
    lamp_district: list[str]
    lamp_road: npt.NDArray[np.int32]
    lamp_cabinet: npt.NDArray[np.int32]  # index into the cabinet arrays
    lamp_circuit: npt.NDArray[np.int16]
    lamp_lat: npt.NDArray[np.float64]
    lamp_lon: npt.NDArray[np.float64]
    lamp_led: npt.NDArray[np.bool_]
    lamp_rated_w: npt.NDArray[np.float32]
    lamp_installed: npt.NDArray[np.int32]  # days since 1970-01-01
    lamp_concentrator: npt.NDArray[np.bool_]

    @property
    def lamps(self) -> int:
        return len(self.lamp_id)


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


def generate(lamps: int = DEFAULT_LAMPS, seed: int = 1) -> Inventory:
    """Lay out `lamps` lamps over Xining's districts; deterministic in (lamps, seed)."""
    if lamps < 50:
        raise SeedError(f"lamps must be at least 50 (one cabinet), got {lamps}")
    rng = np.random.default_rng(seed)
    weights = np.array([d.weight for d in DISTRICTS])
    per_district = np.floor(weights / weights.sum() * lamps).astype(int)
    per_district[0] += lamps - per_district.sum()

    road_id: list[int] = []
    road_district: list[str] = []
    road_class: list[str] = []
    road_zh: list[str] = []
    road_en: list[str] = []
    cab: dict[str, list[Any]] = {k: [] for k in ("id", "district", "road", "circuits", "conc", "lat", "lon")}
    lamp_cols: dict[str, list[Any]] = {k: [] for k in ("road", "cab", "circuit", "lat", "lon")}
    lamp_id: list[str] = []
    lamp_district: list[str] = []

    for d, n_lamps in zip(DISTRICTS, per_district, strict=True):
        if n_lamps <= 0:
            continue
        used_names: set[str] = set()
        # Roads of each class until the district's lamps are placed.
        class_targets = np.floor(_CLASS_SHARE * n_lamps).astype(int)
        class_targets[1] += n_lamps - class_targets.sum()
        d_road_lamps: list[tuple[int, int]] = []  # (road index, lamps on it)
        for ci, target in enumerate(class_targets):
            lo, hi = _CLASS_LAMPS[ci]
            for size in _split_sizes(rng, int(target), lo, hi):
                idx = len(road_id)
                name_i = int(rng.integers(len(_NAMES)))
                dir_i = int(rng.integers(len(_DIRS)))
                zh = f"{_NAMES[name_i][0]}{_DIRS[dir_i][0]}{_CLASS_SUFFIX_ZH[ci]}"
                en = f"{_NAMES[name_i][1]}{_DIRS[dir_i][1]} {_CLASS_SUFFIX_EN[ci]}"
                section = 1
                base_zh, base_en = zh, en
                while zh in used_names:
                    section += 1
                    zh, en = f"{base_zh}{section}段", f"{base_en} Section {section}"
                used_names.add(zh)
                road_id.append(idx + 1)
                road_district.append(d.code)
                road_class.append(ROAD_CLASSES[ci])
                road_zh.append(zh)
                road_en.append(en)
                d_road_lamps.append((idx, size))
        # Lamps along each road: a straight line from a random start inside the district, fixed spacing.
        d_lamp_road: list[np.ndarray] = []
        d_lat: list[np.ndarray] = []
        d_lon: list[np.ndarray] = []
        m_per_deg_lat = 111_320.0
        m_per_deg_lon = 111_320.0 * math.cos(math.radians(d.lat))
        for idx, size in d_road_lamps:
            ci = ROAD_CLASSES.index(road_class[idx])
            r_km = d.radius_km * math.sqrt(float(rng.random()))
            theta = float(rng.random()) * 2 * math.pi
            start_lat = d.lat + r_km * 1000 * math.sin(theta) / m_per_deg_lat
            start_lon = d.lon + r_km * 1000 * math.cos(theta) / m_per_deg_lon
            heading = float(rng.random()) * math.pi
            # The random point is the road's middle, so long roads run through the district, not away from it.
            k = (np.arange(size) - size / 2) * _CLASS_SPACING_M[ci]
            d_lamp_road.append(np.full(size, idx + 1, dtype=np.int32))
            d_lat.append(start_lat + k * math.sin(heading) / m_per_deg_lat)
            d_lon.append(start_lon + k * math.cos(heading) / m_per_deg_lon)
        roads_arr = np.concatenate(d_lamp_road)
        lat_arr = np.concatenate(d_lat)
        lon_arr = np.concatenate(d_lon)
        # Cabinets take consecutive lamps (neighbouring poles) in groups of 50-250.
        start = 0
        for c_no, size in enumerate(_split_sizes(rng, int(n_lamps), 50, 250), start=1):
            circuits = int(rng.integers(1, 7)) if size >= 120 else int(rng.integers(1, 4))
            cab_index = len(cab["id"])
            cab["id"].append(f"XN-{d.code.upper()}-C{c_no:04d}")
            cab["district"].append(d.code)
            cab["road"].append(int(roads_arr[start]))
            cab["circuits"].append(circuits)
            cab["conc"].append(bool(rng.random() < 0.70))
            cab["lat"].append(float(lat_arr[start]) + 0.00005)
            cab["lon"].append(float(lon_arr[start]) + 0.00005)
            lamp_cols["cab"].append(np.full(size, cab_index, dtype=np.int32))
            lamp_cols["circuit"].append((np.arange(size) * circuits // size + 1).astype(np.int16))
            start += size
        lamp_cols["road"].append(roads_arr)
        lamp_cols["lat"].append(lat_arr)
        lamp_cols["lon"].append(lon_arr)
        lamp_id.extend(f"XN-{d.code.upper()}-{i:06d}" for i in range(1, int(n_lamps) + 1))
        lamp_district.extend([d.code] * int(n_lamps))

    n = len(lamp_id)
    lamp_road = np.concatenate(lamp_cols["road"]).astype(np.int32)
    lamp_cab = np.concatenate(lamp_cols["cab"]).astype(np.int32)
    cls_idx = np.array([ROAD_CLASSES.index(c) for c in road_class], dtype=np.int8)[lamp_road - 1]
    led = rng.random(n) < 0.80
    choice = rng.integers(0, 2, n)
    led_w = np.array(_LED_W, dtype=np.float32)[cls_idx, choice]
    hps_w = np.array(_HPS_W, dtype=np.float32)[cls_idx, choice]
    epoch_2012 = (date(2012, 1, 1) - date(1970, 1, 1)).days
    span = (date(2025, 12, 31) - date(2012, 1, 1)).days
    # High-pressure sodium lamps are the older stock.
    age = np.where(led, rng.integers(span // 3, span, n), rng.integers(0, span // 2, n))
    concentrator = np.array(cab["conc"], dtype=np.bool_)
    return Inventory(
        seed=seed,
        districts=DISTRICTS,
        road_id=np.array(road_id, dtype=np.int32),
        road_district=road_district,
        road_class=road_class,
        road_name_zh=road_zh,
        road_name_en=road_en,
        cabinet_id=cab["id"],
        cabinet_district=cab["district"],
        cabinet_road=np.array(cab["road"], dtype=np.int32),
        cabinet_circuits=np.array(cab["circuits"], dtype=np.int16),
        cabinet_concentrator=concentrator,
        cabinet_lat=np.array(cab["lat"]),
        cabinet_lon=np.array(cab["lon"]),
        lamp_id=lamp_id,
        lamp_district=lamp_district,
        lamp_road=lamp_road,
        lamp_cabinet=lamp_cab,
        lamp_circuit=np.concatenate(lamp_cols["circuit"]),
        lamp_lat=np.concatenate(lamp_cols["lat"]),
        lamp_lon=np.concatenate(lamp_cols["lon"]),
        lamp_led=led,
        lamp_rated_w=np.where(led, led_w, hps_w).astype(np.float32),
        lamp_installed=(epoch_2012 + age).astype(np.int32),
        lamp_concentrator=concentrator[lamp_cab],
    )


def installed_date(days: int) -> date:
    return date(1970, 1, 1) + timedelta(days=int(days))

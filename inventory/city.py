"""A city's inventory as columns: what a generator makes (`seeds.generator`) and the loader writes
(`inventory.loader`), one array per column of each table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["ROAD_CLASSES", "Inventory", "Place", "installed_date"]

# The grades of road, highest first: a road's class is its position here in the arrays.
ROAD_CLASSES = ("expressway", "arterial", "secondary", "branch")


class Place(Protocol):
    """A district as the inventory keeps it: its code, its names and its centre."""

    @property
    def code(self) -> str: ...
    @property
    def name_zh(self) -> str: ...
    @property
    def name_en(self) -> str: ...
    @property
    def lat(self) -> float: ...
    @property
    def lon(self) -> float: ...


@dataclass
class Inventory:
    """Column arrays for each table of the inventory, in the order the loader writes them."""

    seed: int
    districts: tuple[Place, ...]
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
    # geometry for the map, each an (n, 2) array of (lon, lat): a road's lit stretch, a district's border
    road_path: list[npt.NDArray[np.float64]]
    district_boundary: list[npt.NDArray[np.float64]]
    # the rivers: (code, name_zh, name_en, course as (n, 2) lon/lat)
    waterways: list[tuple[str, str, str, npt.NDArray[np.float64]]]

    @property
    def lamps(self) -> int:
        return len(self.lamp_id)


def installed_date(days: int) -> date:
    """A lamp's installation day from its column (days since 1970-01-01)."""
    return date(1970, 1, 1) + timedelta(days=int(days))

"""Load a generated inventory into PostgreSQL with COPY; idempotent for the same (lamps, seed) unless replacing."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec
import numpy as np
import numpy.typing as npt
import psycopg
from tqdm import tqdm

from inventory.city import Inventory, installed_date
from inventory.errors import InventoryError

__all__ = ["DistrictSummary", "Forget", "InventoryError", "Replaced", "load", "summary"]

logger = logging.getLogger(__name__)

# Lamps per COPY chunk: large enough to keep COPY at full speed, small enough for a smooth progress bar.
_CHUNK = 20_000


def _path(p: npt.NDArray[np.float64]) -> str:
    """A (n, 2) lon/lat array as the JSON the map reads: [[lon, lat], ...], to 6 decimals (about 0.1 m)."""
    return msgspec.json.encode(np.round(p, 6).tolist()).decode()


@dataclass(frozen=True)
class DistrictSummary:
    code: str
    name_zh: str
    name_en: str
    roads: int
    cabinets: int
    lamps: int
    concentrator_share: float
    led_share: float
    rated_kw: float


# A room's part of a replace: inside the load's transaction, it empties what of its own refers to the inventory
# (by lamp, cabinet, road or district number or id) and returns the counts of what it removed that an operator
# recognises ({"tickets": 12}).
Forget = Callable[[psycopg.Connection], dict[str, int]]


@dataclass(frozen=True)
class Replaced:
    """What a replace removed: the old inventory and the counts of what referred to it."""

    lamps: int
    seed: int
    counts: dict[str, int]

    def describe(self) -> str:
        things = ", ".join(f"{n:,} {t.replace('_', ' ')}" for t, n in self.counts.items())
        return (
            f"replaced the inventory of {self.lamps:,} lamps (seed {self.seed}) and cleared what referred to it: "
            f"{things or 'nothing counted'}, and the readings, history and the rest each room kept of the old devices"
        )


def load(
    conn: psycopg.Connection,
    inv: Inventory,
    *,
    replace: bool = False,
    forget: Sequence[Forget] = (),
    progress: bool = True,
) -> Replaced | bool:
    """Write the inventory. Returns False when the same inventory is already there and `replace` is not set
    (nothing done), True when it loaded into an empty database, and a `Replaced` when it replaced one.

    An inventory already loaded is only replaced with `replace=True`, even the same (lamps, seed), and then in the
    same transaction each of `forget` empties what its room keeps that refers to lamps, cabinets or roads by number
    or id (readings, history, latest state, tickets, commands, schedules, …), since those would no longer mean the
    same devices; the composition root passes every room's (`lamplighter.seeding.FORGET`).
    """
    row = conn.execute("SELECT seed, lamps FROM seed_info").fetchone()
    if row is not None and not replace:
        if (row[0], row[1]) == (inv.seed, inv.lamps):
            logger.info("inventory of %d lamps (seed %d) already loaded; nothing to do", inv.lamps, inv.seed)
            return False
        raise InventoryError(
            f"the database already holds an inventory of {row[1]} lamps from seed {row[0]}; asked for "
            f"{inv.lamps} lamps from seed {inv.seed}. Re-run with --replace to wipe it and everything that "
            f"refers to it (telemetry, tickets, commands, schedules).",
            kind="conflict",
        )
    replaced: Replaced | None = None
    with conn.transaction():
        if row is not None:
            counts: dict[str, int] = {}
            for room_forgets in forget:
                counts.update(room_forgets(conn))
            replaced = Replaced(lamps=row[1], seed=row[0], counts=counts)
            logger.info("%s", replaced.describe())
            conn.execute("TRUNCATE lamps, cabinets, roads, districts, waterways, seed_info")
        with conn.cursor() as cur:
            with cur.copy("COPY districts (code, name_zh, name_en, lat, lon, boundary) FROM STDIN") as cp:
                for i, d in enumerate(inv.districts):
                    cp.write_row((d.code, d.name_zh, d.name_en, d.lat, d.lon, _path(inv.district_boundary[i])))
            with cur.copy("COPY waterways (code, name_zh, name_en, path) FROM STDIN") as cp:
                for code, zh, en, course in inv.waterways:
                    cp.write_row((code, zh, en, _path(course)))
            with cur.copy("COPY roads (id, district, name_zh, name_en, road_class, path) FROM STDIN") as cp:
                for i in range(len(inv.road_id)):
                    cp.write_row(
                        (
                            int(inv.road_id[i]),
                            inv.road_district[i],
                            inv.road_name_zh[i],
                            inv.road_name_en[i],
                            inv.road_class[i],
                            _path(inv.road_path[i]),
                        )
                    )
            with cur.copy(
                "COPY cabinets (id, no, district, road_id, circuits, concentrator, lat, lon) FROM STDIN"
            ) as cp:
                for i in range(len(inv.cabinet_id)):
                    cp.write_row(
                        (
                            inv.cabinet_id[i],
                            i + 1,
                            inv.cabinet_district[i],
                            int(inv.cabinet_road[i]),
                            int(inv.cabinet_circuits[i]),
                            bool(inv.cabinet_concentrator[i]),
                            float(inv.cabinet_lat[i]),
                            float(inv.cabinet_lon[i]),
                        )
                    )
            bar = tqdm(total=inv.lamps, unit=" lamps", desc="seeding lamps", disable=not progress, leave=False)
            cols = (
                "id, no, district, road_id, cabinet_id, circuit, lat, lon, technology, rated_w, installed_on, "
                "controller"
            )
            with cur.copy(f"COPY lamps ({cols}) FROM STDIN") as cp:
                for start in range(0, inv.lamps, _CHUNK):
                    stop = min(start + _CHUNK, inv.lamps)
                    road = inv.lamp_road[start:stop].tolist()
                    cab = inv.lamp_cabinet[start:stop].tolist()
                    circ = inv.lamp_circuit[start:stop].tolist()
                    lat = inv.lamp_lat[start:stop].tolist()
                    lon = inv.lamp_lon[start:stop].tolist()
                    led = inv.lamp_led[start:stop].tolist()
                    watts = inv.lamp_rated_w[start:stop].tolist()
                    inst = inv.lamp_installed[start:stop].tolist()
                    conc = inv.lamp_concentrator[start:stop].tolist()
                    for j in range(stop - start):
                        i = start + j
                        cp.write_row(
                            (
                                inv.lamp_id[i],
                                i + 1,
                                inv.lamp_district[i],
                                road[j],
                                inv.cabinet_id[cab[j]],
                                circ[j],
                                lat[j],
                                lon[j],
                                "LED" if led[j] else "HPS",
                                watts[j],
                                installed_date(inst[j]),
                                "concentrator" if conc[j] else "single",
                            )
                        )
                    bar.update(stop - start)
            bar.close()
        conn.execute("INSERT INTO seed_info (seed, lamps, city) VALUES (%s, %s, 'Xining')", (inv.seed, inv.lamps))
    conn.execute("ANALYZE lamps")
    logger.info(
        "inventory loaded: %d lamps, %d cabinets, %d roads (seed %d)",
        inv.lamps,
        len(inv.cabinet_id),
        len(inv.road_id),
        inv.seed,
    )
    return replaced if replaced is not None else True


def summary(conn: psycopg.Connection) -> list[DistrictSummary]:
    """Per-district counts of what is in the database now."""
    rows = conn.execute("""
        SELECT d.code, d.name_zh, d.name_en,
               (SELECT count(*) FROM roads r WHERE r.district = d.code),
               (SELECT count(*) FROM cabinets c WHERE c.district = d.code),
               count(l.no),
               coalesce(avg((l.controller = 'concentrator')::int), 0),
               coalesce(avg((l.technology = 'LED')::int), 0),
               coalesce(sum(l.rated_w) / 1000, 0)
        FROM districts d LEFT JOIN lamps l ON l.district = d.code
        GROUP BY d.code, d.name_zh, d.name_en ORDER BY d.code""").fetchall()
    return [DistrictSummary(r[0], r[1], r[2], r[3], r[4], r[5], float(r[6]), float(r[7]), float(r[8])) for r in rows]

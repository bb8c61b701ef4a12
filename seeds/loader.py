"""Load a generated inventory into PostgreSQL with COPY; idempotent for the same (lamps, seed)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg
from tqdm import tqdm

from seeds.errors import SeedError
from seeds.generator import Inventory, installed_date

__all__ = ["DistrictSummary", "SeedError", "load", "summary"]

logger = logging.getLogger(__name__)

# Lamps per COPY chunk: large enough to keep COPY at full speed, small enough for a smooth progress bar.
_CHUNK = 20_000


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


def load(conn: psycopg.Connection, inv: Inventory, *, replace: bool = False, progress: bool = True) -> bool:
    """Write the inventory; returns False when the same inventory is already there (nothing done).

    A different inventory is only replaced with `replace=True`, which also empties the telemetry, latest
    state and quarantine tables (their lamp numbers would no longer mean the same lamps).
    """
    row = conn.execute("SELECT seed, lamps FROM seed_info").fetchone()
    if row is not None:
        if (row[0], row[1]) == (inv.seed, inv.lamps):
            logger.info("inventory of %d lamps (seed %d) already loaded; nothing to do", inv.lamps, inv.seed)
            return False
        if not replace:
            raise SeedError(
                f"the database already holds an inventory of {row[1]} lamps from seed {row[0]}; asked for "
                f"{inv.lamps} lamps from seed {inv.seed}. Re-run with --replace to wipe it and its telemetry."
            )
    with conn.transaction():
        if row is not None:
            logger.warning("replacing inventory of %d lamps (seed %d) and its telemetry", row[1], row[0])
            conn.execute(
                "TRUNCATE lamp_readings, cabinet_readings, lamp_latest, cabinet_latest, device_status, quarantine, "
                "lamps, cabinets, roads, districts, seed_info"
            )
        with conn.cursor() as cur:
            with cur.copy("COPY districts (code, name_zh, name_en, lat, lon) FROM STDIN") as cp:
                for d in inv.districts:
                    cp.write_row((d.code, d.name_zh, d.name_en, d.lat, d.lon))
            with cur.copy("COPY roads (id, district, name_zh, name_en, road_class) FROM STDIN") as cp:
                for i in range(len(inv.road_id)):
                    cp.write_row(
                        (
                            int(inv.road_id[i]),
                            inv.road_district[i],
                            inv.road_name_zh[i],
                            inv.road_name_en[i],
                            inv.road_class[i],
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
    return True


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

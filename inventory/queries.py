"""What the other rooms ask of the inventory: a lamp or a cabinet by id, the lamps of a district or a cabinet, the
districts and the seed, pages of each for the open-data export, the map's geometry. Sync functions take a connection
of a worker thread or a command, `a…` ones the API's async connection (whatever its row factory: each cursor names
its own); rows come as dicts where the caller reads them by name."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row

__all__ = [
    "LAMPS_OF_DISTRICTS",
    "LAMP_COLUMNS",
    "acabinet",
    "acabinet_nos",
    "acabinets",
    "adistrict_codes",
    "alamp",
    "alamp_count",
    "alamp_no",
    "alamps",
    "asset_place",
    "cabinets_page",
    "circuit_groups",
    "controllers",
    "counts",
    "devices_in_service",
    "district_of_lamp",
    "districts_named",
    "first_lamp_on_a_cabinet",
    "geometry",
    "has_device",
    "known_districts",
    "lamp_numbers",
    "lamp_numbers_in",
    "lamp_ratings",
    "lamps_by_number",
    "lamps_listed",
    "lamps_page",
    "seeded_lamps",
    "set_report_interval",
]

# A lamp as the API shows it: its inventory row with its road's names and class.
LAMP_COLUMNS = """
SELECT l.id, l.no, l.district, l.road_id, r.name_zh AS road_name_zh, r.name_en AS road_name_en, r.road_class,
       l.cabinet_id, l.circuit, l.lat, l.lon, l.technology, l.rated_w, l.installed_on, l.controller, l.in_service,
       l.report_interval_s
FROM lamps l JOIN roads r ON r.id = l.road_id
"""


def district_of_lamp(conn: psycopg.Connection, lamp_id: str) -> str | None:
    """The district a lamp stands in (None: no such lamp)."""
    row = conn.execute("SELECT district FROM lamps WHERE id = %s", (lamp_id,)).fetchone()
    return str(row[0]) if row else None


def known_districts(conn: psycopg.Connection, codes: Iterable[str]) -> set[str]:
    """Those of `codes` that are districts of the inventory."""
    return {str(r[0]) for r in conn.execute("SELECT code FROM districts WHERE code = ANY(%s)", (list(codes),))}


def districts_named(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(code, English name) of every district, by code."""
    return [(str(c), str(n)) for c, n in conn.execute("SELECT code, name_en FROM districts ORDER BY code")]


def seeded_lamps(conn: psycopg.Connection) -> int | None:
    """How many lamps the loaded (generated) inventory has (None: none loaded)."""
    row = conn.execute("SELECT lamps FROM seed_info").fetchone()
    return int(row[0]) if row else None


def asset_place(
    conn: psycopg.Connection, asset_id: str, district: str
) -> tuple[str | None, str | None, dict[str, float] | None]:
    """Where an asset is, in one round trip: its district's Chinese and English names, and {"lat", "lon"} of the
    lamp or cabinet with that id (None for what the inventory does not have)."""
    row = conn.execute(
        """SELECT d.name_zh, d.name_en, p.lat, p.lon
           FROM (SELECT 1) one
           LEFT JOIN districts d ON d.code = %s
           LEFT JOIN LATERAL (SELECT lat, lon FROM lamps WHERE id = %s
                              UNION ALL SELECT lat, lon FROM cabinets WHERE id = %s LIMIT 1) p ON true""",
        (district, asset_id, asset_id),
    ).fetchone()
    zh, en, lat, lon = row if row else (None, None, None, None)
    return zh, en, (None if lat is None else {"lat": float(lat), "lon": float(lon)})


# The numbers of the lamps of some districts (one parameter: their codes), as a subquery another room may embed in
# its own SQL, so a filter by district stays in the database.
LAMPS_OF_DISTRICTS = "SELECT no FROM lamps WHERE district = ANY(%s)"


async def adistrict_codes(conn: psycopg.AsyncConnection[Any]) -> set[str]:
    """Every district's code."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute("SELECT code FROM districts")
        return {str(r[0]) for r in await cur.fetchall()}


async def alamp_no(conn: psycopg.AsyncConnection[Any], lamp_id: str) -> int | None:
    """A lamp's number (None: no such lamp)."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute("SELECT no FROM lamps WHERE id = %s", (lamp_id,))
        row = await cur.fetchone()
    return int(row[0]) if row else None


async def alamp(conn: psycopg.AsyncConnection[Any], lamp_id: str) -> dict[str, Any] | None:
    """One lamp as `LAMP_COLUMNS` has it (None: no such lamp)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"{LAMP_COLUMNS} WHERE l.id = %s", (lamp_id,))
        return await cur.fetchone()


def _filter(district: str | None, cabinet: str | None) -> tuple[str, list[Any]]:
    where, args = [], []
    if district:
        where.append("l.district = %s")
        args.append(district)
    if cabinet:
        where.append("l.cabinet_id = %s")
        args.append(cabinet)
    return (" WHERE " + " AND ".join(where)) if where else "", args


async def alamp_count(
    conn: psycopg.AsyncConnection[Any], *, district: str | None = None, cabinet: str | None = None
) -> int:
    """How many lamps a district and/or a cabinet has (all: neither given)."""
    clause, args = _filter(district, cabinet)
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(f"SELECT count(*) FROM lamps l{clause}", args)
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def alamps(
    conn: psycopg.AsyncConnection[Any],
    *,
    district: str | None = None,
    cabinet: str | None = None,
    limit: int,
    offset: int = 0,
) -> Sequence[dict[str, Any]]:
    """A page of lamps (as `LAMP_COLUMNS`) of a district and/or a cabinet, in lamp order."""
    clause, args = _filter(district, cabinet)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"{LAMP_COLUMNS}{clause} ORDER BY l.no LIMIT %s OFFSET %s", [*args, limit, offset])
        return await cur.fetchall()


async def acabinet_nos(
    conn: psycopg.AsyncConnection[Any],
    *,
    district: str | None = None,
    road: int | None = None,
    concentrator: bool | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> tuple[list[tuple[str, int]], int]:
    """(id, number) of the cabinets of a district, a road and/or of a kind (with a concentrator or not), in cabinet
    order, `offset` and `limit` of them (all: None, at a million lamps about 20,000); and how many there are in
    all."""
    where: list[str] = []
    args: list[object] = []
    for column, value in (("district", district), ("road_id", road), ("concentrator", concentrator)):
        if value is not None:
            where.append(f"{column} = %s")
            args.append(value)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(f"SELECT id, no FROM cabinets{clause} ORDER BY no LIMIT %s OFFSET %s", [*args, limit, offset])
        page = [(str(i), int(n)) for i, n in await cur.fetchall()]
        if limit is None:
            return page, offset + len(page)
        await cur.execute(f"SELECT count(*) FROM cabinets{clause}", args)
        row = await cur.fetchone()
    return page, int(row[0]) if row else 0


async def acabinets(conn: psycopg.AsyncConnection[Any], ids: Sequence[str]) -> list[dict[str, Any]]:
    """The cabinets `ids`, in cabinet order, with their road's names and the lamps on each circuit
    (`circuit_lamps[i]`: circuit i+1)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT c.id, c.no, c.district, c.road_id, r.name_zh AS road_name_zh, r.name_en AS road_name_en,
                      c.circuits, c.concentrator, c.lat, c.lon,
                      (SELECT array_agg(n ORDER BY circuit) FROM (
                           SELECT l.circuit, count(*)::int AS n FROM lamps l
                           WHERE l.cabinet_id = c.id GROUP BY l.circuit
                       ) per) AS circuit_lamps
               FROM cabinets c JOIN roads r ON r.id = c.road_id WHERE c.id = ANY(%s) ORDER BY c.no""",
            (list(ids),),
        )
        return await cur.fetchall()


async def acabinet(conn: psycopg.AsyncConnection[Any], cabinet_id: str) -> dict[str, Any] | None:
    """One cabinet with how many lamps hang on it (None: no such cabinet)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT c.id, c.no, c.district, c.road_id, c.circuits, c.concentrator, c.lat, c.lon, "
            "(SELECT count(*) FROM lamps l WHERE l.cabinet_id = c.id) AS lamps FROM cabinets c WHERE c.id = %s",
            (cabinet_id,),
        )
        return await cur.fetchone()


def geometry(conn: psycopg.Connection) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The map's geometry, each as JSON text: districts (code, name_zh, name_en, lon, lat, boundary or None), roads
    (id, name_zh, name_en, road_class, path or None) and rivers (code, name_zh, name_en, path), each by key."""
    districts = conn.execute(
        "SELECT code, name_zh, name_en, lon, lat, boundary::text FROM districts ORDER BY code"
    ).fetchall()
    roads = conn.execute("SELECT id, name_zh, name_en, road_class, path::text FROM roads ORDER BY id").fetchall()
    waters = conn.execute("SELECT code, name_zh, name_en, path::text FROM waterways ORDER BY code").fetchall()
    return districts, roads, waters


def lamps_page(conn: psycopg.Connection, *, lamp_id: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
    """A page of lamps in lamp order (or the one `lamp_id`) with their district's and road's English names."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""SELECT l.id, l.no, l.district, d.name_en AS district_name_en, r.name_en AS road_name_en, l.cabinet_id,
                       l.circuit, l.lat, l.lon, l.technology, l.rated_w, l.installed_on
                FROM lamps l JOIN roads r ON r.id = l.road_id JOIN districts d ON d.code = l.district
                {"WHERE l.id = %s" if lamp_id else ""} ORDER BY l.no LIMIT %s OFFSET %s""",
            [*([lamp_id] if lamp_id else []), limit, offset],
        ).fetchall()


def cabinets_page(conn: psycopg.Connection, *, cabinet_id: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
    """A page of cabinets in cabinet order (or the one `cabinet_id`) with their district's and road's English names,
    the circuits their lamps hang on and how many lamps."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""SELECT c.id, c.no, c.district, d.name_en AS district_name_en, r.name_en AS road_name_en, c.circuits,
                       c.concentrator, c.lat, c.lon,
                       ARRAY(SELECT DISTINCT l.circuit FROM lamps l WHERE l.cabinet_id = c.id ORDER BY 1)
                           AS circuits_used,
                       (SELECT count(*) FROM lamps l WHERE l.cabinet_id = c.id) AS lamps
                FROM cabinets c JOIN roads r ON r.id = c.road_id JOIN districts d ON d.code = c.district
                {"WHERE c.id = %s" if cabinet_id else ""} ORDER BY c.no LIMIT %s OFFSET %s""",
            [*([cabinet_id] if cabinet_id else []), limit, offset],
        ).fetchall()


def circuit_groups(
    conn: psycopg.Connection, *, cabinet_id: str | None = None, circuit: int | None = None, limit: int, offset: int
) -> list[dict[str, Any]]:
    """A page of a cabinet's circuits in cabinet and circuit order (or the one given): each with the cabinet's
    number, its road's English name, and its lamps' ids and positions in lamp order."""
    where, args = ("WHERE l.cabinet_id = %s AND l.circuit = %s", [cabinet_id, circuit]) if cabinet_id else ("", [])
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""SELECT l.cabinet_id, c.no AS cabinet_no, l.circuit, min(r.name_en) AS road_name_en,
                       array_agg(l.id ORDER BY l.no) AS lamp_ids, array_agg(l.lon ORDER BY l.no) AS lons,
                       array_agg(l.lat ORDER BY l.no) AS lats
                FROM lamps l JOIN cabinets c ON c.id = l.cabinet_id JOIN roads r ON r.id = c.road_id
                {where} GROUP BY c.no, l.cabinet_id, l.circuit ORDER BY c.no, l.circuit LIMIT %s OFFSET %s""",
            [*args, limit, offset],
        ).fetchall()


def counts(conn: psycopg.Connection) -> dict[str, int]:
    """How many lamps, cabinets, cabinet circuits with lamps and roads the inventory has."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM lamps), (SELECT count(*) FROM cabinets), "
        "(SELECT count(*) FROM (SELECT DISTINCT cabinet_id, circuit FROM lamps) g), (SELECT count(*) FROM roads)"
    ).fetchone()
    lamps, cabinets, circuits, roads = (int(v) for v in row) if row else (0, 0, 0, 0)
    return {"lamps": lamps, "cabinets": cabinets, "circuits": circuits, "roads": roads}


def controllers(
    conn: psycopg.Connection,
) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str, str, str]]]:
    """The devices that speak to the broker, in inventory order: single-lamp controllers (district, lamp id),
    concentrators (district, cabinet id), and each concentrator's lamps (cabinet's district, cabinet id, lamp's
    district, lamp id)."""
    single = [
        (str(d), str(i))
        for d, i in conn.execute("SELECT district, id FROM lamps WHERE controller = 'single' ORDER BY no")
    ]
    concentrators = [
        (str(d), str(c)) for d, c in conn.execute("SELECT district, id FROM cabinets WHERE concentrator ORDER BY no")
    ]
    behind = [
        (str(a), str(b), str(c), str(d))
        for a, b, c, d in conn.execute(
            """SELECT c.district, c.id, l.district, l.id FROM lamps l JOIN cabinets c ON c.id = l.cabinet_id
           WHERE c.concentrator AND l.controller = 'concentrator' ORDER BY c.no, l.no"""
        )
    ]
    return single, concentrators, behind


def has_device(conn: psycopg.Connection, kind: str, district: str, device_id: str) -> bool:
    """Whether the inventory has that device speaking for itself: a single-lamp controller (`lamp`) or a
    concentrator (`cabinet`) in `district`."""
    if kind == "lamp":
        sql = "SELECT 1 FROM lamps WHERE district = %s AND id = %s AND controller = 'single'"
    elif kind == "cabinet":
        sql = "SELECT 1 FROM cabinets WHERE district = %s AND id = %s AND concentrator"
    else:
        return False
    return conn.execute(sql, (district, device_id)).fetchone() is not None


def devices_in_service(conn: psycopg.Connection) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What a stand-in for the field needs: every cabinet (id, district, circuits, has a concentrator) in cabinet
    order, and every lamp in service (id, district, cabinet id, behind a concentrator, rated W, is LED, circuit) in
    lamp order."""
    cabinets = conn.execute("SELECT id, district, circuits, concentrator FROM cabinets ORDER BY no").fetchall()
    lamps = conn.execute(
        "SELECT id, district, cabinet_id, controller = 'concentrator', rated_w, technology = 'LED', circuit "
        "FROM lamps WHERE in_service ORDER BY no"
    ).fetchall()
    return cabinets, lamps


def lamps_listed(
    conn: psycopg.Connection, limit: int | None = None, *, single: bool = False
) -> list[tuple[str, str, float]]:
    """(id, district, rated W) of the first `limit` lamps (all: None) in lamp order; `single`: only those with a
    controller of their own."""
    where = " WHERE controller = 'single'" if single else ""
    rows = conn.execute(f"SELECT id, district, rated_w FROM lamps{where} ORDER BY no LIMIT %s", (limit,))
    return [(str(i), str(d), float(w)) for i, d, w in rows]


def lamp_ratings(conn: psycopg.Connection) -> list[tuple[int, float, int]]:
    """(number, rated W, reporting interval s) of every lamp, in lamp order."""
    rows = conn.execute("SELECT no, rated_w, report_interval_s FROM lamps ORDER BY no")
    return [(int(n), float(w), int(s)) for n, w, s in rows]


def lamp_numbers(conn: psycopg.Connection) -> list[tuple[int, str, float]]:
    """(number, id, rated W) of every lamp in service, in lamp order."""
    rows = conn.execute("SELECT no, id, rated_w FROM lamps WHERE in_service ORDER BY no")
    return [(int(n), str(i), float(w)) for n, i, w in rows]


def lamp_numbers_in(
    conn: psycopg.Connection, *, district: str | None = None, road: int | None = None, cabinet: str | None = None
) -> list[int]:
    """The numbers of the lamps in a district, on a road and behind a cabinet (each only when given)."""
    where, args = ["true"], []
    for column, value in (("district", district), ("road_id", road), ("cabinet_id", cabinet)):
        if value is not None:
            where.append(f"{column} = %s")
            args.append(value)
    return [int(n) for (n,) in conn.execute(f"SELECT no FROM lamps WHERE {' AND '.join(where)} ORDER BY no", args)]


def lamps_by_number(conn: psycopg.Connection, nos: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The lamps numbered `nos` as the API shows a lamp (`LAMP_COLUMNS`), by number."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(LAMP_COLUMNS + " WHERE l.no = ANY(%s)", (list(nos),)).fetchall()
    return {int(r["no"]): r for r in rows}


def set_report_interval(conn: psycopg.Connection, seconds: int) -> None:
    """Every lamp's reporting interval set to `seconds` (as a commissioning change would)."""
    conn.execute("UPDATE lamps SET report_interval_s = %s", (seconds,))


def first_lamp_on_a_cabinet(conn: psycopg.Connection) -> tuple[str, str] | None:
    """(cabinet id, lamp id) of the first lamp in lamp order (every lamp hangs on a cabinet)."""
    row = conn.execute("SELECT cabinet_id, id FROM lamps ORDER BY no LIMIT 1").fetchone()
    return (str(row[0]), str(row[1])) if row else None

"""Open data in NGSI-LD: the inventory and latest state as FIWARE Smart Data Models street-lighting entities
(`api.ngsild`), at the paths and with the query parameters of an NGSI-LD context broker's entity API, so a city
platform or an NGSI-LD tool reads them as it reads any broker."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import psycopg
from fastapi import APIRouter, Query, Request

from alerts.tickets import WAITING
from api.deps import Offset, SyncPoolDep, Viewer, filter_param, in_thread, limit_param
from api.errors import ApiError
from api.jsonsafe import FiniteJSONResponse
from api.ngsild import CONTEXT, cabinet_entity, group_entity, normalized, split_urn, streetlight_entity
from telemetry.history import cabinet_meter_sql

router = APIRouter(prefix="/ngsi-ld/v1", tags=["open data (NGSI-LD)"])

_CITY = "Xining"
_LD = "application/ld+json"

_LAMPS = """
SELECT l.id, l.no, l.district, d.name_en AS district_name_en, r.name_en AS road_name_en, l.cabinet_id, l.circuit,
       l.lat, l.lon, l.technology, l.rated_w, l.installed_on,
       ll.ts, ll.is_on AS on, ll.dim, ll.power_w, ll.voltage_v, ll.current_a, ll.energy_wh,
       coalesce(ll.faults, '{{}}') || ARRAY(
           SELECT t.fault FROM tickets t WHERE t.asset_type = 'lamp' AND t.asset_id = l.id AND t.status = ANY(%s)
       ) AS faults
FROM lamps l JOIN roads r ON r.id = l.road_id JOIN districts d ON d.code = l.district
LEFT JOIN lamp_latest ll ON ll.lamp_no = l.no
{where} ORDER BY l.no LIMIT %s OFFSET %s
"""

_CABINETS = """
SELECT c.id, c.no, c.district, d.name_en AS district_name_en, r.name_en AS road_name_en, c.circuits, c.concentrator,
       c.lat, c.lon,
       ARRAY(SELECT DISTINCT l.circuit FROM lamps l WHERE l.cabinet_id = c.id ORDER BY 1) AS circuits_used,
       (SELECT count(*) FROM lamps l WHERE l.cabinet_id = c.id) AS lamps,
       {meter} AS energy_wh,
       EXISTS (SELECT 1 FROM schedules s WHERE s.scope = 'cabinet' AND s.key = c.id
               AND (s.doc->'override'->>'until')::timestamptz > %s) AS held
FROM cabinets c JOIN roads r ON r.id = c.road_id JOIN districts d ON d.code = c.district
{where} ORDER BY c.no LIMIT %s OFFSET %s
""".replace("{meter}", cabinet_meter_sql("c.no"))

_GROUPS = """
SELECT l.cabinet_id, l.circuit, min(r.name_en) AS road_name_en, array_agg(l.id ORDER BY l.no) AS lamp_ids,
       array_agg(l.lon ORDER BY l.no) AS lons, array_agg(l.lat ORDER BY l.no) AS lats,
       (array_agg(cl.contactors[l.circuit]))[1] AS contactor
FROM lamps l JOIN cabinets c ON c.id = l.cabinet_id JOIN roads r ON r.id = c.road_id
LEFT JOIN cabinet_latest cl ON cl.cabinet_no = c.no
{where} GROUP BY c.no, l.cabinet_id, l.circuit ORDER BY c.no, l.circuit LIMIT %s OFFSET %s
"""

_COUNTS = {
    "Streetlight": "SELECT count(*) FROM lamps",
    "StreetlightControlCabinet": "SELECT count(*) FROM cabinets",
    "StreetlightGroup": "SELECT count(*) FROM (SELECT DISTINCT cabinet_id, circuit FROM lamps) g",
}

EntityType = Literal["Streetlight", "StreetlightControlCabinet", "StreetlightGroup"]


def _entities(
    conn: psycopg.Connection, kind: str, limit: int, offset: int, key: str | None, now: dt.datetime, tz: ZoneInfo
) -> list[dict[str, Any]]:
    """One page of entities of `kind` in inventory order, or the one entity with that `key` (id)."""
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    if kind == "Streetlight":
        rows = cur.execute(
            _LAMPS.format(where="WHERE l.id = %s" if key else ""),
            [list(WAITING), *([key] if key else []), limit, offset],
        ).fetchall()
        return [streetlight_entity(r, tz, _CITY) for r in rows]
    if kind == "StreetlightControlCabinet":
        rows = cur.execute(
            _CABINETS.format(where="WHERE c.id = %s" if key else ""), [now, *([key] if key else []), limit, offset]
        ).fetchall()
        return [cabinet_entity(r, _CITY) for r in rows]
    where, args = "", []
    if key:
        cabinet, _, circuit = key.rpartition("-C")
        if not circuit.isdigit() or not cabinet:
            return []
        where, args = "WHERE l.cabinet_id = %s AND l.circuit = %s", [cabinet, int(circuit)]
    rows = cur.execute(_GROUPS.format(where=where), [*args, limit, offset]).fetchall()
    return [group_entity(r) for r in rows]


def _respond(request: Request, body: Any, *, headers: dict[str, str] | None = None) -> FiniteJSONResponse:
    """NGSI-LD's two ways of naming the @context: in the body for `Accept: application/ld+json`, else a Link."""
    headers = dict(headers or {})
    if _LD in request.headers.get("accept", ""):
        ctx = {"@context": CONTEXT}
        body = [{**e, **ctx} for e in body] if isinstance(body, list) else {**body, **ctx}
        return FiniteJSONResponse(body, media_type=_LD, headers=headers)
    link = f'<{CONTEXT[0]}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
    headers["Link"] = ", ".join(x for x in (link, headers.get("Link")) if x)
    return FiniteJSONResponse(body, headers=headers)


@router.get("/entities")
async def entities(
    user: Viewer,
    request: Request,
    pool: SyncPoolDep,
    type_: Annotated[
        EntityType,
        Query(
            alias="type",
            description="the Smart Data Model: Streetlight (lamps), StreetlightControlCabinet, StreetlightGroup "
            "(a cabinet's circuit)",
            examples=["Streetlight"],
            openapi_examples={"lamps": {"value": "Streetlight"}, "cabinets": {"value": "StreetlightControlCabinet"}},
        ),
    ],
    options: Annotated[
        Literal["keyValues", "normalized"],
        filter_param("keyValues: the models' simplified form (what their JSON Schemas describe)", "keyValues"),
    ] = "normalized",
    count: Annotated[bool, filter_param("true: the total in the NGSILD-Results-Count header", True)] = False,
    limit: Annotated[int, limit_param(1000)] = 100,
    offset: Offset = 0,
) -> FiniteJSONResponse:
    """Role: viewer. A page of entities of one type, in inventory order, as an NGSI-LD broker answers
    `GET /ngsi-ld/v1/entities`: a JSON array, normalised unless `options=keyValues`, the models' @context in a
    `Link` header (or in each entity for `Accept: application/ld+json`), the next page in a `Link` with
    rel="next". Data: FIWARE Smart Data Models, dataModel.Streetlighting (CC BY 4.0)."""
    tz = ZoneInfo(str(getattr(request.app.state, "timezone", "Asia/Shanghai")))
    now = request.app.state.clock.now()
    kind = type_

    def load(conn: psycopg.Connection) -> tuple[list[dict[str, Any]], int | None]:
        page = _entities(conn, kind, limit, offset, None, now, tz)
        total = conn.execute(_COUNTS[kind]).fetchone()[0] if count else None  # type: ignore[index]
        return page, total

    page, total = await in_thread(pool, load)
    headers: dict[str, str] = {}
    if total is not None:
        headers["NGSILD-Results-Count"] = str(total)
    if len(page) == limit:
        nxt = request.url.include_query_params(offset=offset + limit)
        headers["Link"] = f'<{nxt}>; rel="next"'
    body = page if options == "keyValues" else [normalized(e) for e in page]
    return _respond(request, body, headers=headers)


@router.get("/entities/{entity_id}")
async def entity(
    user: Viewer,
    request: Request,
    pool: SyncPoolDep,
    entity_id: str,
    options: Annotated[
        Literal["keyValues", "normalized"],
        filter_param("keyValues: the models' simplified form (what their JSON Schemas describe)", "keyValues"),
    ] = "normalized",
) -> FiniteJSONResponse:
    """Role: viewer. One entity by its id, `urn:ngsi-ld:{type}:{id}` (a lamp `urn:ngsi-ld:Streetlight:XN-CD-000001`,
    a group `urn:ngsi-ld:StreetlightGroup:XN-CD-C0001-C2`)."""
    parsed = split_urn(entity_id)
    if parsed is None:
        raise ApiError(
            404, "not_found", f"{entity_id!r} is not an entity of this export: urn:ngsi-ld:{{type}}:{{id}}", "entity_id"
        )
    kind, key = parsed
    tz = ZoneInfo(str(getattr(request.app.state, "timezone", "Asia/Shanghai")))
    now = request.app.state.clock.now()
    found = await in_thread(pool, lambda conn: _entities(conn, kind, 1, 0, key, now, tz))
    if not found:
        raise ApiError(404, "not_found", f"no {kind} {key!r} in the inventory", "entity_id")
    return _respond(request, found[0] if options == "keyValues" else normalized(found[0]))

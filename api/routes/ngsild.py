"""Open data in NGSI-LD: the inventory and latest state as FIWARE Smart Data Models street-lighting entities
(`api.ngsild`), at the paths and with the query parameters of an NGSI-LD context broker's entity API, so a city
platform or an NGSI-LD tool reads them as it reads any broker."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import psycopg
from fastapi import APIRouter, Query, Request

from alerts.queries import waiting_faults
from api.deps import Offset, SyncPoolDep, Viewer, filter_param, in_thread, limit_param
from api.errors import ApiError
from api.jsonsafe import FiniteJSONResponse
from api.ngsild import CONTEXT, cabinet_entity, group_entity, normalized, split_urn, streetlight_entity
from inventory.queries import cabinets_page, circuit_groups, counts, lamps_page
from lighting.engine import held_cabinets
from telemetry.history import cabinet_meters
from telemetry.store import cabinet_contactors, lamps_latest

router = APIRouter(prefix="/ngsi-ld/v1", tags=["open data (NGSI-LD)"])

_CITY = "Xining"
_LD = "application/ld+json"

# How many entities of each type the export has (`inventory.queries.counts`'s key).
_COUNTED = {"Streetlight": "lamps", "StreetlightControlCabinet": "cabinets", "StreetlightGroup": "circuits"}

EntityType = Literal["Streetlight", "StreetlightControlCabinet", "StreetlightGroup"]


def _entities(
    conn: psycopg.Connection, kind: str, limit: int, offset: int, key: str | None, now: dt.datetime, tz: ZoneInfo
) -> list[dict[str, Any]]:
    """One page of entities of `kind` in inventory order, or the one entity with that `key` (id): the inventory's
    rows with what telemetry, the tickets and the schedules say of them now."""
    if kind == "Streetlight":
        lamps = lamps_page(conn, lamp_id=key, limit=limit, offset=offset)
        latest = lamps_latest(conn, [r["no"] for r in lamps])
        waiting = waiting_faults(conn, "lamp", [r["id"] for r in lamps])
        out = []
        for r in lamps:
            state = latest.get(r["no"], {})
            faults = list(state.get("faults") or []) + waiting.get(r["id"], [])
            out.append(streetlight_entity({**r, **state, "faults": faults}, tz, _CITY))
        return out
    if kind == "StreetlightControlCabinet":
        cabinets = cabinets_page(conn, cabinet_id=key, limit=limit, offset=offset)
        meters = cabinet_meters(conn, [r["no"] for r in cabinets])
        held = held_cabinets(conn, [r["id"] for r in cabinets], now)
        return [
            cabinet_entity({**r, "energy_wh": meters.get(r["no"]), "held": r["id"] in held}, _CITY) for r in cabinets
        ]
    cabinet, circuit = None, None
    if key:
        cabinet, _, number = key.rpartition("-C")
        if not number.isdigit() or not cabinet:
            return []
        circuit = int(number)
    groups = circuit_groups(conn, cabinet_id=cabinet, circuit=circuit, limit=limit, offset=offset)
    contactors = cabinet_contactors(conn, sorted({g["cabinet_no"] for g in groups}))
    out = []
    for g in groups:
        closed = contactors.get(g["cabinet_no"], [])
        out.append(group_entity({**g, "contactor": closed[g["circuit"] - 1] if len(closed) >= g["circuit"] else None}))
    return out


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
        total = counts(conn)[_COUNTED[kind]] if count else None
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

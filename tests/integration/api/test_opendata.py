"""The open-data export: every lamp, cabinet and circuit as FIWARE Smart Data Models entities, valid against the
models' own JSON Schemas (tests/fiware), paged as an NGSI-LD broker pages, with the latest state in them."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import psycopg
import pytest
from fastapi.testclient import TestClient
from referencing import Registry, Resource

from alerts.tickets import open_ticket
from api.ngsild import normalized
from gateway.codec import Message, decode_batch
from inventory.registry import load_registry
from kernel.database import Database
from lamplighter.runtime import Endpoints
from telemetry.history import compact_cabinet_day
from telemetry.schema import has_timescaledb
from telemetry.store import TelemetryStore
from tests.support import TESTS
from tests.support.factories import load_generated

FIWARE = TESTS / "fiware"
MODELS = ("Streetlight", "StreetlightControlCabinet", "StreetlightGroup")
LAMPS = 1500


def _validators() -> dict[str, jsonschema.Draft202012Validator]:
    """Each model's validator, the schemas found by their published `$id`s among the files here."""
    docs = [json.loads((FIWARE / m / "schema.json").read_text()) for m in MODELS]
    docs.append(json.loads((FIWARE / "common-schema.json").read_text()))
    registry: Registry = Registry().with_resources((d["$id"], Resource.from_contents(d)) for d in docs)
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    assert checker.conforms("2026-12-01T18:00:00Z", "date-time") and not checker.conforms("dusk", "date-time")
    return {
        m: jsonschema.Draft202012Validator(d, registry=registry, format_checker=checker)
        for m, d in zip(MODELS, docs, strict=False)
    }


VALIDATORS = _validators()


def _errors(entity: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in VALIDATORS[entity["type"]].iter_errors(entity)]


def test_the_schemas_accept_the_models_own_examples_and_refuse_a_wrong_entity() -> None:
    """The validators are set up right: the models' examples pass, a lamp with a status the model lacks fails."""
    for m in MODELS:
        assert _errors(json.loads((FIWARE / m / "example.json").read_text())) == [], m
    lamp = json.loads((FIWARE / "Streetlight" / "example.json").read_text())
    assert _errors({**lamp, "status": "flickering"}) and _errors({**lamp, "dateLastLampChange": "last week"})


@pytest.fixture
def client(endpoints: Endpoints, api_as: Callable[..., TestClient]) -> Iterator[TestClient]:
    now = dt.datetime.now(dt.UTC)
    load_generated(endpoints.database_url, LAMPS, seed=3)
    with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
        registry = load_registry(conn)
        (cab, district, circuits) = conn.execute(
            "SELECT id, district, circuits FROM cabinets ORDER BY no LIMIT 1"
        ).fetchone()  # type: ignore[misc]
        open_ticket(
            conn, priority="P1", fault="tilt", asset_type="lamp", asset_id="XN-CD-000002", district="cd",
            source="device", first_seen=now, now=now,
        )  # fmt: skip
    ms = int(now.timestamp() * 1000)
    contactors = json.dumps([i == 0 for i in range(circuits)])
    msgs = [
        Message(
            "sl/cd/lamp/XN-CD-000001/state",
            b'{"ts": %d, "seq": 1, "on": true, "dim": 60, "power_w": 48.5, "voltage_v": 229.0, "current_a": 0.21,'
            b' "energy_wh": 123456, "faults": []}' % ms,
            ms,
        ),
        Message(
            f"sl/{district}/cabinet/{cab}/state",
            b'{"ts": %d, "seq": 1, "door_open": false, "contactors": %s, "energy_wh": 7654321, "faults": []}'
            % (ms, contactors.encode()),
            ms,
        ),
    ]

    async def write() -> None:
        store = TelemetryStore(Database(endpoints.database_url))
        batch = decode_batch(msgs, registry, now_ms=ms, retention_ms=86_400_000)
        assert not batch.rejects, batch.rejects
        await store.write(batch)
        await store.close()

    import asyncio

    asyncio.run(write())
    c = api_as("viewer")
    c.cabinet = cab  # type: ignore[attr-defined]
    c.url = endpoints.database_url  # type: ignore[attr-defined]
    c.day = now.date()  # type: ignore[attr-defined]
    yield c


def _all(c: TestClient, kind: str, **params: Any) -> list[dict[str, Any]]:
    """Every entity of `kind`, following the pages' rel="next" links as a harvester would."""
    out: list[dict[str, Any]] = []
    url: str | None = f"/ngsi-ld/v1/entities?type={kind}&limit=400&options=keyValues&count=true"
    total = None
    while url:
        r = c.get(url, **params)
        assert r.status_code == 200, r.text
        total = int(r.headers["NGSILD-Results-Count"])
        out += r.json()
        nxt = [p for p in r.headers["Link"].split(", ") if 'rel="next"' in p]
        url = nxt[0].split(">")[0].lstrip("<") if nxt else None
    assert len(out) == total
    return out


@pytest.mark.services
def test_every_lamp_cabinet_and_circuit_is_a_valid_entity(client: TestClient) -> None:
    lamps = _all(client, "Streetlight")
    cabinets = _all(client, "StreetlightControlCabinet")
    groups = _all(client, "StreetlightGroup")
    assert len(lamps) == LAMPS and len({e["id"] for e in lamps}) == LAMPS
    bad = {e["id"]: _errors(e) for e in [*lamps, *cabinets, *groups] if _errors(e)}
    assert bad == {}
    # The references hold together: every lamp is in exactly one group, of its own cabinet, listed by the cabinet.
    group_ids = {g["id"]: g for g in groups}
    members = [lamp for g in groups for lamp in g["refStreetlight"]]
    assert sorted(members) == sorted(e["id"] for e in lamps)
    for lamp in lamps:
        group = group_ids[lamp["refStreetlightGroup"]]
        assert lamp["id"] in group["refStreetlight"]
        assert group["refStreetlightControlCabinet"] == lamp["refStreetlightControlCabinet"]
    assert {g for cab in cabinets for g in cab["refStreetlightGroup"]} == set(group_ids)


@pytest.mark.services
def test_the_latest_state_is_in_the_entities(client: TestClient) -> None:
    def one(urn: str) -> dict[str, Any]:
        r = client.get(f"/ngsi-ld/v1/entities/{urn}", params={"options": "keyValues"})
        assert r.status_code == 200, r.text
        assert _errors(r.json()) == []
        return r.json()  # type: ignore[no-any-return]

    lit = one("urn:ngsi-ld:Streetlight:XN-CD-000001")
    assert (lit["powerState"], lit["illuminanceLevel"], lit["powerConsumption"]) == ("low", 0.6, 48.5)
    assert lit["lifetimePowerConsumption"] == 123.456 and lit["status"] == "ok"
    assert lit["observationDateTime"].endswith("Z") and lit["location"]["type"] == "Point"
    leaning = one("urn:ngsi-ld:Streetlight:XN-CD-000002")  # a live tilt ticket, no report yet
    assert leaning["status"] == "columnIssue" and "powerState" not in leaning
    cab = client.cabinet  # type: ignore[attr-defined]
    cabinet = one(f"urn:ngsi-ld:StreetlightControlCabinet:{cab}")
    assert cabinet["energyConsumed"] == 7654.321 and cabinet["workingMode"] == "automatic"
    first, *rest = cabinet["refStreetlightGroup"]
    assert one(first)["powerState"] == "on" and all(one(g)["powerState"] == "off" for g in rest)

    # The normalised form says the same, attribute by attribute, and names the @context as NGSI-LD asks.
    r = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Streetlight:XN-CD-000001")
    assert 'rel="http://www.w3.org/ns/json-ld#context"' in r.headers["Link"]
    full = r.json()
    assert full == normalized(lit)
    assert full["location"]["type"] == "GeoProperty" and full["refStreetlightGroup"]["type"] == "Relationship"
    assert full["powerState"] == {"type": "Property", "value": "low", "observedAt": lit["observationDateTime"]}
    ld = client.get(
        "/ngsi-ld/v1/entities", params={"type": "Streetlight", "limit": 2}, headers={"Accept": "application/ld+json"}
    )
    assert ld.headers["content-type"].startswith("application/ld+json")
    assert all("@context" in e for e in ld.json()) and len(ld.json()) == 2

    for urn in ("urn:ngsi-ld:Streetlight:XN-NO-000000", "urn:ngsi-ld:Lamp:XN-CD-000001", "XN-CD-000001"):
        assert client.get(f"/ngsi-ld/v1/entities/{urn}").status_code == 404
    assert client.get("/ngsi-ld/v1/entities", params={"type": "Lamp"}).status_code == 422


@pytest.mark.services
def test_a_cabinets_meter_is_read_from_the_compact_history_too(client: TestClient) -> None:
    """Once the day is packed into the compact history its raw readings are gone: the entity's meter reading
    comes from the packed day."""
    with psycopg.connect(client.url, autocommit=True) as conn:  # type: ignore[attr-defined]
        if has_timescaledb(conn):
            pytest.skip("TimescaleDB compresses the history itself: there is no compact cabinet day to read")
        packed, _ = compact_cabinet_day(conn, client.day)  # type: ignore[attr-defined]
        assert packed == 1
        assert conn.execute("SELECT count(*) FROM cabinet_readings").fetchone() == (0,)
    urn = f"urn:ngsi-ld:StreetlightControlCabinet:{client.cabinet}"  # type: ignore[attr-defined]
    cabinet = client.get(f"/ngsi-ld/v1/entities/{urn}", params={"options": "keyValues"}).json()
    assert cabinet["energyConsumed"] == cabinet["lastMeterReading"] == 7654.321

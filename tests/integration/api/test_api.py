"""The minimal API against a real database and broker."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from gateway.codec import Message, decode_batch
from inventory.registry import load_registry
from kernel.clock import Clock
from kernel.database import Database
from lamplighter.runtime import Endpoints
from seeds.generator import generate
from telemetry.schema import maintain_partitions
from telemetry.store import TelemetryStore
from tests.support.factories import load_generated
from tests.support.services import Services

pytestmark = pytest.mark.services


@pytest.fixture
def client(endpoints: Endpoints, api_as: Callable[..., TestClient]) -> Iterator[TestClient]:
    load_generated(endpoints.database_url, 1000, seed=3)
    c = api_as("viewer")
    yield c


def test_health_reports_database_and_broker(client: TestClient) -> None:
    r = client.get("/api/v1/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["database"]["ok"] and body["broker"]["ok"]
    assert "latency_ms" in body["database"] and "gateways" in body["ingest"]
    token = client.headers.pop("Authorization")
    try:
        anonymous = client.get("/api/v1/health").json()  # a monitor without a login: what is up, nothing more
    finally:
        client.headers["Authorization"] = token
    assert anonymous == {"status": "ok", **{k: {"ok": body[k]["ok"]} for k in ("database", "broker", "ingest")}}


def test_lamps_list_filters_and_pages(client: TestClient) -> None:
    r = client.get("/api/v1/lamps", params={"district": "cx", "limit": 5})
    body = r.json()
    assert r.status_code == 200 and len(body["items"]) == 5 and body["total"] > 5
    assert {i["district"] for i in body["items"]} == {"cx"}
    cab = body["items"][0]["cabinet_id"]
    r2 = client.get("/api/v1/lamps", params={"cabinet": cab, "limit": 1000}).json()
    assert r2["total"] >= 50 and {i["cabinet_id"] for i in r2["items"]} == {cab}
    page2 = client.get("/api/v1/lamps", params={"district": "cx", "limit": 5, "offset": 5}).json()
    assert {i["id"] for i in page2["items"]}.isdisjoint({i["id"] for i in body["items"]})


def test_unknown_lamp_and_bad_query_get_clear_errors(client: TestClient) -> None:
    r = client.get("/api/v1/lamps/XN-NO-000000")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found" and "XN-NO-000000" in r.json()["error"]["message"]
    r = client.get("/api/v1/lamps", params={"limit": 0})
    assert r.status_code == 422 and r.json()["error"]["field"] == "limit"
    r = client.get("/api/v1/reports/nightly")  # a city not sampled yet: no night to report, and why
    assert r.status_code == 404 and "no lighting-rate samples yet" in r.json()["error"]["message"]


@pytest.mark.asyncio
async def test_lamp_state_telemetry_and_quarantine(endpoints: Endpoints, api_as: Callable[..., TestClient]) -> None:
    load_generated(endpoints.database_url, 1000, seed=3)
    with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
        registry = load_registry(conn)
    now = int(datetime.now(UTC).timestamp() * 1000)
    msgs = [
        Message(
            "sl/cd/lamp/XN-CD-000001/state",
            b'{"ts": %d, "seq": %d, "on": true, "dim": 60, "power_w": 90.5, "faults": []}' % (now - i, 9 - i),
            now,
        )
        for i in range(3)
    ]
    msgs.append(Message("sl/cd/lamp/XN-CD-000001/state", b"garbage", now))
    store = TelemetryStore(Database(endpoints.database_url))
    await store.write(decode_batch(msgs, registry, now_ms=now, retention_ms=86_400_000))
    await store.close()
    c = api_as("viewer")
    lamp = c.get("/api/v1/lamps/XN-CD-000001").json()
    assert lamp["district"] == "cd" and lamp["latest"]["seq"] == 9 and lamp["latest"]["dim"] == 60
    frm = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    tel = c.get("/api/v1/lamps/XN-CD-000001/telemetry", params={"from": frm}).json()
    assert [i["seq"] for i in tel["items"]] == [7, 8, 9]
    q = c.get("/api/v1/quarantine").json()
    assert q["total"] == 1 and q["items"][0]["reason"] == "not_json" and q["items"][0]["payload"] == "garbage"


@pytest.mark.asyncio
async def test_cabinets_list_with_circuits_counts_and_filters(
    endpoints: Endpoints, api_as: Callable[..., TestClient]
) -> None:
    load_generated(endpoints.database_url, 4000, seed=3)  # more than one cabinet a district
    with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
        registry = load_registry(conn)
        (dist,) = conn.execute("SELECT district FROM cabinets GROUP BY 1 ORDER BY count(*) DESC LIMIT 1").fetchone()  # type: ignore[misc]
        cx = [r[0] for r in conn.execute("SELECT id FROM cabinets WHERE district = %s ORDER BY no", (dist,))]
        assert len(cx) >= 2
        circuits = conn.execute("SELECT circuits FROM cabinets WHERE id = %s", (cx[0],)).fetchone()[0]  # type: ignore[index]
    now = int(datetime.now(UTC).timestamp() * 1000)
    reports = [  # the first cabinet: door open and a blown fuse; the second: closed and sound
        (cx[0], b'{"ts": %d, "seq": 1, "door_open": true, "contactors": [true], "faults": ["circuit_open"]}' % now),
        (cx[1], b'{"ts": %d, "seq": 1, "door_open": false, "contactors": [true], "faults": []}' % now),
    ]
    msgs = [Message(f"sl/{dist}/cabinet/{cab}/state", body, now) for cab, body in reports]
    store = TelemetryStore(Database(endpoints.database_url))
    await store.write(decode_batch(msgs, registry, now_ms=now, retention_ms=86_400_000))
    await store.close()
    c = api_as("viewer")

    def ids(**params: object) -> list[str]:
        r = c.get("/api/v1/cabinets", params={"limit": 1000, **params})
        assert r.status_code == 200, r.text
        assert r.json()["total"] == len(r.json()["items"])
        return [i["id"] for i in r.json()["items"]]

    assert ids(district=dist) == cx
    assert ids(faulted=True) == [cx[0]] and ids(door_open=True) == [cx[0]]
    assert ids(faulted=False) == [cx[1]]  # cabinets that never reported are in neither
    body = c.get("/api/v1/cabinets", params={"district": dist, "limit": 1}).json()
    first = body["items"][0]
    assert body["total"] == len(cx) and first["id"] == cx[0] and first["circuits"] == circuits
    lamps = c.get("/api/v1/lamps", params={"cabinet": cx[0], "limit": 1000}).json()["items"]
    per_circuit = [sum(1 for lamp in lamps if lamp["circuit"] == k) for k in range(1, circuits + 1)]
    assert first["circuit_lamps"] == [n for n in per_circuit if n] and first["lamps"] == len(lamps)
    assert first["latest"]["door_open"] is True and first["latest"]["faults"] == ["circuit_open"]
    assert set(first["now"]) == {"due", "lit", "dark", "unknown", "day_burning", "rate"}
    assert first["now"]["lit"] + first["now"]["dark"] + first["now"]["unknown"] == first["now"]["due"]
    road = first["road_id"]
    assert cx[0] in ids(road=road) and all(i in cx for i in ids(road=road))
    r = c.get("/api/v1/cabinets", params={"faulted": "maybe"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "faulted"


@pytest.mark.asyncio
async def test_quarantine_filters_by_device_topic_and_time(
    endpoints: Endpoints, api_as: Callable[..., TestClient]
) -> None:
    load_generated(endpoints.database_url, 1000, seed=3)
    with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
        registry = load_registry(conn)
    now = int(datetime.now(UTC).timestamp() * 1000)
    hour = 3_600_000
    bad = [  # (topic, received ms): every one quarantined, not JSON
        ("sl/cd/lamp/XN-CD-000001/state", now - 3 * hour),
        ("sl/cd/lamp/XN-CD-000002/state", now - 2 * hour),
        ("sl/cd/lamp/XN-CD-000001/status", now - hour),
        ("sl/cx/cabinet/XN-CX-C0001/state", now),
    ]
    store = TelemetryStore(Database(endpoints.database_url))
    for topic, received in bad:
        await store.write(decode_batch([Message(topic, b"{", received)], registry, now_ms=now, retention_ms=hour))
    await store.close()
    c = api_as("viewer")

    def topics(**params: object) -> list[str]:
        r = c.get("/api/v1/quarantine", params=params)
        assert r.status_code == 200, r.text
        assert r.json()["total"] == len(r.json()["items"])
        return [i["topic"] for i in r.json()["items"]]

    assert topics() == [t for t, _ in reversed(bad)]
    assert topics(device="XN-CD-000001") == [bad[2][0], bad[0][0]]
    assert topics(topic=bad[1][0]) == [bad[1][0]]
    assert topics(topic="sl/cd/lamp/+/state") == [bad[1][0], bad[0][0]]
    assert topics(topic="sl/cd/#") == [bad[2][0], bad[1][0], bad[0][0]]
    assert topics(topic="sl/cd/lamp/XN-CD-00000./state") == []  # no regular expressions from outside
    iso = datetime.fromtimestamp((now - 2 * hour) / 1000, UTC).isoformat()
    assert topics(since=iso) == [bad[3][0], bad[2][0], bad[1][0]]
    assert topics(since=now - 2 * hour, until=now - hour + 1, reason="not_json") == [bad[2][0], bad[1][0]]
    for params in ({"topic": "sl/c+/#"}, {"topic": "sl/#/state"}, {"since": "yesterday"}):
        r = c.get("/api/v1/quarantine", params=params)
        assert r.status_code == 422 and r.json()["error"]["field"] == next(iter(params)), r.text


@pytest.mark.asyncio
async def test_telemetry_defaults_to_the_last_day_of_the_city_clock(
    endpoints: Endpoints, api_as: Callable[..., TestClient]
) -> None:
    """A demo on a night two days ahead (`--clock-start`): a lamp's readings show without from/to."""
    clock = Clock(start=datetime.now(UTC) + timedelta(days=2), speed=1.0)
    load_generated(endpoints.database_url, 1000, seed=3)
    with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
        maintain_partitions(conn, today=clock.now().date(), drop=False)
        registry = load_registry(conn)
    now = clock.now_ms()
    body = b'{"ts": %d, "seq": 1, "on": true, "dim": 100, "faults": []}' % now
    store = TelemetryStore(Database(endpoints.database_url))
    await store.write(
        decode_batch(
            [Message("sl/cd/lamp/XN-CD-000001/state", body, now)], registry, now_ms=now, retention_ms=86_400_000
        )
    )
    await store.close()
    c = api_as("viewer", clock=clock)
    tel = c.get("/api/v1/lamps/XN-CD-000001/telemetry").json()
    assert [i["seq"] for i in tel["items"]] == [1], tel


def test_the_api_answers_at_once_after_the_database_dropped_its_connections(
    services: Services, client: TestClient, endpoints: Endpoints
) -> None:
    """A PostgreSQL restart or failover: the pools' idle connections are dead; the next calls still answer."""
    assert client.get("/api/v1/lamps", params={"limit": 1}).status_code == 200
    services.drop_connections(endpoints.database_url)
    for path in ("/api/v1/lamps", "/api/v1/lamps/XN-CD-000001", "/api/v1/lighting-rate", "/api/v1/tickets"):
        r = client.get(path, params={"limit": 1} if path.endswith("s") else None)
        assert r.status_code == 200, (path, r.status_code, r.text)


def test_with_the_database_away_calls_answer_503_and_recover(
    services: Services, client: TestClient, endpoints: Endpoints
) -> None:
    with services.database_away(endpoints.database_url):
        r = client.get("/api/v1/lamps", params={"limit": 1})
        assert r.status_code == 503 and r.json()["error"]["code"] == "database_unavailable", r.text
        assert r.headers["retry-after"] == "5"
    assert client.get("/api/v1/lamps", params={"limit": 1}).status_code == 200


def test_every_query_parameter_is_documented_with_examples(endpoints: Endpoints) -> None:
    """/docs is where a newcomer learns the filters: each says what it means and shows values to try."""
    app = create_app(database_url=endpoints.database_url, broker=endpoints.as_("lamplighter-api"))
    spec = app.openapi()
    missing = [
        f"{method.upper()} {path} {p['name']}"
        for path, item in spec["paths"].items()
        for method, op in item.items()
        for p in op.get("parameters", [])
        if p["in"] == "query" and not (p.get("description") and p.get("examples"))
    ]
    assert missing == []
    lamps = {p["name"]: p for p in spec["paths"]["/api/v1/lamps"]["get"]["parameters"]}
    assert lamps["district"]["examples"] == {'"cd"': {"value": "cd"}}


def test_map_layout_has_the_streets_borders_and_rivers_of_the_inventory(
    client: TestClient, endpoints: Endpoints
) -> None:
    inv = generate(1000, seed=3)
    body = client.get("/api/v1/map/layout").json()
    assert body["lamps"] == 1000
    # Districts come with their borders as loaded, and a centre to put the name at.
    districts = {d["code"]: d for d in body["districts"]}
    for i, d in enumerate(inv.districts):
        assert districts[d.code]["border"] is True and districts[d.code]["centre"] == [d.lon, d.lat]
        assert np.allclose(districts[d.code]["outline"], inv.district_boundary[i], atol=1e-6)
    # Every road the lamps refer to has its class, names and path.
    roads = {r["id"]: r for r in body["roads"]}
    assert set(roads) == set(inv.road_id.tolist())
    for i, rid in enumerate(inv.road_id.tolist()):
        r = roads[rid]
        assert (r["class"], r["name_en"]) == (inv.road_class[i], inv.road_name_en[i])
        assert np.allclose(r["path"], inv.road_path[i], atol=1e-6)
    assert {w["code"]: w["name_zh"] for w in body["waterways"]} == {
        "huangshui": "湟水", "beichuan": "北川河", "nanchuan": "南川河"
    }  # fmt: skip
    assert all(len(w["path"]) > 100 for w in body["waterways"])
    # The ids come as a prefix and a serial per lamp; spelt out they are the lamps' ids in the state's order.
    cols = body["id_columns"]
    prefix = np.frombuffer(base64.b64decode(cols["prefix"]), dtype="<i2")
    serial = np.frombuffer(base64.b64decode(cols["serial"]), dtype="<i4")
    ids = [cols["prefixes"][p] + str(n).zfill(cols["widths"][p]) for p, n in zip(prefix, serial, strict=True)]
    with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
        assert ids == [r[0] for r in conn.execute("SELECT id FROM lamps ORDER BY no")]
    # Compressed once for every client that takes gzip; plain for one that does not.
    packed = client.get("/api/v1/map/layout", headers={"Accept-Encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip" and packed.json() == body
    plain = client.get("/api/v1/map/layout", headers={"Accept-Encoding": "identity"})
    assert plain.headers.get("content-encoding", "identity") == "identity" and plain.json() == body


def test_map_ids_as_columns_spell_out_every_id() -> None:
    from api.routes.fleetmap import _id_columns

    ids = ["XN-CD-000001", "XN-CD-000002", "XN-CZ-000010", "A7", "B-0007", "B-7", "C123456789012", "0"]
    cols = _id_columns(ids)
    assert cols is not None
    prefix = np.frombuffer(base64.b64decode(cols["prefix"]), dtype="<i2")
    serial = np.frombuffer(base64.b64decode(cols["serial"]), dtype="<i4")
    assert [cols["prefixes"][p] + str(n).zfill(cols["widths"][p]) for p, n in zip(prefix, serial, strict=True)] == ids
    assert _id_columns(["XN-CD-000001", "LAMP-A"]) is None  # not every id ends in a number: the plain list


def test_map_layout_of_an_inventory_loaded_without_geometry(
    endpoints: Endpoints, api_as: Callable[..., TestClient]
) -> None:
    """An inventory loaded before migration 20 has no borders or paths: the map gets the lamps' hulls instead."""
    load_generated(endpoints.schema_url, 1000, seed=3)
    with psycopg.connect(endpoints.schema_url, autocommit=True) as conn:
        conn.execute("UPDATE districts SET boundary = NULL")
        conn.execute("UPDATE roads SET path = NULL")
        conn.execute("DELETE FROM waterways")
    c = api_as("viewer")
    body = c.get("/api/v1/map/layout").json()
    assert body["waterways"] == [] and all(r["path"] is None for r in body["roads"])
    lamps = body["lamps"]
    lon = np.frombuffer(base64.b64decode(body["lon"]), dtype="<f4")
    lat = np.frombuffer(base64.b64decode(body["lat"]), dtype="<f4")
    assert lamps == 1000
    for d in body["districts"]:
        assert d["border"] is False and len(d["outline"]) >= 3
        hull = np.array(d["outline"])
        # Every vertex of the hull is one of the district's lamps (to the 5 decimals it is rounded to).
        assert (np.abs(hull[:, None, 0] - lon[None, :]).min(axis=1) < 1e-4).all()
        assert (np.abs(hull[:, None, 1] - lat[None, :]).min(axis=1) < 1e-4).all()

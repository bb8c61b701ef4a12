"""Schedules and the lighting rate through the API, on the real database, with readings stored by the gateway's
own store; the clock is pinned to an instant of a Xining night."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from gateway.codec import Message, decode_batch
from inventory.registry import load_registry
from kernel.clock import Clock
from kernel.database import Database
from lamplighter.runtime import Endpoints
from telemetry.store import TelemetryStore
from tests.support.auth import sign_in
from tests.support.factories import load_generated

pytestmark = pytest.mark.services

CST = dt.timezone(dt.timedelta(hours=8))
NIGHT = dt.datetime(2026, 12, 1, 22, 0, tzinfo=CST)


def _store_reports(url: str, reports: list[tuple[str, str, bytes]], now_ms: int) -> None:
    """Decode and store (topic, payload) pairs exactly as the gateway does."""
    with psycopg.connect(url) as conn:
        registry = load_registry(conn)
    messages = [Message(f"sl/{d}/lamp/{lamp}/state", body, now_ms, None) for lamp, d, body in reports]
    batch = decode_batch(messages, registry, now_ms=now_ms, retention_ms=90 * 86_400_000)
    assert not batch.rejects, batch.rejects[:3]

    async def write() -> None:
        store = TelemetryStore(Database(url))
        try:
            await store.write(batch)
        finally:
            await store.close()

    asyncio.run(write())


def _report(ts_ms: int, *, on: bool = True, dim: int = 100, power: float = 150.0, faults: str = "") -> bytes:
    return (
        f'{{"ts":{ts_ms},"seq":1,"on":{"true" if on else "false"},"dim":{dim},"power_w":{power},"faults":[{faults}]}}'
    ).encode()


@pytest.fixture
def city(endpoints: Endpoints) -> list[tuple[str, str, str, int]]:
    """A seeded city of 1,000 lamps; returns (lamp id, district, cabinet, road id) in lamp order."""
    load_generated(endpoints.database_url, 1000, seed=3)
    with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
        return [
            (r[0], r[1], r[2], r[3])
            for r in conn.execute("SELECT id, district, cabinet_id, road_id FROM lamps ORDER BY no")
        ]


def _client(ep: Endpoints, at: dt.datetime) -> TestClient:
    # A clock that reads `at` now and runs at an imperceptible speed: every request sees the same night.
    clock = Clock(start=at, speed=1e-6)
    client = TestClient(create_app(database_url=ep.database_url, broker=ep.as_("lamplighter-api"), clock=clock))
    sign_in(client, ep.database_url, "operator")
    return client


def test_rate_counts_every_condition_exactly(endpoints: Endpoints, city: list[tuple[str, str, str, int]]) -> None:
    ts = int(NIGHT.timestamp() * 1000) - 60_000
    reports = []
    for i, (lamp, district, _, _) in enumerate(city):
        if i < 970:
            reports.append((lamp, district, _report(ts)))
        elif i < 980:
            reports.append((lamp, district, _report(ts, faults='"lamp_failure"', power=2.0)))
        elif i < 985:
            reports.append((lamp, district, _report(ts, on=False, dim=0, power=0.0)))
        elif i < 990:
            reports.append((lamp, district, _report(ts - 3_600_000)))  # an hour old: stale
        # the last 10 never report
    _store_reports(endpoints.database_url, reports, ts)
    with _client(endpoints, NIGHT) as c:
        body = c.get("/api/v1/lighting-rate", params={"group_by": "road_class"}).json()
        city_row = body["city"]
        assert (city_row["due"], city_row["lit"], city_row["dark"], city_row["unknown"]) == (1000, 970, 15, 15)
        assert city_row["rate"] == 97.0 and city_row["meets_target"] is False and city_row["target"] == 98.0
        assert sum(g["due"] for g in body["groups"]) == 1000 and sum(g["dark"] for g in body["groups"]) == 15
        for group_by in ("district", "road", "cabinet"):
            rows = c.get("/api/v1/lighting-rate", params={"group_by": group_by}).json()["groups"]
            assert sum(g["lit"] for g in rows) == 970, group_by
        lamp = c.get(f"/api/v1/lamps/{city[975][0]}").json()
        assert (lamp["due"], lamp["condition"]) == (True, "dark")
        assert c.get(f"/api/v1/lamps/{city[0][0]}").json()["condition"] == "lit"
        assert c.get(f"/api/v1/lamps/{city[999][0]}").json()["condition"] == "unknown"
        roads = c.get("/api/v1/lighting-rate/roads").json()
        assert roads["total"] == len({r for *_, r in city})
        assert c.get("/api/v1/lighting-rate", params={"group_by": "street"}).status_code == 422

        # One district alone: its own counts, and its road classes, roads and cabinets as the groups.
        district = city[-1][1]
        mine = [i for i, (_, d, _, _) in enumerate(city) if d == district]
        want = (len(mine), sum(i < 970 for i in mine), sum(970 <= i < 985 for i in mine), sum(i >= 985 for i in mine))
        for group_by in ("district", "road_class", "road", "cabinet"):
            r = c.get("/api/v1/lighting-rate", params={"district": district, "group_by": group_by})
            assert r.status_code == 200, r.text
            body = r.json()
            row = body["city"]
            assert body["district"] == district
            assert (row["due"], row["lit"], row["dark"], row["unknown"]) == want, group_by
            assert sum(g["due"] for g in body["groups"]) == want[0] and sum(g["lit"] for g in body["groups"]) == want[1]
        assert [g["key"] for g in body["groups"]] == sorted({cab for _, d, cab, _ in city if d == district})
        assert c.get("/api/v1/lighting-rate", params={"district": "zz"}).status_code == 404

    noon = dt.datetime(2026, 12, 2, 12, 0, tzinfo=CST)
    with _client(endpoints, noon) as c:
        day = c.get("/api/v1/lighting-rate").json()["city"]
        assert day["due"] == 0 and day["rate"] is None and day["meets_target"] is None


def test_schedules_by_scope(endpoints: Endpoints, city: list[tuple[str, str, str, int]]) -> None:
    lamp, district, cabinet, _ = city[0]
    with _client(endpoints, NIGHT) as c:
        default = c.get("/api/v1/schedules/city/all").json()
        assert default["profile"]["mode"] == "astro" and default["profile"]["timezone"] == "Asia/Shanghai"
        assert (default["profile"]["on_offset_min"], default["profile"]["off_offset_min"]) == (10, -10)

        # A district on a fixed 23:00 start: its lamps are not due at 22:00 any more, the others still are.
        r = c.put(
            f"/api/v1/schedules/district/{district}",
            json={"profile": {"mode": "fixed", "on_at": "23:00", "off_at": "06:00"}},
        )
        assert r.status_code == 200, r.text
        assert r.json()["profile"]["on_at"] == "23:00"
        in_district = sum(1 for _, d, _, _ in city if d == district)
        assert c.get("/api/v1/lighting-rate").json()["city"]["due"] == 1000 - in_district
        assert c.get(f"/api/v1/lamps/{lamp}").json()["due"] is False

        # A lamp inside it on `always` wins over its district.
        assert c.put(f"/api/v1/schedules/lamp/{lamp}", json={"profile": {"mode": "always"}}).status_code == 200
        assert c.get(f"/api/v1/lamps/{lamp}").json()["due"] is True

        # A maintenance window on its cabinet takes the cabinet's lamps out of the figures.
        # Its start written as the field protocol writes times (epoch milliseconds), its end in ISO 8601.
        start = int(dt.datetime.fromisoformat("2026-12-01T21:00:00+08:00").timestamp() * 1000)
        window = {"kind": "maintenance", "start": start, "end": "2026-12-01T23:30:00+08:00"}
        r = c.put(f"/api/v1/schedules/cabinet/{cabinet}", json={"windows": [window]})
        assert r.status_code == 200, r.text
        stored = r.json()["windows"][0]
        assert dt.datetime.fromisoformat(stored["start"]) == dt.datetime.fromisoformat("2026-12-01T21:00:00+08:00")
        assert c.get(f"/api/v1/lamps/{lamp}").json()["condition"] == "excluded"

        # Removing the district's schedule hands its lamps back to the city's.
        assert c.delete(f"/api/v1/schedules/district/{district}").status_code == 204
        assert c.get(f"/api/v1/schedules/district/{district}").status_code == 404

        bad = c.put("/api/v1/schedules/district/cd", json={"profile": {"mode": "fixed", "on_at": "7pm"}})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "profile.on_at"
        assert c.put("/api/v1/schedules/district/zz", json={"profile": {"mode": "always"}}).status_code == 404
        assert c.put("/api/v1/schedules/street/x", json={}).status_code == 422
        assert c.put("/api/v1/schedules/city/all", json={"windows": []}).json()["error"]["field"] == "profile"


def test_an_api_on_its_own_follows_what_the_gateway_stores(
    endpoints: Endpoints, city: list[tuple[str, str, str, int]]
) -> None:
    ts = int(NIGHT.timestamp() * 1000) - 60_000
    with _client(endpoints, NIGHT) as c:
        assert c.get("/api/v1/lighting-rate").json()["city"]["unknown"] == 1000
        _store_reports(endpoints.database_url, [(lamp, d, _report(ts)) for lamp, d, _, _ in city[:600]], ts)
        deadline = time.monotonic() + 10
        while c.get("/api/v1/lighting-rate").json()["city"]["lit"] != 600:
            assert time.monotonic() < deadline, "the API never saw the stored reports"
            time.sleep(0.2)

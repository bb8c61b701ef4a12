"""Poison end to end: `lamplighter gateway` as its own process takes every kind of bad message a broken device
or an attacker can send, and ingest goes on: each bad one quarantined with its reason, every good one stored."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from kernel.database import database_of
from lamplighter.runtime import Endpoints
from simulator.poison import poison_messages
from simulator.wire import RawPublisher
from tests.support.auth import sign_in
from tests.support.factories import GatewayFactory
from tests.support.gateway import GatewayChild, count, lamp_ids, seed, wait_for
from tests.support.services import Services

pytestmark = pytest.mark.services


@pytest.fixture
def api(endpoints: Endpoints) -> Iterator[TestClient]:
    app = create_app(database_url=endpoints.database_url, broker=endpoints.as_("lamplighter-api"), ingest_stall_s=3)
    with TestClient(app) as c:
        sign_in(c, endpoints.database_url, "viewer")  # the health's details are for signed-in users
        yield c


@pytest.mark.slow
def test_poison_messages_are_quarantined_and_1000_good_ones_land(
    endpoints: Endpoints, client_id: str, api: TestClient
) -> None:
    url = endpoints.database_url
    seed(url, 500)
    ids = lamp_ids(url, 500)
    with psycopg.connect(endpoints.schema_url, autocommit=True) as conn:
        cabinet, cab_lamp = conn.execute(
            "SELECT c.id, l.id FROM cabinets c JOIN lamps l ON l.cabinet_id = c.id ORDER BY l.no LIMIT 1"
        ).fetchone() or ("", "")
        # A rule of the city's DBA that the codec knows nothing of: the database refuses, the gateway must cope.
        conn.execute("ALTER TABLE lamp_readings ADD CONSTRAINT plausible_power CHECK (power_w < 4000)")
    assert api.get("/api/v1/health").json()["ingest"]["ok"] is None  # no gateway has run yet
    gw = GatewayChild(endpoints, client_id)
    pub = RawPublisher(endpoints.as_("lamplighter-headend"), client_id + "-pub")
    try:
        assert gw.subscribed.wait(30), "gateway did not subscribe"
        now = int(time.time() * 1000)
        lamp, district = ids[0]
        other = _other_district(url, district)
        every_district = _districts(url)
        poison = poison_messages(now, lamp, district, cabinet, cab_lamp, other)
        for _, topic, payload in poison:
            pub.publish(topic, payload)
        good = []
        for i in range(1000):
            lamp_id, d = ids[i % len(ids)]
            body = {"ts": now + i, "seq": 100 + i, "on": True, "dim": 100, "power_w": 100.0, "faults": []}
            good.append((f"sl/{d}/lamp/{lamp_id}/state".encode(), json.dumps(body).encode()))
        pub.publish_batch(good)
        published = time.monotonic()
        while count(url, "SELECT count(*) FROM lamp_readings WHERE seq >= 100") < 1000:
            assert time.monotonic() - published < 5, "the 1000 good reports were not all stored within 5 s"
            time.sleep(0.1)
        stored_in = time.monotonic() - published
        assert gw.proc.poll() is None, "the gateway exited:\n" + "".join(gw.log[-20:])
        time.sleep(1)
        with psycopg.connect(url) as conn:
            got = Counter(r[0] for r in conn.execute("SELECT reason FROM quarantine"))
            longest_topic = conn.execute("SELECT max(length(topic)) FROM quarantine").fetchone()
            refused = conn.execute("SELECT detail FROM quarantine WHERE reason = 'db_refused'").fetchone()
            cabinets = count(url, "SELECT count(*) FROM cabinet_readings")
        assert got == Counter(reason for reason, _, _ in poison), f"stored in {stored_in:.1f} s"
        assert longest_topic is not None and longest_topic[0] <= 256
        assert refused is not None and "plausible_power" in refused[0]
        assert cabinets == 1  # the cabinet whose lamp was bad
        assert count(url, "SELECT count(*) FROM lamp_readings") == 1000
        deadline = time.monotonic() + 5  # the next heartbeats carry the counts
        while True:
            health = api.get("/api/v1/health")
            assert health.status_code == 200 and health.json()["status"] == "ok", health.json()
            (beat,) = health.json()["ingest"]["gateways"]
            assert beat["running"] and beat["gateway"].startswith(client_id + "-") and beat["oldest_uncommitted_s"] < 3
            assert beat["districts"] == every_district  # alone, it reads them all
            if beat["written"] == 1001 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert beat["written"] == 1001 and beat["quarantined"] == len(poison), beat
    finally:
        pub.close()
        gw.stop()
    # Stopped cleanly: the health says nobody is ingesting any more.
    ingest = api.get("/api/v1/health").json()["ingest"]
    assert ingest["ok"] is False and "no gateway is running" in ingest["error"]


def _districts(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT code FROM districts ORDER BY code").fetchall()]


def _other_district(url: str, district: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT code FROM districts WHERE code <> %s ORDER BY code LIMIT 1", (district,)).fetchone()
    assert row is not None
    return str(row[0])


def test_health_says_when_ingest_is_stalled(endpoints: Endpoints, client_id: str, api: TestClient) -> None:
    """A lock held on the readings (a long migration, say) stalls every batch: the health says so, then
    recovers by itself."""
    url = endpoints.database_url
    seed(url, 50)
    ids = lamp_ids(url, 50)
    gw = GatewayChild(endpoints, client_id)
    pub = RawPublisher(endpoints.as_("lamplighter-headend"), client_id + "-pub")
    try:
        assert gw.subscribed.wait(30), "gateway did not subscribe"
        deadline = time.monotonic() + 10
        while (r := api.get("/api/v1/health")).status_code != 200:
            assert time.monotonic() < deadline, r.json()
            time.sleep(0.5)
        with psycopg.connect(url) as locker:
            locker.execute("LOCK TABLE lamp_readings IN ACCESS EXCLUSIVE MODE")
            lamp, district = ids[0]
            body = {"ts": int(time.time() * 1000), "seq": 1, "on": True, "dim": 100, "faults": []}
            pub.publish(f"sl/{district}/lamp/{lamp}/state", json.dumps(body).encode())
            deadline = time.monotonic() + 15
            while (r := api.get("/api/v1/health")).status_code == 200:
                assert time.monotonic() < deadline, "a stall of 15 s went unreported"
                time.sleep(0.5)
            assert r.status_code == 503 and r.json()["status"] == "degraded"
            assert "stalled" in r.json()["ingest"]["error"], r.json()
            locker.rollback()
        deadline = time.monotonic() + 10
        while (r := api.get("/api/v1/health")).status_code != 200:
            assert time.monotonic() < deadline, r.json()
            time.sleep(0.5)
        assert count(url, "SELECT count(*) FROM lamp_readings") == 1
    finally:
        pub.close()
        gw.stop()


def _read_only(services: Services, url: str, on: bool) -> None:
    """The database refuses writes (`default_transaction_read_only`, as a standby would after a failover), or
    takes them again; its sessions end so that every new one has the setting."""
    name = database_of(url)
    with psycopg.connect(services.admin_url, autocommit=True) as admin:
        if on:
            admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        else:
            admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
    services.drop_connections(url)


@pytest.mark.slow
def test_a_read_only_database_holds_ingest_and_loses_nothing(
    services: Services, endpoints: Endpoints, client_id: str, api: TestClient
) -> None:
    """Read-only for 15 s while 20 lamps send 200 reports: nothing is acknowledged or quarantined, the health
    says 503 and why, and once the database takes writes again every report is stored exactly once."""
    url = endpoints.database_url
    seed(url, 50)
    ids = lamp_ids(url, 20)
    gw = GatewayChild(endpoints, client_id)
    pub = RawPublisher(endpoints.as_("lamplighter-headend"), client_id + "-pub")
    now = int(time.time() * 1000)

    def send(k: int) -> None:
        lamp, district = ids[k % 20]
        body = {"ts": now + k, "seq": 1000 + k, "on": True, "dim": 100, "power_w": 95.0, "faults": []}
        pub.publish(f"sl/{district}/lamp/{lamp}/state", json.dumps(body).encode())

    try:
        assert gw.subscribed.wait(30), "gateway did not subscribe"
        for k in range(40):
            send(k)
        deadline = time.monotonic() + 10
        while count(url, "SELECT count(*) FROM lamp_readings") < 40:
            assert time.monotonic() < deadline, "the first 40 reports were not stored"
            time.sleep(0.2)
        _read_only(services, url, True)
        read_only_until = time.monotonic() + 15
        for k in range(40, 200):
            send(k)
            time.sleep(0.05)
        seen_503 = None
        while time.monotonic() < read_only_until:
            r = api.get("/api/v1/health")
            if r.status_code == 503:
                seen_503 = r.json()
            assert r.status_code in (200, 503), r.text
            time.sleep(0.5)
        assert seen_503 is not None, "15 s of a read-only database and the health never said so"
        assert "read-only" in seen_503["database"]["error"], seen_503
        _read_only(services, url, False)
        deadline = time.monotonic() + 30
        while count(url, "SELECT count(*) FROM lamp_readings") < 200:
            assert time.monotonic() < deadline, (
                count(url, "SELECT count(*) FROM lamp_readings"),
                "".join(gw.log[-20:]),
            )
            time.sleep(0.2)
        time.sleep(1)
        assert count(url, "SELECT count(*) FROM lamp_readings") == 200
        assert count(url, "SELECT count(DISTINCT seq) FROM lamp_readings") == 200
        assert count(url, "SELECT count(*) FROM quarantine") == 0
        assert gw.proc.poll() is None, "the gateway exited:\n" + "".join(gw.log[-20:])
        assert not any("dropped" in line for line in gw.log), "".join(gw.log[-20:])
        deadline = time.monotonic() + 15
        while (r := api.get("/api/v1/health")).status_code != 200:
            assert time.monotonic() < deadline, r.json()
            time.sleep(0.5)
    finally:
        pub.close()
        gw.stop()


@pytest.mark.asyncio
async def test_a_concentrator_cannot_report_for_another_cabinets_lamp(
    endpoints: Endpoints, client_id: str, start_gateway: GatewayFactory
) -> None:
    url = endpoints.database_url
    seed(url, 2000)
    with psycopg.connect(url) as conn:
        cabinet, district, mine = conn.execute(
            "SELECT c.id, c.district, l.id FROM cabinets c JOIN lamps l ON l.cabinet_id = c.id WHERE c.concentrator "
            "AND c.district IN (SELECT district FROM cabinets GROUP BY district HAVING count(*) > 1) "
            "ORDER BY l.no LIMIT 1"
        ).fetchone() or ("", "", "")
        (theirs,) = conn.execute(
            "SELECT id FROM lamps WHERE district = %s AND cabinet_id <> %s ORDER BY no LIMIT 1", (district, cabinet)
        ).fetchone() or ("",)
    assert theirs, "the seeded district has one cabinet only"
    now = int(time.time() * 1000)

    def lamp(lamp_id: str, faults: list[str]) -> dict[str, object]:
        return {"id": lamp_id, "ts": now, "seq": 1, "on": True, "dim": 100, "power_w": 95.0, "faults": faults}

    body = {"ts": now, "seq": 1, "door_open": False, "contactors": [True], "faults": []}
    body["lamps"] = [lamp(mine, []), lamp(theirs, ["leakage_current"])]
    async with start_gateway():
        pub = RawPublisher(endpoints.as_("lamplighter-headend"), client_id + "-pub")
        pub.publish(f"sl/{district}/cabinet/{cabinet}/state", json.dumps(body).encode())
        pub.close()
        await wait_for(lambda: count(url, "SELECT count(*) FROM quarantine") == 1, 10, "the stranger quarantined")
    with psycopg.connect(url) as conn:
        reason, detail = conn.execute("SELECT reason, detail FROM quarantine").fetchone() or ("", "")
        stored = [r[0] for r in conn.execute("SELECT l.id FROM lamp_readings r JOIN lamps l ON l.no = r.lamp_no")]
    assert reason == "cabinet_mismatch" and theirs in detail and cabinet in detail
    assert stored == [mine]  # its own lamp lands; the other cabinet's lamp is not spoken for
    assert count(url, "SELECT count(*) FROM cabinet_readings") == 1
    assert count(url, f"SELECT count(*) FROM tickets WHERE asset_id = '{theirs}'") == 0

"""The tickets, crews and public API on the real database: filters, actions and their refusals, the live event
stream, citizens' reports with their rate limit, public notices, and chat/email channels through Apprise."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx2
import psycopg
import pytest
import uvicorn
from fastapi.testclient import TestClient

from alerts.crews import Crew, save_crew
from alerts.dispatch import Dispatcher, NotifyTransport
from alerts.tickets import open_ticket
from api.app import create_app
from kernel.database import Database
from lamplighter.runtime import Endpoints
from tests.support.auth import make_user, sign_in
from tests.support.factories import load_generated
from tests.support.webhook import Receiver

pytestmark = pytest.mark.services

NOW = dt.datetime(2026, 12, 1, 14, 0, tzinfo=dt.UTC)


@pytest.fixture
def seeded(endpoints: Endpoints) -> list[tuple[str, str, float, float]]:
    load_generated(endpoints.database_url, 1000, seed=3)
    with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
        save_crew(conn, Crew(id="cd-a", name="Chengdong A", districts=["cd"], mqtt=False))
        return [(r[0], r[1], r[2], r[3]) for r in conn.execute("SELECT id, district, lat, lon FROM lamps ORDER BY no")]


@pytest.fixture
def client(endpoints: Endpoints, seeded: object, api_as: Callable[..., TestClient]) -> Iterator[TestClient]:
    c = api_as("admin")
    yield c


def _open(url: str, lamp: str, fault: str = "lamp_failure", district: str = "cd", priority: str = "P3") -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return open_ticket(
            conn,
            priority=priority,
            fault=fault,
            asset_type="lamp",
            asset_id=lamp,
            district=district,
            source="device",
            first_seen=NOW,
            now=NOW,
        ).ticket_id


def test_queue_filters_actions_and_refusals(
    endpoints: Endpoints, client: TestClient, seeded: list[tuple[str, str, float, float]]
) -> None:
    cd = [lamp for lamp, d, *_ in seeded if d == "cd"]
    cx = [lamp for lamp, d, *_ in seeded if d == "cx"]
    a = _open(endpoints.database_url, cd[0])
    b = _open(endpoints.database_url, cd[1], fault="leakage_current", priority="P1")
    c = _open(endpoints.database_url, cx[0], district="cx")
    body = client.get("/api/v1/tickets").json()
    assert body["total"] == 3 and [t["id"] for t in body["items"]] == [c, b, a]
    page = client.get("/api/v1/tickets", params={"limit": 2, "offset": 2}).json()
    assert page["total"] == 3 and [t["id"] for t in page["items"]] == [a]
    past = client.get("/api/v1/tickets", params={"offset": 10}).json()
    assert past["total"] == 3 and past["items"] == []
    first = body["items"][0]
    assert "total_count" not in first
    assert set(first) >= {
        "id",
        "priority",
        "fault",
        "asset_type",
        "asset_id",
        "district",
        "status",
        "opened_at",
        "updated_at",
        "deadline",
        "overdue",
        "lamps",
        "occurrences",
    }
    assert first["status"] == "open"  # no crew covers cx
    assert [t["id"] for t in client.get("/api/v1/tickets", params={"priority": "P1"}).json()["items"]] == [b]
    assert client.get("/api/v1/tickets", params={"district": "cd", "status": "dispatched"}).json()["total"] == 2
    assert client.get("/api/v1/tickets", params={"asset": cd[0]}).json()["items"][0]["id"] == a
    assert client.get("/api/v1/tickets", params={"limit": 1, "offset": 1}).json()["items"][0]["id"] == b
    assert client.get("/api/v1/tickets", params={"status": "sleeping"}).status_code == 422

    # A cabinet ticket listing cd[0]; then the shortcuts: the live ones, one kind of asset, a lamp's own tickets.
    with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
        cabinet = conn.execute("SELECT cabinet_id FROM lamps WHERE id = %s", (cd[0],)).fetchone()
        assert cabinet is not None
        k = open_ticket(
            conn,
            priority="P2",
            fault="cabinet_outage",
            asset_type="cabinet",
            asset_id=cabinet[0],
            district="cd",
            source="backend",
            first_seen=NOW,
            now=NOW,
            lamps=[cd[0], cd[1]],
        ).ticket_id

    def ids(**params: object) -> list[int]:
        r = client.get("/api/v1/tickets", params=params)
        assert r.status_code == 200, r.text
        return [t["id"] for t in r.json()["items"]]

    assert ids(asset=cd[0]) == [k, a]
    assert ids(asset=cd[0], asset_type="lamp") == [a]
    assert ids(asset=cd[0], asset_type="cabinet") == [k]
    assert ids(asset_type="cabinet") == [k] and ids(asset_type="lamp") == [c, b, a]
    assert client.get("/api/v1/tickets", params={"asset_type": "pole"}).status_code == 422
    assert ids(status="live") == [k, c, b, a]

    r = client.post(f"/api/v1/tickets/{a}/actions", json={"action": "acknowledge"})
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    r = client.post(f"/api/v1/tickets/{a}/actions", json={"action": "acknowledge"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    r = client.post(f"/api/v1/tickets/{a}/actions", json={"action": "resolve", "note": "new lamp", "parts": ["LED"]})
    assert r.json()["status"] == "resolved" and r.json()["history"][-1]["parts"] == ["LED"]
    assert a not in ids(status="live") and ids(status=["live", "resolved"]) == [k, c, b, a]
    assert client.post(f"/api/v1/tickets/{a}/actions", json={"action": "dance"}).json()["error"]["field"] == "action"
    assert client.post(f"/api/v1/tickets/{c}/actions", json={"action": "reassign"}).json()["error"]["field"] == "crew"
    r = client.post(f"/api/v1/tickets/{c}/actions", json={"action": "reassign", "crew": "cd-a"})
    assert r.json()["status"] == "dispatched" and r.json()["crew"] == "cd-a"
    assert client.post("/api/v1/tickets/999999/actions", json={"action": "comment", "note": "x"}).status_code == 404
    one = client.get(f"/api/v1/tickets/{b}").json()
    assert one["history"][0]["action"] == "opened" and one["location"]["lat"] > 36


def test_crews_are_listed_with_duty_and_without_secrets(client: TestClient, endpoints: Endpoints) -> None:
    crew = {
        "id": "hz-night",
        "name": "Huangzhong night",
        "districts": ["hz"],
        "webhook_url": "http://127.0.0.1:9/hook",
        "webhook_secret": "a-long-enough-secret",
        "shifts": [{"starts_at": "2020-01-01T18:00:00+08:00", "ends_at": "2020-01-02T06:00:00+08:00"}],
    }
    r = client.post("/api/v1/crews", json=crew)
    assert r.status_code == 201, r.text
    assert r.json()["on_duty"] is False and "webhook_secret" not in r.json()
    listed = {c["id"]: c for c in client.get("/api/v1/crews").json()["items"]}
    assert listed["cd-a"]["on_duty"] is True and listed["hz-night"]["shifts"][0]["starts_at"]
    assert listed["hz-night"]["webhook_url"] == "http://127.0.0.1:9/hook"  # an admin sees the whole URL
    admin = client.headers["Authorization"]
    sign_in(client, endpoints.database_url, "viewer")
    seen = {c["id"]: c for c in client.get("/api/v1/crews").json()["items"]}
    client.headers["Authorization"] = admin
    assert seen["hz-night"]["webhook_url"] == "http://127.0.0.1:9/…"  # a robot's token lives in the rest
    bad = client.post("/api/v1/crews", json={**crew, "webhook_secret": "short"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "webhook_secret"
    assert client.post("/api/v1/crews", json={**crew, "districts": ["zz"]}).json()["error"]["field"] == "districts"
    bad_url = client.post("/api/v1/crews", json={**crew, "notify_urls": ["carrier-pigeon://coop"]}).json()
    assert bad_url["error"]["field"] == "notify_urls[0]"


def test_citizens_reports_attach_or_open_and_are_rate_limited(
    endpoints: Endpoints, client: TestClient, seeded: list[tuple[str, str, float, float]]
) -> None:
    lamp = next(x[0] for x in seeded if x[1] == "cd")
    other = next(x for x in seeded if x[1] == "cd" and x[0] != lamp)
    t = _open(endpoints.database_url, lamp)
    r = client.post("/api/v1/public/reports", json={"lamp_id": lamp.lower(), "description": "lamp is dark"})
    assert r.status_code == 201 and r.json()["outcome"] == "attached" and r.json()["ticket_id"] == t
    # By position: a few metres from the other lamp.
    r = client.post(
        "/api/v1/public/reports", json={"lat": other[2] + 0.00002, "lon": other[3], "description": "flickers"}
    )
    assert r.status_code == 201 and r.json()["outcome"] == "opened" and r.json()["lamp_id"] == other[0]
    opened = client.get(f"/api/v1/tickets/{r.json()['ticket_id']}").json()
    assert (opened["priority"], opened["fault"], opened["source"]) == ("P3", "citizen_report", "citizen")
    assert (
        client.post("/api/v1/public/reports", json={"description": "somewhere"}).json()["error"]["field"] == "lamp_id"
    )
    assert client.post("/api/v1/public/reports", json={"lamp_id": "XN-ZZ-1", "description": "dark"}).status_code == 404
    assert client.post("/api/v1/public/reports", json={"lamp_id": lamp, "description": ""}).status_code == 422
    # Five requests from one client in a burst (the invalid ones count too): the sixth is refused.
    refused = client.post("/api/v1/public/reports", json={"lamp_id": lamp, "description": "still dark"})
    assert refused.status_code == 429 and "try again" in refused.json()["error"]["message"]


def test_notices_list_long_planned_outages(client: TestClient, seeded: list[tuple[str, str, float, float]]) -> None:
    long = {
        "kind": "outage",
        "start": "2030-01-01T00:00:00+08:00",
        "end": "2030-01-03T00:00:00+08:00",
        "note": "substation works",
    }
    short = {"kind": "outage", "start": "2030-01-05T00:00:00+08:00", "end": "2030-01-05T06:00:00+08:00"}
    assert client.put("/api/v1/schedules/district/cx", json={"windows": [long, short]}).status_code == 200
    items = client.get("/api/v1/public/notices").json()["items"]
    assert [(i["scope"], i["key"], i["note"]) for i in items] == [("district", "cx", "substation works")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_event_stream_carries_ticket_events_live_and_resumes(
    endpoints: Endpoints, seeded: list[tuple[str, str, float, float]]
) -> None:
    port = _free_port()
    app = create_app(database_url=endpoints.database_url, broker=endpoints.as_("lamplighter-api"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        lamp = next(lamp for lamp, d, *_ in seeded if d == "cd")
        events: list[dict[str, object]] = []
        _, token = make_user(endpoints.database_url, "crew", crew="cd-a")  # the crew's own stream
        auth = {"Authorization": f"Bearer {token}"}
        with (
            httpx2.Client(timeout=10, headers=auth) as http,
            http.stream("GET", f"http://127.0.0.1:{port}/api/v1/tickets/events", params={"crew": "cd-a"}) as r,
        ):
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = r.iter_lines()
            assert next(lines).startswith(":")  # the stream is open: now a ticket is opened
            tid = _open(endpoints.database_url, lamp)
            last_id = None
            for line in lines:
                if line.startswith("id: "):
                    last_id = int(line[4:])
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    break
        assert events[0]["ticket_id"] == tid and events[0]["action"] == "opened" and events[0]["crew"] == "cd-a"
        # Reconnecting with Last-Event-ID gets what happened meanwhile.
        with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
            from alerts.tickets import act

            act(conn, tid, "acknowledge", actor="li.wei", now=NOW)
        with (
            httpx2.Client(timeout=10, headers=auth) as http,
            http.stream(
                "GET", f"http://127.0.0.1:{port}/api/v1/tickets/events", headers={"Last-Event-ID": str(last_id)}
            ) as r,
        ):
            data = next(line for line in r.iter_lines() if line.startswith("data: "))
        assert json.loads(data[6:])["action"] == "acknowledge"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.asyncio
async def test_chat_and_email_channels_go_through_apprise(
    endpoints: Endpoints, seeded: list[tuple[str, str, float, float]]
) -> None:
    robot = Receiver(secret=None)  # a chat robot's webhook: Apprise's JSON notification, unsigned
    try:
        with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
            save_crew(
                conn,
                Crew(
                    id="cx-a",
                    name="Chengxi A",
                    districts=["cx"],
                    mqtt=False,
                    notify_urls=[f"json://127.0.0.1:{robot.port}/hook"],
                ),
            )
        lamp = next(lamp for lamp, d, *_ in seeded if d == "cx")
        tid = _open(endpoints.database_url, lamp, district="cx")
        async with Database(endpoints.database_url) as db:
            d = Dispatcher(db, {"notify": NotifyTransport(allow_private=True)})  # the robot is on this machine
            task = asyncio.create_task(d.run())
            try:
                deadline = time.monotonic() + 10
                while not robot.received:
                    assert time.monotonic() < deadline, "no notification reached the robot"
                    await asyncio.sleep(0.1)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        body = robot.received[0]["body"]
        assert (
            f"ticket #{tid}" in body["title"] and "lamp_failure" in body["title"] and "district cx" in body["message"]
        )
    finally:
        robot.stop()

"""Tickets and dispatch on the real database and broker: lifecycle, deduplication, outbox, signed webhooks,
MQTT, escalation, the archive, a receiver that is down, and a dispatcher killed mid-delivery."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import aiomqtt
import psycopg
import pytest

from alerts.crews import Crew, save_crew
from alerts.dispatch import Dispatcher, MqttTransport, WebhookTransport
from alerts.tickets import TicketError, act, clear_fault, escalate_overdue, get_ticket, open_ticket, reopen
from gateway.command_link import CommandLink
from kernel.database import Database
from lamplighter.runtime import Endpoints
from tests.support.auth import sign_in
from tests.support.factories import load_generated
from tests.support.services import as_crew, provision
from tests.support.webhook import Receiver

pytestmark = pytest.mark.services

SECRET = "s3cret-for-crew-cd-0001"
NOW = dt.datetime(2026, 12, 1, 14, 0, tzinfo=dt.UTC)


@pytest.fixture
def city(endpoints: Endpoints) -> list[tuple[str, str]]:
    load_generated(endpoints.database_url, 1000, seed=3)
    with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
        return [(r[0], r[1]) for r in conn.execute("SELECT id, district FROM lamps ORDER BY no")]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(SECRET)
    yield r
    r.stop()


def _crews(url: str, receiver: Receiver, *, mqtt: bool = True) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        save_crew(
            conn,
            Crew(
                id="cd-a",
                name="Chengdong A",
                districts=["cd"],
                webhook_url=receiver.url,
                webhook_secret=SECRET,
                mqtt=mqtt,
            ),
        )
        save_crew(
            conn,
            Crew(
                id="sup",
                name="Supervisors",
                supervisor=True,
                webhook_url=receiver.url,
                webhook_secret=SECRET,
                mqtt=False,
            ),
        )


def _open(conn: psycopg.Connection, lamp: str, fault: str = "lamp_failure", priority: str = "P3", **kw: object):  # type: ignore[no-untyped-def]
    return open_ticket(
        conn,
        priority=priority,
        fault=fault,
        asset_type="lamp",
        asset_id=lamp,
        district="cd",
        source="device",
        first_seen=NOW,
        now=kw.pop("now", NOW),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


async def _dispatch_until(url: str, done, timeout: float, **kw: object) -> Dispatcher:  # type: ignore[no-untyped-def]
    transports = kw.pop("transports", {"webhook": WebhookTransport(allow_private=True)})
    async with Database(url) as db:
        d = Dispatcher(db, transports, **kw)  # type: ignore[arg-type]
        task = asyncio.create_task(d.run())
        try:
            deadline = time.monotonic() + timeout
            while not done():
                assert time.monotonic() < deadline, "dispatch did not finish in time"
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return d


@pytest.mark.asyncio
async def test_lifecycle_outbox_and_signed_deliveries(
    endpoints: Endpoints, city: list[tuple[str, str]], receiver: Receiver, client_id: str
) -> None:
    url = endpoints.database_url
    _crews(url, receiver)
    lamp = next(lamp for lamp, d in city if d == "cd")
    provision(endpoints)  # the crew's app has its own account on the broker
    async with aiomqtt.Client(
        **as_crew(endpoints, "cd-a").aiomqtt_kwargs(), identifier=client_id + "-crew"
    ) as crew_app:
        await crew_app.subscribe("sl/crews/cd-a/tickets", qos=1)
        with psycopg.connect(url, autocommit=True) as conn:
            first = _open(conn, lamp)
            assert first.created and first.status == "dispatched"
            again = _open(conn, lamp, now=NOW + dt.timedelta(minutes=3))
            assert again.ticket_id == first.ticket_id and not again.created
            t = get_ticket(conn, first.ticket_id, NOW)
            assert (t["crew"], t["occurrences"], t["deadline"]) == ("cd-a", 2, NOW + dt.timedelta(hours=48))
            assert sorted(d["channel"] for d in t["deliveries"]) == ["mqtt", "webhook"]  # the repeat notifies no one

        # The crews' MQTT notifications go out on an outbound link, as the gateway's do.
        link = CommandLink(endpoints.as_("lamplighter-commands"), client_id + "-dispatch", acks=False)
        link_task = asyncio.create_task(link.run())
        try:
            await asyncio.wait_for(link.wait_ready(), 10)
            transports = {"webhook": WebhookTransport(allow_private=True), "mqtt": MqttTransport(link.send)}
            await _dispatch_until(url, lambda: len(receiver.keys()) == 1, 10, transports=transports)
            async with asyncio.timeout(5):
                message = await anext(aiter(crew_app.messages))
        finally:
            link_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await link_task
    on_mqtt = json.loads(bytes(message.payload))  # type: ignore[arg-type]
    got = receiver.received[0]
    assert receiver.bad_signatures == 0
    assert got["body"]["ticket"]["id"] == first.ticket_id and got["body"]["event"]["action"] == "opened"
    assert got["key"] == f"ticket-{first.ticket_id}-event-{got['event']}-cd-a-webhook"
    assert on_mqtt["event"]["id"] == got["event"] and on_mqtt["ticket"]["asset_id"] == lamp

    with psycopg.connect(url, autocommit=True) as conn:
        act(conn, first.ticket_id, "acknowledge", actor="li.wei", now=NOW + dt.timedelta(minutes=10))
        with pytest.raises(TicketError, match="cannot acknowledge"):
            act(conn, first.ticket_id, "acknowledge", actor="li.wei", now=NOW)
        act(
            conn,
            first.ticket_id,
            "resolve",
            actor="li.wei",
            now=NOW + dt.timedelta(hours=1),
            note="replaced the LED module",
            parts=["LED module 150 W"],
        )
        # The lamp still fails after the repair: reopened, and the crew hears of it.
        assert reopen(conn, asset_type="lamp", asset_id=lamp, fault="lamp_failure", now=NOW + dt.timedelta(hours=2))
        act(
            conn,
            first.ticket_id,
            "resolve",
            actor="li.wei",
            now=NOW + dt.timedelta(hours=3),
            note="driver too",
            parts=["driver"],
        )
        cleared = clear_fault(
            conn, asset_type="lamp", asset_id=lamp, fault="lamp_failure", now=NOW + dt.timedelta(hours=4)
        )
        assert cleared is not None and cleared.status == "verified"
        t = get_ticket(conn, first.ticket_id, NOW)
        assert [e["action"] for e in t["history"]] == [
            "opened",
            "repeat",
            "acknowledge",
            "resolve",
            "reopened",
            "resolve",
            "verified",
        ]
        # A fault that clears before anyone acts closes its ticket as transient.
        other = next(lamp for lamp, d in city if d == "cd" and lamp != t["asset_id"])
        second = _open(conn, other, fault="night_out")
        assert clear_fault(conn, asset_type="lamp", asset_id=other, fault="night_out", now=NOW).status == "transient"  # type: ignore[union-attr]
        assert get_ticket(conn, second.ticket_id)["status"] == "transient"

    archive = await asyncio.to_thread(_archive, endpoints, lamp)
    assert [p["parts"] for p in archive["parts"]] == [["LED module 150 W"], ["driver"]]
    assert "replaced the LED module" in [n["note"] for n in archive["notes"]]


def _archive(endpoints: Endpoints, lamp: str) -> dict:  # type: ignore[type-arg]
    from fastapi.testclient import TestClient

    from api.app import create_app

    app = create_app(database_url=endpoints.database_url, broker=endpoints.as_("lamplighter-api"))
    with TestClient(app) as c:
        sign_in(c, endpoints.database_url, "viewer")
        return c.get(f"/api/v1/lamps/{lamp}/archive").json()  # type: ignore[no-any-return]


@pytest.mark.asyncio
async def test_overdue_tickets_escalate_to_supervisors_once(
    endpoints: Endpoints, city: list[tuple[str, str]], receiver: Receiver
) -> None:
    url = endpoints.database_url
    _crews(url, receiver, mqtt=False)
    lamp = next(lamp for lamp, d in city if d == "cd")
    with psycopg.connect(url, autocommit=True) as conn:
        p1 = _open(conn, lamp, fault="leakage_current", priority="P1")
        assert escalate_overdue(conn, NOW + dt.timedelta(minutes=14)) == []
        assert escalate_overdue(conn, NOW + dt.timedelta(minutes=16)) == [p1.ticket_id]  # not acknowledged in time
        assert escalate_overdue(conn, NOW + dt.timedelta(hours=2)) == []  # once
    await _dispatch_until(url, lambda: len(receiver.keys()) == 2, 10)
    by_crew = {r["body"]["crew"]: r["body"]["event"]["action"] for r in receiver.received}
    assert by_crew == {"cd-a": "opened", "sup": "escalated"}


@pytest.mark.asyncio
@pytest.mark.slow
async def test_receiver_down_for_a_minute_gets_every_event_once_back(
    endpoints: Endpoints, city: list[tuple[str, str]], receiver: Receiver
) -> None:
    url = endpoints.database_url
    _crews(url, receiver, mqtt=False)
    receiver.stop()
    lamps = [lamp for lamp, d in city if d == "cd"][:20]
    db = Database(url)
    await db.open()
    d = Dispatcher(db, {"webhook": WebhookTransport(allow_private=True)}, backoff_min_s=1.0, backoff_max_s=10.0)
    task = asyncio.create_task(d.run())
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            ids = [_open(conn, lamp).ticket_id for lamp in lamps]
        await asyncio.sleep(60)
        assert d.failed_attempts >= 20 and receiver.keys() == []
        receiver.start()
        deadline = time.monotonic() + 30
        while len(receiver.keys()) < 20:
            assert time.monotonic() < deadline, f"only {len(receiver.keys())} of 20 delivered"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await db.close()
    keys = receiver.keys()
    assert len(keys) == len(set(keys)) == 20
    assert sorted(r["body"]["ticket"]["id"] for r in receiver.received) == sorted(ids)
    with psycopg.connect(url) as conn:
        log = conn.execute("SELECT ok, count(*) FROM deliveries GROUP BY ok").fetchall()
        one = get_ticket(conn, ids[0])
    assert dict(log)[True] == 20 and dict(log)[False] >= 20
    # The ticket's delivery log shows the failed attempts, then the one that got through.
    attempts = one["deliveries"][0]["log"]
    assert [a["ok"] for a in attempts][-1] is True and not any(a["ok"] for a in attempts[:-1])
    assert len(attempts) >= 2 and "webhook" in attempts[0]["detail"]


@pytest.mark.slow
def test_a_dispatcher_killed_mid_delivery_loses_nothing(endpoints: Endpoints, city: list[tuple[str, str]]) -> None:
    url = endpoints.database_url
    slow = Receiver(SECRET, delay_s=1.0)  # each delivery takes a second: the kill lands mid-flight
    try:
        _crews(url, slow, mqtt=False)
        with psycopg.connect(url, autocommit=True) as conn:
            for lamp in [lamp for lamp, d in city if d == "cd"][:30]:
                _open(conn, lamp)
        env = {**os.environ, **endpoints.env(), "LAMPLIGHTER_DELIVERY_ALLOW_PRIVATE": "true"}  # a local receiver
        cmd = [sys.executable, "-m", "lamplighter", "dispatch", "--lease-s", "3", "--batch", "8"]
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while len(slow.keys()) < 5:
            assert time.monotonic() < deadline, "the first dispatcher delivered nothing"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while len(set(slow.keys())) < 30 or _undelivered(url) > 0:
                assert time.monotonic() < deadline, f"{len(set(slow.keys()))} of 30 events delivered after restart"
                time.sleep(0.2)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(10)
        # At least once: every event arrived; those in flight at the kill may have arrived twice, same key.
        assert sorted(set(slow.keys())) == sorted(_keys(url))
    finally:
        slow.stop()


def _undelivered(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM outbox WHERE delivered_at IS NULL").fetchone()
    return int(row[0]) if row else -1


def _keys(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT idempotency_key FROM outbox")]


def test_deadlines_follow_the_settings(endpoints: Endpoints, city: list[tuple[str, str]]) -> None:
    from lamplighter.config import Settings

    settings = Settings.load({"LAMPLIGHTER_P3_REPAIR_H": "72", "LAMPLIGHTER_P1_ACKNOWLEDGE_MIN": "5"})
    cd = [lamp for lamp, d in city if d == "cd"]
    with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
        p3 = _open(conn, cd[0], deadlines=settings.deadlines)
        p1 = _open(conn, cd[1], fault="tilt", priority="P1", deadlines=settings.deadlines)
        t3, t1 = get_ticket(conn, p3.ticket_id, NOW), get_ticket(conn, p1.ticket_id, NOW)
    assert t3["deadline"] == NOW + dt.timedelta(hours=72) and t3["ack_deadline"] is None
    assert t1["ack_deadline"] == NOW + dt.timedelta(minutes=5) and t1["deadline"] == NOW + dt.timedelta(hours=1)


@pytest.mark.asyncio
async def test_a_delivery_failing_past_its_limit_is_dead_lettered(
    endpoints: Endpoints, city: list[tuple[str, str]], receiver: Receiver
) -> None:
    url = endpoints.database_url
    _crews(url, receiver, mqtt=False)
    receiver.stop()
    lamp = next(lamp for lamp, d in city if d == "cd")
    db = Database(url)
    await db.open()
    d = Dispatcher(
        db, {"webhook": WebhookTransport(allow_private=True)}, backoff_min_s=0.05, backoff_max_s=0.1, max_attempts=3
    )
    task = asyncio.create_task(d.run())
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            tid = _open(conn, lamp).ticket_id
        deadline = time.monotonic() + 20
        while d.dead_lettered < 1:
            assert time.monotonic() < deadline, f"not dead-lettered after {d.failed_attempts} failed attempts"
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # no more attempts once it is set aside
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await db.close()
    with psycopg.connect(url) as conn:
        ticket = get_ticket(conn, tid, NOW)
    (delivery,) = ticket["deliveries"]
    assert delivery["dead_at"] is not None and delivery["attempts"] == 3 and delivery["last_error"]
    assert [a["attempt"] for a in delivery["log"]] == [1, 2, 3] and not any(a["ok"] for a in delivery["log"])


@pytest.mark.asyncio
async def test_a_notification_larger_than_the_broker_takes_is_dead_lettered_not_sent(
    endpoints: Endpoints, city: list[tuple[str, str]], receiver: Receiver, client_id: str
) -> None:
    """The broker drops a connection that sends it a packet over its maximum: the link refuses such a message
    itself, the notification is dead-lettered at its first attempt, and the link (with the commands in flight on
    it) stays up for the next one."""
    url = endpoints.database_url
    _crews(url, receiver)
    cd = [lamp for lamp, d in city if d == "cd"]
    provision(endpoints)
    with psycopg.connect(url, autocommit=True) as conn:
        big = _open(conn, cd[0]).ticket_id
        conn.execute(
            "UPDATE outbox SET payload = jsonb_build_object('padding', repeat('x', 2 * 1048576)) "
            "WHERE ticket_id = %s AND channel = 'mqtt'",
            (big,),
        )
    link = CommandLink(endpoints.as_("lamplighter-commands"), client_id + "-dispatch", acks=False)
    link_task = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(link.wait_ready(), 10)
        assert link.max_packet() == 1_048_576  # the broker said so in its CONNACK (the project's config)
        async with aiomqtt.Client(
            **as_crew(endpoints, "cd-a").aiomqtt_kwargs(), identifier=client_id + "-crew"
        ) as crew_app:
            await crew_app.subscribe("sl/crews/cd-a/tickets", qos=1)
            with psycopg.connect(url, autocommit=True) as conn:
                small = _open(conn, cd[1]).ticket_id
            transports = {"webhook": WebhookTransport(allow_private=True), "mqtt": MqttTransport(link.send)}
            d = await _dispatch_until(url, lambda: len(receiver.keys()) == 2, 10, transports=transports)
            async with asyncio.timeout(5):
                message = await anext(aiter(crew_app.messages))
        assert json.loads(bytes(message.payload))["ticket"]["id"] == small  # type: ignore[arg-type]
        assert d.dead_lettered == 1 and link.connections() == 1  # never reconnected: nothing in flight was lost
    finally:
        link_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await link_task
    with psycopg.connect(url) as conn:
        (delivery,) = [x for x in get_ticket(conn, big, NOW)["deliveries"] if x["channel"] == "mqtt"]
    assert delivery["dead_at"] is not None and delivery["attempts"] == 1
    assert "exceeds the 1,048,576 bytes" in delivery["last_error"]

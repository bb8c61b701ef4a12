"""Several gateways against the same broker and database: the districts are shared out, each is read by one
of them, a dead gateway's districts are taken over with their sessions, and the work that must run once
city-wide (the command engine) runs once, moving to a survivor when its holder dies."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import os
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from kernel.clock import Clock
from kernel.database import Database
from kernel.leases import Leases
from lamplighter.config import Settings
from lamplighter.runtime import Endpoints, GatewayProcess
from lamplighter.simproc import simulator_process
from tests.support.auth import sign_in
from tests.support.factories import load_generated
from tests.support.gateway import GatewayChild, count, lamp_ids, publish_readings, seed, wait_for
from tests.support.remote import NIGHT, call, until

pytestmark = pytest.mark.services


@pytest.mark.asyncio
async def test_a_lease_is_held_by_one_process_and_goes_with_its_connection(database_url: str) -> None:
    a, b = Leases(Database(database_url), "t"), Leases(Database(database_url), "t")
    try:
        assert await a.try_take("leader") and not await b.try_take("leader")
        assert await a.members() == 1  # a joins when it first counts; b has not yet
        assert await b.members() == 2 == await a.members()
        assert a._conn is not None
        with psycopg.connect(database_url, autocommit=True) as admin:  # a dies as a SIGKILLed process would
            admin.execute("SELECT pg_terminate_backend(%s)", (a._conn.info.backend_pid,))
        await asyncio.sleep(0.2)
        assert await b.try_take("leader")
        assert await b.members() == 1
        await b.release("leader")
        assert await a.try_take("leader")  # a reconnects, and the lease is free again
    finally:
        await a.close()
        await b.close()


def _holders(url: str) -> dict[str, list[str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT gateway, districts FROM ingest_heartbeat WHERE stopped_at IS NULL "
            "AND updated_at > now() - interval '6 seconds'"
        ).fetchall()
    return {r[0]: sorted(r[1]) for r in rows}


def _districts(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT code FROM districts ORDER BY code")]


def _shared_out(url: str, gateways: int) -> bool:
    held = _holders(url)
    every = [d for ds in held.values() for d in ds]
    return len(held) == gateways and all(held.values()) and sorted(every) == _districts(url)


@pytest.mark.asyncio
@pytest.mark.slow
async def test_two_gateways_share_ingest_and_one_killed_loses_nothing(endpoints: Endpoints, client_id: str) -> None:
    """Two gateway processes and an API against the same broker and database: 100,000 readings, one gateway
    SIGKILLed mid-stream, every reading stored once, and the API's fleet whole whichever gateway read a lamp."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    url = endpoints.database_url
    seed(url, 2000)
    ids = lamp_ids(url, 2000)
    first = GatewayChild(endpoints, client_id)
    second: GatewayChild | None = None
    stack = contextlib.ExitStack()
    try:
        # The API as its own app (no gateway in its process): it follows the fleet from PostgreSQL.
        app = create_app(database_url=url, broker=endpoints.as_("lamplighter-api"))
        api = stack.enter_context(TestClient(app))
        sign_in(api, url, "viewer")
        await wait_for(first.subscribed.is_set, 30, "the first gateway to subscribe")
        # Each gives way to the API and PostgreSQL on a shared machine (gateway_nice, default 10), threads included.
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, first.proc.pid) == max(10, own)
        threads = os.listdir(f"/proc/{first.proc.pid}/task")
        assert len(threads) > 1 and {_nice(first.proc.pid, t) for t in threads} == {max(10, own)}
        second = GatewayChild(endpoints, client_id)
        await wait_for(lambda: _shared_out(url, 2), 40, "the districts shared out between two gateways")
        n = 100_000
        publisher = asyncio.create_task(asyncio.to_thread(publish_readings, endpoints, ids, n, client_id + "-pub"))
        await wait_for(lambda: count(url, "SELECT count(*) FROM lamp_readings") > 20_000, 60, "ingest to start")
        second.kill()
        killed_at = time.monotonic()
        landed_at_kill = count(url, "SELECT count(*) FROM lamp_readings")
        await publisher
        assert landed_at_kill < n, "the kill came too late to test anything"
        # The survivor takes the dead one's districts over, and their sessions with what was unacknowledged.
        await wait_for(lambda: _shared_out(url, 1), 20, "the survivor to hold every district")
        took_over_s = time.monotonic() - killed_at
        await wait_for(lambda: count(url, "SELECT count(*) FROM lamp_readings") >= n, 90, f"{n} readings")
        await asyncio.sleep(1.0)

        # Every lamp reported `on` last, whichever gateway read it: lit where due, burning by day elsewhere.
        def whole() -> bool:
            city = api.get("/api/v1/lighting-rate").json()["city"]
            return bool(city["lit"] + city["day_burning"] == len(ids) and city["unknown"] == 0)

        await wait_for(whole, 15, "the API to show every lamp's last report")
    finally:
        stack.close()
        first.stop()
        if second is not None and second.proc.poll() is None:
            second.stop()
    assert took_over_s <= 15.0 + 2.0  # the lease goes with the dead connection; a heartbeat says so
    assert count(url, "SELECT count(*) FROM lamp_readings") == n
    assert count(url, "SELECT count(DISTINCT (lamp_no, ts, seq)) FROM lamp_readings") == n
    assert count(url, "SELECT count(*) FROM quarantine") == 0


class _CommandCounter:
    """Every device command the broker carries, counted per lamp (as the field would receive them)."""

    def __init__(self, ep: Endpoints, client_id: str) -> None:
        self.per_lamp: collections.Counter[str] = collections.Counter()
        self.ready = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_connect = lambda c, *_: (c.subscribe("sl/+/lamp/+/cmd", qos=1), None)[1]
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = self._on_message
        ep.as_("lamplighter-headend").setup_paho(self.client)  # it reads every command, as a head-end does
        self.client.connect(ep.mqtt_host, ep.mqtt_port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.per_lamp[message.topic.split("/")[3]] += 1

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@contextlib.asynccontextmanager
async def _gateway(settings: Settings, ep: Endpoints, clock: Clock) -> AsyncIterator[tuple[GatewayProcess, Any]]:
    gw = GatewayProcess.start(settings, ep, clock=clock)
    gw.commands.keep_send_times = True
    task = asyncio.create_task(gw.run())
    try:
        yield gw, task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def _two_gateways(
    settings: Settings, ep: Endpoints, clock: Clock
) -> AsyncIterator[tuple[tuple[GatewayProcess, Any], tuple[GatewayProcess, Any]]]:
    """Gateways `a` and `b` in this process, yielded (leader, follower) once one leads and they share the
    districts; each as (gateway, its task)."""
    async with (
        _gateway(dataclasses.replace(settings, gateway_instance="a"), ep, clock) as a,
        _gateway(dataclasses.replace(settings, gateway_instance="b"), ep, clock) as b,
    ):
        await until(lambda: a[0].leading != b[0].leading, 20, "one of the two gateways to lead")
        await wait_for(lambda: _shared_out(ep.database_url, 2), 40, "the districts shared out between two gateways")
        yield (a, b) if a[0].leading else (b, a)


@pytest.mark.asyncio
@pytest.mark.slow
async def test_a_campaign_runs_once_with_two_gateways_and_survives_its_leader(
    endpoints: Endpoints, client_id: str
) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app

    url = endpoints.database_url
    seed(url, 10_000)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE lamps SET report_interval_s = 3600")  # quiet reporting: commands are what is tested
    clock = Clock(start=NIGHT, speed=1.0)
    pace = 2000.0
    settings = Settings(
        database_url=url,
        mqtt_url=endpoints.mqtt_url,
        gateway_client_id=client_id,
        flush_interval_s=0.1,
        command_pace=pace,
        command_ack_timeout_s=3.0,
        command_retries=2,
        dispatch=False,
    )
    counter = _CommandCounter(endpoints, client_id + "-count")
    assert counter.ready.wait(10)
    try:
        async with _two_gateways(settings, endpoints, clock) as ((leader, leader_task), (survivor, _)):
            app = create_app(
                database_url=url,
                broker=endpoints.as_("lamplighter-api"),
                engine=survivor.engine,
                clock=clock,
                command_pace=pace,
            )
            with (
                simulator_process(endpoints, clock, client_id + "-sim", seed=1),
                TestClient(app) as api,
            ):
                sign_in(api, url, "operator")
                body = {"target": {"all": True}, "op": "dim", "level": 40, "reason": "two gateways"}
                r = await call(api.post, "/api/v1/commands", json=body)
                assert r.status_code == 202, r.text
                cid, total = r.json()["id"], r.json()["lamps"]
                await until(lambda: sum(counter.per_lamp.values()) >= 3000, 20, "a third of the commands out")
                leader_task.cancel()  # the leader dies mid-campaign: its connections close, as a killed one's do
                with contextlib.suppress(asyncio.CancelledError):
                    await leader_task
                await until(lambda: survivor.leading, 15, "the survivor to take the lead")
                status = await until(
                    lambda: (s := api.get(f"/api/v1/commands/{cid}").json())["status"] == "done" and s,
                    120,
                    "the campaign to finish under the survivor",
                )
        assert (status["acked"], status["failed"], status["expired"]) == (total, 0, 0), status
        assert len(counter.per_lamp) == total
        most = max(counter.per_lamp.values())
        assert most <= 1 + settings.command_retries, counter.per_lamp.most_common(3)
        # One engine sends at a time: never more than the city-wide pace in any second (two would double it),
        # counted when the engines wrote them (the broker's delivery to the counter bunches them a little).
        times = np.sort(np.array(leader.commands.send_times + survivor.commands.send_times))
        per_window = np.searchsorted(times, times + 1.0) - np.arange(len(times))
        assert per_window.max() <= pace, per_window.max()
        # Nobody else sent commands: the broker carried no more than the engines wrote (a few the dying leader
        # wrote may never have left its socket; the survivor sent those lamps again).
        assert sum(counter.per_lamp.values()) <= len(times)
    finally:
        counter.close()


def _tickets(url: str) -> list[tuple[str, str, str, list[str]]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT asset_type, asset_id, fault, "
            "coalesce((SELECT array_agg(lamp_id ORDER BY lamp_id) FROM ticket_lamps l WHERE l.ticket_id = t.id), "
            "'{}') FROM tickets t ORDER BY id"
        ).fetchall()
    return [(r[0], r[1], r[2], list(r[3])) for r in rows]


@pytest.mark.asyncio
@pytest.mark.slow
async def test_a_district_blackout_under_two_gateways_gives_each_ticket_once(
    endpoints: Endpoints, client_id: str
) -> None:
    """Every cabinet of one gateway's district loses its feeder while lamps fail in a district the other reads:
    the tickets one gateway would open (one per cabinet listing its lamps, one per failed lamp), none twice."""
    from lamplighter.simcontrol import ScheduleControl
    from simulator.fleet import Fleet, FleetSpec
    from simulator.runner import Simulator

    url = endpoints.database_url
    speed, interval_s = 60.0, 60  # a clock minute a second; every device reports each clock minute
    load_generated(url, 3000, seed=7)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE lamps SET report_interval_s = %s", (interval_s,))
        spec = FleetSpec.from_db(conn)
    clock = Clock(start=NIGHT, speed=speed)
    settings = Settings(
        database_url=url,
        mqtt_url=endpoints.mqtt_url,
        gateway_client_id=client_id,
        flush_interval_s=0.1,
        dispatch=False,
    )
    fleet = Fleet(
        spec,
        interval_s=interval_s,
        failure_rate_per_day=0.0,
        start_ms=clock.now_ms(),
        seed=2,
        control=ScheduleControl(url, spec.lamp_id),
    )
    sim = Simulator(fleet, broker=endpoints.as_("lamplighter-headend"), clock=clock, client_prefix=client_id)
    actions: list[Any] = []

    def step(_: Any) -> None:  # in the simulator's thread, between steps
        while actions:
            actions.pop(0)(clock.now_ms())

    sim_thread = threading.Thread(target=sim.run, kwargs={"on_tick": step}, daemon=True)
    try:
        async with _two_gateways(settings, endpoints, clock) as ((leader, _), (follower, _)):
            # The blackout in a district the follower reads, the failures in one the leader reads.
            dark = sorted(follower.sessions.held())[0]
            failing = sorted(leader.sessions.held())[0]
            sim_thread.start()
            await asyncio.sleep(2 * 60 / speed + 1)  # every device has reported: lit, nothing wrong
            assert _tickets(url) == []
            cut = [c for c, d in enumerate(spec.cabinet_district) if d == dark]
            failed = [i for i, d in enumerate(spec.lamp_district) if d == failing][::17][:10]

            def inject(now: int) -> None:
                for cab in cut:
                    for circuit in range(1, int(spec.cabinet_circuits[cab]) + 1):
                        fleet.cut_cable(cab, circuit, now)
                fleet.fail(failed, "lamp_failure", now)

            actions.append(inject)
            expected_cabinets = {
                spec.cabinet_id[c]: sorted(spec.lamp_id[i] for i in np.flatnonzero(spec.lamp_cabinet == c)) for c in cut
            }
            expected_lamps = {spec.lamp_id[i] for i in failed}

            def opened() -> bool:
                kinds = [(t[0], t[1]) for t in _tickets(url)]
                return len(kinds) >= len(expected_cabinets) + len(expected_lamps)

            await wait_for(opened, 40, "the blackout's and the failures' tickets")
            await asyncio.sleep(5 * 60 / speed)  # five clock minutes more: anything doubled or late shows now
            tickets = _tickets(url)
    finally:
        sim.stop()
        if sim_thread.is_alive():
            sim_thread.join(10)
        sim.close()
    keys = [(t[0], t[1], t[2]) for t in tickets]
    assert len(keys) == len(set(keys)), f"a ticket opened twice: {keys}"
    cabinets = {t[1]: t[3] for t in tickets if t[0] == "cabinet"}
    assert {t[2] for t in tickets if t[0] == "cabinet"} == {"cabinet_outage"}
    assert cabinets == expected_cabinets
    assert {t[1] for t in tickets if t[0] == "lamp"} == expected_lamps


def test_the_leader_counts_a_peers_ingest_only_once_its_follower_fetched_after_it() -> None:
    from gateway.heartbeat import PeerWatermarks

    t0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    s = dt.timedelta(seconds=1)
    w = PeerWatermarks("me")
    assert w.through_ms() is None  # alone: only its own ingest counts
    w.update([("b", t0, 1_000), ("c", t0, 5_000)])
    assert w.through_ms() == -1  # nothing fetched since those heartbeats: wait
    w.fetched(t0 + s)
    assert w.through_ms() == 1_000
    w.update([("b", t0 + 2 * s, 9_000), ("c", t0 + 2 * s, 9_500)])
    assert w.through_ms() == 1_000  # b's newer watermark is not in the engine before the next fetch
    w.fetched(t0 + 3 * s)
    assert w.through_ms() == 9_000
    w.update([("c", t0 + 4 * s, 12_000)])  # b's heartbeats stopped: it is no peer any more
    assert w.through_ms() == 9_500


@pytest.mark.asyncio
@pytest.mark.slow
async def test_a_campaign_finishes_under_the_survivor_when_its_leader_is_sigkilled(
    endpoints: Endpoints, client_id: str
) -> None:
    """Two `lamplighter gateway` processes; the one sending a whole-city campaign is SIGKILLed: the other takes
    the lead, and with it the campaign, and finishes it; no lamp's command went out more than `1 + retries`."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    url = endpoints.database_url
    seed(url, 10_000)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE lamps SET report_interval_s = 3600")  # quiet reporting: commands are what is tested
    clock = Clock(start=NIGHT, speed=1.0)
    retries = 2
    args = ["--clock-start", NIGHT.isoformat(), "--clock-speed", "1"]
    env = {
        "LAMPLIGHTER_CLOCK_ORIGIN": repr(clock.origin),
        "LAMPLIGHTER_DISPATCH": "false",
        "LAMPLIGHTER_COMMAND_ACK_TIMEOUT_S": "3",
        "LAMPLIGHTER_COMMAND_RETRIES": str(retries),
    }
    leads = "leads: "
    counter = _CommandCounter(endpoints, client_id + "-count")
    assert counter.ready.wait(10)
    gateways = [GatewayChild(endpoints, client_id, args=args, env=env)]
    stack = contextlib.ExitStack()
    try:
        await wait_for(lambda: any(leads in line for line in gateways[0].log), 30, "the first gateway to lead")
        gateways.append(GatewayChild(endpoints, client_id, args=args, env=env))
        await wait_for(lambda: _shared_out(url, 2), 40, "the districts shared out between two gateways")
        leader, survivor = gateways
        app = create_app(database_url=url, broker=endpoints.as_("lamplighter-api"), clock=clock)
        api = stack.enter_context(TestClient(app))
        stack.enter_context(simulator_process(endpoints, clock, client_id + "-sim", seed=1))
        sign_in(api, url, "operator")
        body = {"target": {"all": True}, "op": "dim", "level": 40, "reason": "the leader dies"}
        r = await call(api.post, "/api/v1/commands", json=body)
        assert r.status_code == 202, r.text
        cid, total = r.json()["id"], r.json()["lamps"]
        await until(lambda: sum(counter.per_lamp.values()) >= 3000, 30, "a third of the commands out")
        leader.kill()
        await wait_for(lambda: any(leads in line for line in survivor.log), 20, "the survivor to take the lead")
        status = await until(
            lambda: (s := api.get(f"/api/v1/commands/{cid}").json())["status"] == "done" and s,
            120,
            "the campaign to finish under the survivor",
        )
    finally:
        stack.close()
        for g in gateways:
            if g.proc.poll() is None:
                g.stop()
        counter.close()
    assert (status["acked"], status["failed"], status["expired"]) == (total, 0, 0), status
    assert len(counter.per_lamp) == total
    assert max(counter.per_lamp.values()) <= 1 + retries, counter.per_lamp.most_common(3)


def _nice(pid: int, thread: str) -> int:
    """A thread's nice value, from /proc (field 19 of its stat line)."""
    with open(f"/proc/{pid}/task/{thread}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])

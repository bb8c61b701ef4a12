"""Remote control end to end: API → campaign → gateway's paced command engine → broker → simulated devices →
acknowledgements → per-lamp outcomes; overrides in the lighting rate; duplicates acted on once."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from kernel.clock import Clock
from lamplighter.runtime import Endpoints, GatewayProcess
from simulator.commands import DeviceCommands
from simulator.fleet import Fleet, FleetSpec
from simulator.wire import RawPublisher
from tests.support.auth import sign_in
from tests.support.factories import load_generated
from tests.support.remote import NIGHT, call, remote_city, until
from tests.support.services import PrivateBroker, Services

pytestmark = pytest.mark.services


def _count(url: str, sql: str, *args: object) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, args).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.asyncio
@pytest.mark.slow
async def test_dimming_a_district_of_10000_lamps_is_paced_and_acked(endpoints: Endpoints, client_id: str) -> None:
    async with remote_city(endpoints, client_id, lamps=70_000, pace=2000.0) as city:
        district = "cd"
        n = sum(1 for d in city.spec.lamp_district if d == district)
        assert n >= 10_000
        r = await call(
            city.api.post,
            "/api/v1/commands",
            json={
                "target": {"district": district},
                "op": "dim",
                "level": 50,
                "reason": "energy saving trial",
            },
        )
        assert r.status_code == 202, r.text
        cid, total = r.json()["id"], r.json()["lamps"]
        assert total == n
        status = await until(
            lambda: (s := city.api.get(f"/api/v1/commands/{cid}").json())["status"] == "done" and s,
            60,
            "the campaign to finish",
        )
        assert (status["acked"], status["failed"], status["expired"]) == (n, 0, 0)
        # Never above the pace: at most `pace` sends in any one second.
        times = np.array(city.gw.commands.send_times)
        per_window = np.searchsorted(times, times + 1.0) - np.arange(len(times))
        assert len(times) == n and per_window.max() <= 2000, per_window.max()
        # Each lamp's next report shows the new level.
        await until(
            lambda: (
                _count(
                    city.url,
                    "SELECT count(*) FROM lamp_latest l JOIN lamps m ON m.no = l.lamp_no "
                    "WHERE m.district = %s AND l.dim = 50 AND l.is_on",
                    district,
                )
                == n
            ),
            30,
            "every lamp to report level 50",
        )
        audit = (await call(city.api.get, "/api/v1/commands")).json()["items"][0]
        assert (audit["actor"], audit["reason"], audit["outcome"]["acked"]) == (city.operator, "energy saving trial", n)


@pytest.mark.asyncio
@pytest.mark.slow
async def test_unreachable_lamps_expire_after_their_retries_refusing_ones_fail_and_nothing_else_does(
    endpoints: Endpoints, client_id: str
) -> None:
    async with remote_city(endpoints, client_id, lamps=3000, unreachable=0.05, failing=0.03, ack_timeout_s=1.0) as city:
        r = await call(
            city.api.post,
            "/api/v1/commands",
            json={"target": {"all": True}, "op": "switch", "on": True, "reason": "night check"},
        )
        cid = r.json()["id"]
        status = await until(
            lambda: (s := city.api.get(f"/api/v1/commands/{cid}").json())["status"] == "done" and s,
            30,
            "the campaign to finish",
        )
        silent = {city.spec.lamp_id[i] for i in np.flatnonzero(city.unreachable).tolist()}
        refusing = {city.spec.lamp_id[i] for i in np.flatnonzero(city.failing).tolist()}
        params = {"state": "expired", "limit": 10000}
        expired = (await call(city.api.get, f"/api/v1/commands/{cid}/lamps", params=params)).json()
        assert {x["lamp_id"] for x in expired["items"]} == silent and len(silent) > 100
        assert {x["attempts"] for x in expired["items"]} == {3}  # the first send and two retries, same id
        params = {"state": "failed", "limit": 10000}
        failed = (await call(city.api.get, f"/api/v1/commands/{cid}/lamps", params=params)).json()
        assert {x["lamp_id"] for x in failed["items"]} == refusing and len(refusing) > 50
        # A refusal is an answer: not sent again, and the device's reason is kept.
        assert {(x["attempts"], x["error"]) for x in failed["items"]} == {(1, "the lamp driver does not respond")}
        assert status["acked"] == 3000 - len(silent) - len(refusing)
        assert status["failed"] == len(refusing) and status["expired"] == len(silent)


@pytest.mark.asyncio
async def test_devices_on_their_own_connections_take_and_answer_only_their_own_commands(
    endpoints: Endpoints, client_id: str
) -> None:
    """`simulate --per-device`: every controller and concentrator reads its own `cmd` topics (a concentrator its
    lamps' too) as its own account and acknowledges on its own connection; nothing goes through the head-end."""
    async with remote_city(endpoints, client_id, lamps=1000, per_device=True, ack_timeout_s=3.0) as city:
        behind = int(np.count_nonzero(city.spec.lamp_concentrator))
        assert 0 < behind < 1000  # both kinds of device are commanded
        r = await call(
            city.api.post,
            "/api/v1/commands",
            json={"target": {"all": True}, "op": "dim", "level": 40, "reason": "per-device check"},
        )
        cid = r.json()["id"]
        status = await until(
            lambda: (s := city.api.get(f"/api/v1/commands/{cid}").json())["status"] == "done" and s,
            60,
            "the campaign to finish",
        )
        assert (status["acked"], status["failed"], status["expired"]) == (1000, 0, 0)
        assert city.gw.commands.spoofed_acks == 0


@pytest.mark.asyncio
async def test_campaigns_running_together_share_the_city_wide_pace(endpoints: Endpoints, client_id: str) -> None:
    async with remote_city(endpoints, client_id, lamps=6000, pace=400.0) as city:
        ids = []
        for district in ("cd", "cx"):
            body = {"target": {"district": district}, "op": "dim", "level": 70, "reason": "trial"}
            r = await call(city.api.post, "/api/v1/commands", json=body)
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        # Both move at once: the second does not wait for the first to finish.
        await until(lambda: city.gw.commands.sent >= 800, 10, "two seconds' worth of commands")
        progress = [(await call(city.api.get, f"/api/v1/commands/{cid}")).json() for cid in ids]
        assert all(p["status"] == "running" and p["sent"] + p["acked"] >= 200 for p in progress), progress
        done = [
            await until(
                lambda cid=cid: (s := city.api.get(f"/api/v1/commands/{cid}").json())["status"] == "done" and s,
                30,
                "both campaigns to finish",
            )
            for cid in ids
        ]
        assert [d["acked"] for d in done] == [d["total"] for d in done]
        times = np.array(city.gw.commands.send_times)
        per_window = np.searchsorted(times, times + 1.0) - np.arange(len(times))
        assert len(times) == sum(d["total"] for d in done) and per_window.max() <= 400, per_window.max()


@pytest.mark.asyncio
async def test_a_campaign_goes_on_after_the_gateway_restarts(endpoints: Endpoints, client_id: str) -> None:
    async with remote_city(endpoints, client_id, lamps=3000, pace=500.0) as city:
        body = {"target": {"all": True}, "op": "dim", "level": 40, "reason": "restart drill"}
        r = await call(city.api.post, "/api/v1/commands", json=body)
        cid, total = r.json()["id"], r.json()["lamps"]
        await until(lambda: city.gw.commands.sent >= 1000, 10, "a third of the campaign to go out")
        city.task.cancel()  # the gateway stops mid-campaign
        with contextlib.suppress(asyncio.CancelledError):
            await city.task
        before = (await call(city.api.get, f"/api/v1/commands/{cid}")).json()
        assert before["status"] == "running" and before["queued"] > 0, before
        gw = GatewayProcess.start(city.settings, endpoints, clock=city.clock)
        task = asyncio.create_task(gw.run())
        try:
            status = await until(
                lambda: (s := city.api.get(f"/api/v1/commands/{cid}").json())["status"] == "done" and s,
                30,
                "the campaign to finish after the restart",
            )
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert (status["acked"], status["failed"], status["expired"]) == (total, 0, 0)
        # The new gateway sent only what had not been answered before it stopped.
        assert gw.commands.sent <= total - before["acked"]
        await until(
            lambda: _count(city.url, "SELECT count(*) FROM lamp_latest WHERE dim = 40 AND is_on") == total,
            30,
            "every lamp to report level 40",
        )


@pytest.mark.asyncio
async def test_a_campaign_waits_out_a_broker_outage(endpoints: Endpoints, client_id: str, tmp_path: Path) -> None:
    """Away for longer than three acknowledgement timeouts, and the devices back only 10 s after the broker (more
    than two timeouts): nothing is sent into the void, nothing expires."""
    broker = PrivateBroker(tmp_path)
    ep = broker.endpoints(endpoints)
    try:
        async with remote_city(ep, client_id, lamps=3000, pace=300.0, ack_timeout_s=3.0) as city:
            body = {"target": {"all": True}, "op": "dim", "level": 30, "reason": "outage drill"}
            r = await call(city.api.post, "/api/v1/commands", json=body)
            cid, total = r.json()["id"], r.json()["lamps"]
            await until(lambda: city.gw.commands.sent >= 600, 10, "some commands to go out")
            await asyncio.to_thread(broker.stop)
            await asyncio.sleep(9.0)
            os.kill(city.sim.pid, signal.SIGSTOP)  # the devices cannot reconnect until it goes on
            try:
                await asyncio.to_thread(broker.start)
                await until(city.gw.commands.link.ready, 40, "the command link to be back (its backoff)")
                sent = city.gw.commands.sent
                await asyncio.sleep(10.0)
                assert city.gw.commands.sent > sent  # commands went again while the devices were away
            finally:
                os.kill(city.sim.pid, signal.SIGCONT)
            status = await until(
                lambda: (s := city.api.get(f"/api/v1/commands/{cid}").json())["status"] == "done" and s,
                90,
                "the campaign to finish after the outage",
            )
            assert (status["acked"], status["failed"], status["expired"]) == (total, 0, 0), status
    finally:
        broker.stop()


@pytest.mark.asyncio
async def test_a_broker_with_a_small_in_flight_window_gets_no_more_than_it_allows(
    endpoints: Endpoints, client_id: str, tmp_path: Path
) -> None:
    """A broker that takes at most 20 unacknowledged PUBLISHes from a client (and disconnects one that sends
    more): the campaign goes at the pace all the same, without a disconnect."""
    broker = PrivateBroker(tmp_path, max_inflight=20)
    ep = broker.endpoints(endpoints)
    try:
        async with remote_city(ep, client_id, lamps=3000, pace=2000.0) as city:
            body = {"target": {"all": True}, "op": "dim", "level": 60, "reason": "small window"}
            r = await call(city.api.post, "/api/v1/commands", json=body)
            cid, total = r.json()["id"], r.json()["lamps"]
            status = await until(
                lambda: (s := city.api.get(f"/api/v1/commands/{cid}").json())["status"] == "done" and s,
                60,
                "the campaign to finish",
            )
            link = city.gw.command_link
            assert (status["acked"], status["failed"], status["expired"]) == (total, 0, 0), status
            assert link.connections() == 1  # never disconnected for exceeding the window
            assert 1 < link.most_in_flight <= 20
    finally:
        broker.stop()


@pytest.mark.asyncio
async def test_a_campaign_goes_on_across_a_database_outage(
    services: Services, endpoints: Endpoints, client_id: str
) -> None:
    async with remote_city(endpoints, client_id, lamps=3000, pace=300.0) as city:
        body = {"target": {"all": True}, "op": "dim", "level": 20, "reason": "database drill"}
        r = await call(city.api.post, "/api/v1/commands", json=body)
        cid, total = r.json()["id"], r.json()["lamps"]
        await until(lambda: city.gw.commands.sent >= 600, 10, "some commands to go out")
        with services.database_away(city.url):
            await asyncio.sleep(0.5)
            sent = city.gw.commands.sent
            await asyncio.sleep(4.0)
            # Nothing goes while a cancel could not be honoured.
            assert city.gw.commands.sent == sent
        status = await until(
            lambda: (s := city.api.get(f"/api/v1/commands/{cid}").json()).get("status") == "done" and s,
            60,
            "the campaign to finish after the outage",
        )
        assert (status["acked"], status["failed"], status["expired"]) == (total, 0, 0), status


@pytest.mark.asyncio
async def test_a_cancelled_campaign_sends_nothing_more(endpoints: Endpoints, client_id: str) -> None:
    async with remote_city(endpoints, client_id, lamps=3000, pace=300.0) as city:
        body = {"target": {"all": True}, "op": "report", "reason": "survey"}
        r = await call(city.api.post, "/api/v1/commands", json=body)
        cid = r.json()["id"]
        await until(lambda: city.gw.commands.sent >= 300, 10, "some commands to go out")
        cancelled = (await asyncio.to_thread(city.api.post, f"/api/v1/commands/{cid}/cancel")).json()
        sent_at_cancel = city.gw.commands.sent
        await asyncio.sleep(2.0)
        assert city.gw.commands.sent == sent_at_cancel
        assert cancelled["status"] == "cancelled" and cancelled["cancelled"] > 1000
        again = await asyncio.to_thread(city.api.post, f"/api/v1/commands/{cid}/cancel")
        assert again.status_code == 409


@pytest.mark.asyncio
async def test_an_override_holds_until_its_time_then_the_schedule_resumes(endpoints: Endpoints, client_id: str) -> None:
    async with remote_city(endpoints, client_id, lamps=2000) as city:
        cabinet = city.spec.cabinet_id[0]
        lamps = [city.spec.lamp_id[i] for i in np.flatnonzero(city.spec.lamp_cabinet == 0).tolist()]
        until_t = city.clock.now() + dt.timedelta(seconds=6)
        r = await call(
            city.api.post,
            "/api/v1/commands",
            json={"target": {"cabinet": cabinet}, "op": "switch", "on": False, "until": until_t.isoformat()},
        )
        assert r.status_code == 202, r.text
        in_cabinet = "SELECT count(*) FROM lamp_latest l JOIN lamps m ON m.no = l.lamp_no WHERE m.cabinet_id = %s "
        await until(
            lambda: _count(city.url, in_cabinet + "AND NOT l.is_on", cabinet) == len(lamps),
            10,
            "the cabinet's lamps to report off",
        )
        lamp = (await call(city.api.get, f"/api/v1/lamps/{lamps[0]}")).json()
        assert (lamp["due"], lamp["condition"]) == (False, "off")  # switched off by the operator: not dark
        await until(
            lambda: _count(city.url, in_cabinet + "AND l.is_on", cabinet) == len(lamps),
            15,
            "the lamps back on their schedule",
        )
        assert (await call(city.api.get, f"/api/v1/lamps/{lamps[0]}")).json()["condition"] == "lit"
        body = {"target": {"district": "cd"}, "op": "dim", "level": 40}
        bad = await call(city.api.post, "/api/v1/commands", json=body)
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "reason"
        body = {"target": {"road": "x"}, "op": "dim", "level": 1}
        road = (await call(city.api.post, "/api/v1/commands", json=body)).json()
        assert road["error"]["field"] == "target.road"


@pytest.mark.asyncio
async def test_a_schedule_command_installs_a_profile_the_devices_then_run_on_their_own(
    endpoints: Endpoints, client_id: str
) -> None:
    async with remote_city(endpoints, client_id, lamps=2000) as city:
        cabinet = city.spec.cabinet_id[1]
        lamps = [city.spec.lamp_id[i] for i in np.flatnonzero(city.spec.lamp_cabinet == 1).tolist()]
        body: dict[str, Any] = {"target": {"cabinet": cabinet}, "op": "schedule"}
        bad = await call(city.api.post, "/api/v1/commands", json={**body, "profile": {"mode": "fixed", "on_at": "x"}})
        assert bad.status_code == 422 and bad.json()["error"]["field"].startswith("profile"), bad.text
        # Lights from 18:00 to 20:00 only: at 21:00 the cabinet's lamps go dark by their own schedule.
        profile = {"mode": "fixed", "on_at": "18:00", "off_at": "20:00"}
        r = await call(city.api.post, "/api/v1/commands", json={**body, "profile": profile})
        assert r.status_code == 202, r.text
        cid = r.json()["id"]
        status = await until(
            lambda: (s := city.api.get(f"/api/v1/commands/{cid}").json())["status"] == "done" and s,
            20,
            "the schedule to be installed",
        )
        assert status["acked"] == len(lamps)
        stored = (await call(city.api.get, f"/api/v1/schedules/cabinet/{cabinet}")).json()
        assert stored["profile"]["mode"] == "fixed"  # the backend expects what the devices now run
        in_cabinet = "SELECT count(*) FROM lamp_latest l JOIN lamps m ON m.no = l.lamp_no WHERE m.cabinet_id = %s "
        await until(
            lambda: _count(city.url, in_cabinet + "AND NOT l.is_on", cabinet) == len(lamps), 10, "the lamps off"
        )
        assert (await call(city.api.get, f"/api/v1/lamps/{lamps[0]}")).json()["condition"] == "off"
        # The database's schedule changes back, but nobody tells the devices: they keep the profile they hold.
        restore = {"profile": {"mode": "astro", "on_offset_min": 10, "off_offset_min": -10}}
        assert (await call(city.api.put, f"/api/v1/schedules/cabinet/{cabinet}", json=restore)).status_code == 200
        await asyncio.sleep(4.0)  # the simulator rereads the database's schedules every 2 s
        r = await call(city.api.post, "/api/v1/commands", json={"target": {"cabinet": cabinet}, "op": "report"})
        await until(
            lambda: city.api.get(f"/api/v1/commands/{r.json()['id']}").json()["status"] == "done", 20, "reports"
        )
        assert _count(city.url, in_cabinet + "AND NOT l.is_on", cabinet) == len(lamps)
        assert (await call(city.api.get, f"/api/v1/lamps/{lamps[0]}")).json()["condition"] == "dark"


def test_a_repeated_command_id_is_acted_on_once_and_acknowledged_again(endpoints: Endpoints, client_id: str) -> None:
    load_generated(endpoints.database_url, 500, seed=4)
    with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
        spec = FleetSpec.from_db(conn)
    clock = Clock(start=NIGHT, speed=1.0)
    fleet = Fleet(spec, interval_s=3600, failure_rate_per_day=0.0, start_ms=clock.now_ms())
    devices = DeviceCommands(fleet, broker=endpoints.as_("lamplighter-headend"), client_id=client_id + "-dev")
    try:
        devices.wait_ready()
        lamp, district = spec.lamp_id[3], spec.lamp_district[3]
        cmd = {
            "id": "abcdef0123456789-3",
            "op": "dim",
            "level": 30,
            "ts": clock.now_ms(),
            "expires": clock.now_ms() + 60_000,
        }
        pub = RawPublisher(endpoints.as_("lamplighter-commands"), client_id + "-ops")
        for _ in range(2):  # the broker delivers it twice (a retry after a lost acknowledgement)
            pub.publish(f"sl/{district}/lamp/{lamp}/cmd", json.dumps(cmd).encode())
        pub.close()
        acks: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + 10
        while len(acks) < 2:
            assert time.monotonic() < deadline, "no acknowledgements"
            acks += devices.process(clock.now_ms())
            time.sleep(0.05)
        assert devices.acted == 1 and devices.repeats == 1
        assert [json.loads(a[1])["id"] for a in acks] == [cmd["id"]] * 2 and fleet.ovr_level[3] == 30
    finally:
        devices.close()


def test_the_simulated_devices_get_commands_sent_while_they_were_away(endpoints: Endpoints, client_id: str) -> None:
    """The devices' command subscription is a kept session: what was sent while the simulator was stopped, or while
    the broker had dropped its connection, arrives when it is back (it reconnects by itself)."""
    load_generated(endpoints.database_url, 300, seed=4)
    with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
        spec = FleetSpec.from_db(conn)
    clock = Clock(start=NIGHT, speed=1.0)
    fleet = Fleet(spec, interval_s=3600, failure_rate_per_day=0.0, start_ms=clock.now_ms())
    headend, me = endpoints.as_("lamplighter-headend"), client_id + "-dev"

    def command(slot: int, level: int) -> None:
        cmd = {"id": f"away0123456789ab-{level}", "op": "dim", "level": level, "ts": clock.now_ms()}
        cmd["expires"] = clock.now_ms() + 60_000
        pub = RawPublisher(endpoints.as_("lamplighter-commands"), client_id + "-ops")
        pub.publish(f"sl/{spec.lamp_district[slot]}/lamp/{spec.lamp_id[slot]}/cmd", json.dumps(cmd).encode())
        pub.close()

    def acked(devices: DeviceCommands, want: str) -> None:
        deadline = time.monotonic() + 15
        while True:
            assert time.monotonic() < deadline, f"no acknowledgement of {want}"
            if any(json.loads(body)["id"] == want for _, body in devices.process(clock.now_ms())):
                return
            time.sleep(0.05)

    first = DeviceCommands(fleet, broker=headend, client_id=me)
    first.wait_ready()
    first.close()
    command(5, 20)  # nobody is connected: the broker keeps it for the session
    devices = DeviceCommands(fleet, broker=headend, client_id=me)
    try:
        devices.wait_ready()
        acked(devices, "away0123456789ab-20")
        assert fleet.ovr_level[5] == 20
        # Another connection under the same client id takes the session over: the broker drops the devices' one.
        intruder = RawPublisher(headend, me, clean=False)
        intruder.close()
        command(6, 30)
        acked(devices, "away0123456789ab-30")
        assert fleet.ovr_level[6] == 30 and devices.received == 2
    finally:
        devices.close()


def test_only_operators_command(endpoints: Endpoints) -> None:
    url = endpoints.database_url
    load_generated(url, 1000, seed=3)
    app = create_app(database_url=url, broker=endpoints.as_("lamplighter-api"))
    body = {"target": {"lamps": ["XN-CD-000001"]}, "op": "dim", "level": 40}
    with TestClient(app) as api:
        r = api.post("/api/v1/commands", json=body)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        api.headers["Authorization"] = "Bearer ll_not-a-token"
        assert api.post("/api/v1/commands", json=body).status_code == 401
        viewer = sign_in(api, url, "viewer")
        r = api.post("/api/v1/commands", json=body)
        assert r.status_code == 403, r.text
        assert r.json()["error"] == {
            "code": "forbidden",
            "message": f"this needs the operator role; {viewer} is viewer",
        }
        assert api.get("/api/v1/commands").json()["total"] == 0  # a viewer may read the audit trail
        operator = sign_in(api, url, "operator")
        r = api.post("/api/v1/commands", json=body)
        assert r.status_code == 202, r.text
        assert api.post(f"/api/v1/commands/{r.json()['id']}/cancel").status_code == 200
        sign_in(api, url, "viewer")
        assert api.post(f"/api/v1/commands/{r.json()['id']}/cancel").status_code == 403
        items = api.get("/api/v1/commands").json()["items"]
        assert [(c["actor"], c["status"]) for c in items] == [(operator, "cancelled")]

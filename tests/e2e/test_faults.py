"""Faults end to end on a compressed night: simulator fault injection → broker → gateway → fault engine →
tickets → signed webhooks to the districts' crews."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from alerts.crews import Crew, save_crew
from api.app import create_app
from kernel.clock import Clock
from lamplighter.config import Settings
from lamplighter.runtime import Endpoints, GatewayProcess
from lamplighter.simcontrol import ScheduleControl
from simulator.fleet import Fleet, FleetSpec
from simulator.runner import Simulator
from tests.support.auth import sign_in
from tests.support.factories import load_generated
from tests.support.webhook import Receiver

pytestmark = [pytest.mark.services, pytest.mark.slow]

CST = dt.timezone(dt.timedelta(hours=8))
SPEED = 60.0  # a clock minute per second
INTERVAL_S = 60  # each device reports every clock minute
SECRET = "crew-secret-0123456789"


def _tickets(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(
            "SELECT id, priority, fault, asset_type, asset_id, district, crew_id, status, "
            "(SELECT array_agg(lamp_id) FROM ticket_lamps l WHERE l.ticket_id = t.id) FROM tickets t ORDER BY id"
        )
        keys = ("id", "priority", "fault", "asset_type", "asset_id", "district", "crew", "status", "lamps")
        return [dict(zip(keys, r, strict=True)) for r in cur.fetchall()]


async def _until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(pred):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


@pytest.mark.asyncio
async def test_faults_become_the_right_tickets_for_the_right_crews(endpoints: Endpoints, client_id: str) -> None:
    url = endpoints.database_url
    receiver = Receiver(SECRET)
    load_generated(url, 3000, seed=7)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE lamps SET report_interval_s = %s", (INTERVAL_S,))
        districts = [r[0] for r in conn.execute("SELECT code FROM districts ORDER BY code")]
        for d in districts:
            save_crew(
                conn,
                Crew(
                    id=f"crew-{d}",
                    name=f"Crew {d}",
                    districts=[d],
                    webhook_url=receiver.url,
                    webhook_secret=SECRET,
                    mqtt=False,
                ),
            )
        spec = FleetSpec.from_db(conn)

    # The cabinet whose feeder is cut: the biggest one. Failures, a leak and a flicker elsewhere.
    sizes = np.bincount(spec.lamp_cabinet)
    cut_cab = int(sizes.argmax())
    assert sizes[cut_cab] >= 150
    behind = set(np.flatnonzero(spec.lamp_cabinet == cut_cab).tolist())
    rng = np.random.default_rng(5)
    others = [i for i in rng.permutation(len(spec.lamp_id)).tolist() if i not in behind]
    failed, leak, flicker = others[:20], others[20], others[21]

    clock = Clock(start=dt.datetime(2026, 12, 1, 20, 0, tzinfo=CST), speed=SPEED)
    settings = Settings(
        database_url=url,
        mqtt_url=endpoints.mqtt_url,
        gateway_client_id=client_id,
        flush_interval_s=0.1,
        delivery_allow_private=True,  # the crews' receiver is on this machine
    )
    gw = GatewayProcess.start(settings, endpoints, clock=clock)
    fleet = Fleet(
        spec,
        interval_s=INTERVAL_S,
        failure_rate_per_day=0.0,
        start_ms=clock.now_ms(),
        seed=2,
        control=ScheduleControl(url, spec.lamp_id),
    )
    sim = Simulator(fleet, broker=endpoints.as_("lamplighter-headend"), clock=clock, client_prefix=client_id)
    actions: list[Callable[[int], None]] = []
    leak_sent = threading.Event()

    def step(_: Any) -> None:  # in the simulator's thread, between steps
        while actions:
            actions.pop(0)(clock.now_ms())

    gw_task = asyncio.create_task(gw.run())
    sim_thread = threading.Thread(target=sim.run, kwargs={"on_tick": step}, daemon=True)
    stack = contextlib.ExitStack()
    app = create_app(database_url=url, broker=endpoints.as_("lamplighter-api"), engine=gw.engine, clock=clock)
    api = stack.enter_context(TestClient(app))
    sign_in(api, url, "operator")
    try:
        await asyncio.wait_for(gw.subscriber.connected.wait(), 10)
        sim_thread.start()
        # Two clock minutes: every device has reported, the fleet is lit, nothing is wrong.
        await asyncio.sleep(2 * 60 / SPEED + 1)
        assert _tickets(url) == []

        def inject(now: int) -> None:
            for circuit in range(1, int(spec.cabinet_circuits[cut_cab]) + 1):
                fleet.cut_cable(cut_cab, circuit, now)
            fleet.fail(failed, "lamp_failure", now)
            fleet.fail([flicker], "driver_failure", now)
            fleet.leak([leak], now)
            leak_sent.set()

        actions.append(inject)
        await asyncio.to_thread(leak_sent.wait, 5)
        leak_at = time.monotonic()
        await asyncio.sleep(20 / SPEED)  # twenty clock seconds later the flicker is gone: one faulty report only
        actions.append(lambda now: fleet.repair([flicker], now))

        def p1_delivered() -> bool:
            return any(r["body"]["ticket"]["priority"] == "P1" for r in list(receiver.received))

        await _until(p1_delivered, 10, "the leakage P1 at its crew")
        p1 = next(r for r in receiver.received if r["body"]["ticket"]["priority"] == "P1")
        assert p1["at"] - leak_at < 2.0, f"P1 reached its crew {p1['at'] - leak_at:.2f} s after the report"
        assert p1["body"]["ticket"]["asset_id"] == spec.lamp_id[leak]

        # Ten clock minutes: every debounce window has passed.
        await asyncio.sleep(10 * 60 / SPEED)
        tickets = _tickets(url)
        cabinet = [t for t in tickets if t["asset_type"] == "cabinet"]
        lamp_tickets = {t["asset_id"]: t for t in tickets if t["asset_type"] == "lamp"}
        assert [(t["priority"], t["fault"], t["asset_id"]) for t in cabinet] == [
            ("P2", "cabinet_outage", spec.cabinet_id[cut_cab])
        ]
        assert set(cabinet[0]["lamps"]) == {spec.lamp_id[i] for i in behind}
        assert not set(lamp_tickets) & {spec.lamp_id[i] for i in behind}, "lamps behind the cut got own tickets"
        expected_lamps = {spec.lamp_id[i] for i in failed} | {spec.lamp_id[leak]}
        assert set(lamp_tickets) == expected_lamps  # and none for the flicker
        assert {t["priority"] for k, t in lamp_tickets.items() if k != spec.lamp_id[leak]} == {"P3"}

        # Every lamp ticket reached its own district's crew, signed.
        await _until(
            lambda: len({r["body"]["ticket"]["id"] for r in receiver.received}) >= len(tickets),
            15,
            "every ticket delivered",
        )
        assert receiver.bad_signatures == 0
        for r in receiver.received:
            t = r["body"]["ticket"]
            assert r["body"]["crew"] == f"crew-{t['district']}"

        # A crew resolves without repairing: reopened. Another resolves, and its lamp then reports healthy:
        # verified.
        still_bad, repaired = lamp_tickets[spec.lamp_id[failed[0]]], lamp_tickets[spec.lamp_id[failed[1]]]
        for t in (still_bad, repaired):
            r = await asyncio.to_thread(
                api.post,
                f"/api/v1/tickets/{t['id']}/actions",
                json={"action": "resolve", "note": "done"},
            )
            assert r.status_code == 200, r.text
        actions.append(lambda now: fleet.repair([failed[1]], now))
        status = lambda tid: next(t["status"] for t in _tickets(url) if t["id"] == tid)  # noqa: E731
        await _until(lambda: status(still_bad["id"]) == "reopened", 15, "the unrepaired lamp's ticket reopened")
        await _until(lambda: status(repaired["id"]) == "verified", 15, "the repaired lamp's ticket verified")
    finally:
        sim.stop()
        sim_thread.join(10)
        sim.close()
        gw_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gw_task
        stack.close()
        receiver.stop()

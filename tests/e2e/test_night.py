"""A whole Xining night on a compressed clock: simulator → broker → gateway → lighting engine → API.

The simulated devices follow the stored schedule; at 19:00 the test breaks 40 lamps and silences 5 controllers,
and a maintenance window takes one cabinet out. From 22:00 the API must show exactly those counts; after dawn
the nightly report, the sampled history, the below-target alert and the retained ops message must agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import threading
import time
from typing import Any

import aiomqtt
import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from kernel.clock import Clock
from lamplighter.config import Settings
from lamplighter.runtime import Endpoints, GatewayProcess
from lamplighter.simcontrol import ScheduleControl
from lighting.engine import LightingEngine
from protocol.topics import OPS_RATE_TOPIC
from simulator.fleet import Fleet, FleetSpec
from simulator.runner import Simulator
from tests.support.auth import sign_in
from tests.support.factories import load_generated

pytestmark = [pytest.mark.services, pytest.mark.slow]

CST = dt.timezone(dt.timedelta(hours=8))
START = dt.datetime(2026, 12, 1, 16, 30, tzinfo=CST)
SPEED = 1800.0  # a clock hour in two seconds
INTERVAL_S = 1800  # every device reports each half hour of the clock (one real second)


def clock_ms(h: int, m: int = 0, day: int = 1) -> int:
    return int(dt.datetime(2026, 12, day, h, m, tzinfo=CST).timestamp() * 1000)


async def wait_clock(clock: Clock, ts_ms: int) -> None:
    await asyncio.sleep(max(0.0, (ts_ms - clock.now_ms()) / 1000 / clock.speed))


@pytest.mark.asyncio
async def test_a_compressed_night_gives_exact_figures(endpoints: Endpoints, client_id: str) -> None:
    url = endpoints.database_url
    load_generated(url, 2000, seed=7)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE lamps SET report_interval_s = %s", (INTERVAL_S,))
        spec = FleetSpec.from_db(conn)
        single = conn.execute("SELECT id FROM lamps WHERE controller = 'single' ORDER BY no").fetchall()

    # The maintenance window's cabinet, the lamps to break and the controllers to silence: disjoint sets.
    cabinet = spec.cabinet_id[int(spec.lamp_cabinet[0])]
    in_window = np.flatnonzero(spec.lamp_cabinet == spec.lamp_cabinet[0])
    outside = np.setdiff1d(np.arange(len(spec.lamp_id)), in_window)
    single_ids = {r[0] for r in single}
    silent = [i for i in outside.tolist() if spec.lamp_id[i] in single_ids][:5]
    broken = [i for i in outside.tolist() if i not in silent][::7][:40]
    due = len(spec.lamp_id) - len(in_window)
    expected = {"due": due, "lit": due - 45, "dark": 40, "unknown": 5, "day_burning": 0}
    expected_rate = round((due - 45) * 100 / due, 2)
    assert expected_rate < 98.0  # so the city alert must be raised

    clock = Clock(start=START, speed=SPEED)
    settings = Settings(
        database_url=url, mqtt_url=endpoints.mqtt_url, gateway_client_id=client_id, flush_interval_s=0.1
    )
    gw = GatewayProcess.start(settings, endpoints, clock=clock)
    control = ScheduleControl(url, spec.lamp_id, reload_every_s=0.1)
    fleet = Fleet(
        spec, interval_s=INTERVAL_S, failure_rate_per_day=0.0, start_ms=clock.now_ms(), control=control, seed=3
    )
    sim = Simulator(fleet, broker=endpoints.as_("lamplighter-headend"), clock=clock, client_prefix=client_id)
    injected = threading.Event()

    def inject(_: Any) -> None:  # runs in the simulator's thread, between its steps
        now = clock.now_ms()
        if not injected.is_set() and now >= clock_ms(19):
            fleet.fail(broken, "lamp_failure", now)
            positions = np.flatnonzero(np.isin(fleet.single, silent))
            fleet.next_single[positions] = 2**62  # these controllers stop reporting
            injected.set()

    app = create_app(database_url=url, broker=endpoints.as_("lamplighter-api"), engine=gw.engine, clock=clock)
    gw_task = asyncio.create_task(gw.run())
    sim_thread = threading.Thread(target=sim.run, kwargs={"on_tick": inject}, daemon=True)
    try:
        await asyncio.wait_for(gw.subscriber.connected.wait(), 10)
        sim_thread.start()
        with TestClient(app) as api:
            sign_in(api, url, "operator")
            day = await asyncio.to_thread(api.get, "/api/v1/lighting-rate")
            assert day.json()["city"]["rate"] is None  # 16:30: nothing due

            window = {"kind": "maintenance", "start": "2026-12-01T19:00:00+08:00", "end": "2026-12-02T02:00:00+08:00"}
            r = await asyncio.to_thread(api.put, f"/api/v1/schedules/cabinet/{cabinet}", json={"windows": [window]})
            assert r.status_code == 200, r.text

            await wait_clock(clock, clock_ms(22))
            assert injected.is_set()
            last: dict[str, Any] = {}
            while clock.now_ms() < clock_ms(1, 30, day=2):
                last = (await asyncio.to_thread(api.get, "/api/v1/lighting-rate")).json()["city"]
                if {k: last[k] for k in expected} == expected:
                    break
                await asyncio.sleep(0.05)
            assert {k: last[k] for k in expected} == expected, last
            assert last["rate"] == expected_rate and last["meets_target"] is False
            # A restart rebuilds the same figures from PostgreSQL.
            at = clock.now_ms()
            with psycopg.connect(url) as conn:
                rebuilt = await asyncio.to_thread(LightingEngine.load, conn)
            assert rebuilt.breakdown(at).city.rows() == gw.engine.breakdown(at).city.rows()

            # Dawn: the lamps switch off, the night is summarised.
            await wait_clock(clock, clock_ms(8, 40, day=2))
            deadline = time.monotonic() + 10
            while True:
                report = await asyncio.to_thread(api.get, "/api/v1/reports/nightly", params={"date": "2026-12-01"})
                if report.status_code == 200 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert report.status_code == 200, report.text
            body = report.json()
            newest = await asyncio.to_thread(api.get, "/api/v1/reports/nightly")  # no date: the newest night sampled
            assert newest.status_code == 200 and newest.json()["night"] == "2026-12-01"
            assert body["city"]["at_inspection"] == expected_rate
            assert body["city"]["min"] <= expected_rate <= 100.0
            assert 13.0 < body["city"]["lighting_hours"] < 14.5  # sunset + 10 min to sunrise − 10 min
            assert {d["key"] for d in body["districts"]} <= {"cb", "cd", "cx", "cz", "dt", "hy", "hz"}
            assert body["roads_assessed"] > 0 and body["integrity_at_inspection"] is not None
            csv_text = (
                await asyncio.to_thread(
                    api.get, "/api/v1/reports/nightly", params={"date": "2026-12-01", "format": "csv"}
                )
            ).text
            assert csv_text.startswith("section,key,min,mean") and "\ncity,all," in csv_text

            history = (
                await asyncio.to_thread(
                    api.get,
                    "/api/v1/lighting-rate/history",
                    params={"from": "2026-12-01T22:00:00+08:00", "to": "2026-12-01T22:10:00+08:00"},
                )
            ).json()
            assert len(history["points"]) == 10 and {p["rate"] for p in history["points"]} == {expected_rate}
            ten = (
                await asyncio.to_thread(
                    api.get,
                    "/api/v1/lighting-rate/history",
                    params={"from": "2026-12-01T22:00:00+08:00", "to": "2026-12-01T22:10:00+08:00", "bucket": "10m"},
                )
            ).json()["points"]
            # A bucket of ten samples: lamps counted in whole lamps (the mean to the nearest lamp), the rate exact.
            assert len(ten) == 1 and ten[0]["samples"] == 10 and ten[0]["rate"] == expected_rate
            assert all(type(ten[0][k]) is int for k in ("due", "lit", "dark", "unknown", "day_burning"))

            alerts = (await asyncio.to_thread(api.get, "/api/v1/alerts")).json()
            city_alerts = [a for a in alerts["items"] if a["grouping"] == "city"]
            assert len(city_alerts) == 1 and "below its 98 % target" in city_alerts[0]["message"]

        with psycopg.connect(url) as conn:
            alert = conn.execute(
                "SELECT raised_at, cleared_at, rate FROM operator_alerts WHERE grouping = 'city' AND key = 'all'"
            ).fetchone()
        assert alert is not None, "the city stayed below target all night without an alert"
        raised_at, cleared_at, _ = alert
        assert clock_ms(19) < raised_at.timestamp() * 1000 < clock_ms(20)
        assert cleared_at is not None and cleared_at.timestamp() * 1000 > clock_ms(7, day=2)

        # A reader of its own (the gateway's publisher is `{prefix}-ops`). The retained value comes first; if the
        # sampler had not yet published after dawn, its next value follows within seconds of the clock.
        reader = client_id + "-ops-reader"
        async with aiomqtt.Client(**endpoints.as_("lamplighter-display").aiomqtt_kwargs(), identifier=reader) as mqtt:
            await mqtt.subscribe(OPS_RATE_TOPIC, qos=1)
            async with asyncio.timeout(10):
                first = message = await anext(aiter(mqtt.messages))
                while json.loads(bytes(message.payload))["ts"] <= clock_ms(8, day=2):  # type: ignore[arg-type]
                    message = await anext(aiter(mqtt.messages))
        ops = json.loads(bytes(message.payload))  # type: ignore[arg-type]
        assert first.retain and ops["city"]["due"] == 0 and ops["ts"] > clock_ms(8, day=2)
        assert len(ops["districts"]) == 7
    finally:
        sim.stop()
        sim_thread.join(10)
        sim.close()
        gw_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gw_task

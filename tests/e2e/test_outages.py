"""Our own outages are nobody's silence: after the database, the broker or the gateway was away for longer
than three reporting intervals, no communication-loss ticket opens for devices that report again in time,
while a controller that really went silent still gets its ticket. On a compressed clock (a minute a second)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from pathlib import Path

import psycopg
import pytest

from kernel.clock import Clock
from lamplighter.runtime import Endpoints
from simulator.fleet import Fleet, FleetSpec
from simulator.runner import Simulator
from tests.support.factories import load_generated
from tests.support.gateway import gateway
from tests.support.services import PrivateBroker, Services

pytestmark = [pytest.mark.services, pytest.mark.slow]

SPEED = 60.0  # a clock minute each second
INTERVAL_S = 60  # every device reports each clock minute; silent after three
OUTAGE_S = 10.0  # real seconds: ten intervals, and longer than silence plus the five-minute debounce


def _comm_loss(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT asset_id FROM tickets WHERE fault = 'comm_loss'")}


@pytest.mark.asyncio
async def test_no_comm_loss_from_our_own_outages(
    services: Services, endpoints: Endpoints, client_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Devices that come back within a second of the broker (their backoff is real time, the clock runs 60×:
    # the simulator's default of up to 30 s would be half an hour of silence here, theirs, not ours).
    monkeypatch.setattr("simulator.runner._RECONNECT_MAX_S", 1.0)
    broker = PrivateBroker(tmp_path)
    ep = broker.endpoints(endpoints)
    url = ep.database_url
    load_generated(url, 300, seed=7)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE lamps SET report_interval_s = %s", (INTERVAL_S,))
        spec = FleetSpec.from_db(conn)
    clock = Clock(start=dt.datetime(2026, 12, 1, 20, 0, tzinfo=dt.timezone(dt.timedelta(hours=8))), speed=SPEED)
    fleet = Fleet(spec, interval_s=INTERVAL_S, failure_rate_per_day=0.0, start_ms=clock.now_ms(), seed=3)
    silenced = fleet.single[:3]  # these controllers really stop reporting
    fleet.next_single[:3] = 2**62
    truly_silent = {spec.lamp_id[i] for i in silenced.tolist()}
    sim = Simulator(fleet, broker=ep.as_("lamplighter-headend"), clock=clock, client_prefix=client_id)
    sim_thread = threading.Thread(target=sim.run, daemon=True)
    sim_thread.start()
    seen: dict[str, set[str]] = {}
    try:
        async with gateway(ep, client_id, clock=clock):
            await asyncio.sleep(12)  # three intervals, the debounce, a sweep: the silent ones are ticketed
            seen["before"] = _comm_loss(url)
            with services.database_away(url):
                await asyncio.sleep(OUTAGE_S)
            await asyncio.sleep(8)
            seen["database"] = _comm_loss(url)
            await asyncio.to_thread(broker.restart, OUTAGE_S)
            await asyncio.sleep(8)
            seen["broker"] = _comm_loss(url)
        await asyncio.sleep(OUTAGE_S)  # the gateway is down, and its queue on the broker is lost below
        async with gateway(ep, client_id + "-new", clock=clock):
            await asyncio.sleep(8)
            seen["gateway"] = _comm_loss(url)
    finally:
        sim.stop()
        sim_thread.join(10)
        sim.close(clean=False)
        broker.stop()
    assert seen["before"] == truly_silent, seen  # the rule itself works
    for outage in ("database", "broker", "gateway"):
        assert seen[outage] == truly_silent, (outage, sorted(seen[outage] - truly_silent)[:5])

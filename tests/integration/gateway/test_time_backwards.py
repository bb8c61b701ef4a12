"""Time that goes backwards never freezes a lamp: a device whose clock ran ahead and was corrected is followed
by what it reports now — its latest state, its faults and their tickets."""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from lamplighter.runtime import Endpoints
from simulator.wire import RawPublisher
from tests.support.factories import GatewayFactory
from tests.support.gateway import count, seed, wait_for

pytestmark = pytest.mark.services


@pytest.mark.asyncio
async def test_a_corrected_device_clock_opens_the_next_faults_ticket(
    endpoints: Endpoints, client_id: str, start_gateway: GatewayFactory
) -> None:
    url = endpoints.database_url
    seed(url, 50)
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT id, district, no FROM lamps WHERE controller = 'single' ORDER BY no").fetchone()
    assert row is not None
    lamp, district, no = row
    topic = f"sl/{district}/lamp/{lamp}/state"
    async with start_gateway() as gw:
        now = int(time.time() * 1000)
        ahead = {"ts": now + 180_000, "seq": 10, "on": False, "dim": 0, "faults": []}  # three minutes fast
        pub = RawPublisher(endpoints.as_("lamplighter-headend"), client_id + "-dev")
        pub.publish(topic, json.dumps(ahead).encode())
        await wait_for(lambda: count(url, "SELECT count(*) FROM lamp_readings") == 1, 10, "the report from ahead")
        # The device's clock is corrected; its next report is older than the one held, and it leaks.
        now = int(time.time() * 1000)
        leaking = {"ts": now, "seq": 11, "on": True, "dim": 100, "faults": ["leakage_current"]}
        pub.publish(topic, json.dumps(leaking).encode())
        pub.close()
        await wait_for(
            lambda: (
                count(url, f"SELECT count(*) FROM tickets WHERE asset_id = '{lamp}' AND fault = 'leakage_current'") == 1
            ),
            10,
            "the leakage ticket",
        )
        slot = gw.engine.index.slot_of_id[lamp]
        assert int(gw.engine.state.ts_ms[slot]) == now and bool(gw.engine.state.on[slot])
    with psycopg.connect(url) as conn:
        latest = conn.execute("SELECT seq, is_on, faults FROM lamp_latest WHERE lamp_no = %s", (no,)).fetchone()
    assert latest == (11, True, ["leakage_current"])

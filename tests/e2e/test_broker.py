"""The private broker, run as `lamplighter services` runs it, keeps what it acknowledged across a restart."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from fieldnet.broker import Broker
from lamplighter.runtime import Endpoints
from lamplighter.services import PrivateServices
from simulator.wire import RawPublisher
from tests.support.gateway import count, gateway, lamp_ids, seed, wait_for
from tests.support.services import free_port

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.mark.asyncio
async def test_a_broker_restart_keeps_what_it_queued_for_a_stopped_gateway(
    endpoints: Endpoints, client_id: str, tmp_path: Path
) -> None:
    svc = PrivateServices(tmp_path / "run", mqtt_port=free_port(), tls_port=free_port())
    svc.start_mosquitto()
    try:
        ep = Endpoints(endpoints.database_url, Broker.parse(svc.mqtt_url), svc.accounts_file, svc.key_file)
        url = ep.database_url
        seed(url, 1000)
        ids = lamp_ids(url, 1000)
        async with gateway(ep, client_id):
            await asyncio.sleep(1.0)  # its persistent session now exists; the gateway stops
        n, now = 20_000, int(time.time() * 1000)
        messages = []
        for i in range(n):
            lamp, district = ids[i % len(ids)]
            body = {"ts": now + i // len(ids), "seq": i // len(ids), "on": True, "dim": 100, "faults": []}
            messages.append((f"sl/{district}/lamp/{lamp}/state".encode(), json.dumps(body).encode()))
        pub = RawPublisher(ep.as_("lamplighter-headend"), client_id + "-pub")
        pub.publish_batch(messages)  # each acknowledged by the broker before this returns
        pub.close()
        svc._stop_mosquitto()
        svc.start_mosquitto()
        async with gateway(ep, client_id):
            await wait_for(lambda: count(url, "SELECT count(*) FROM lamp_readings") >= n, 60, f"{n} readings")
            await asyncio.sleep(1.0)
        assert count(url, "SELECT count(*) FROM lamp_readings") == n
        assert count(url, "SELECT count(DISTINCT (lamp_no, seq)) FROM lamp_readings") == n
    finally:
        svc._stop_mosquitto()

"""End to end on the real broker and PostgreSQL: simulator → Mosquitto → gateway → tables."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from kernel.clock import Clock
from lamplighter.config import Settings
from lamplighter.devices import device_logins
from lamplighter.runtime import Endpoints, GatewayProcess
from lamplighter.seeding import load_city
from seeds.generator import generate
from simulator.fleet import Fleet
from simulator.runner import Simulator
from simulator.wire import RawPublisher
from tests.support.factories import GatewayFactory
from tests.support.gateway import GatewayChild, count, gateway, lamp_ids, publish_readings, seed, seeded_spec, wait_for
from tests.support.services import PrivateBroker, Services, clear_statuses, provision

pytestmark = pytest.mark.services


@pytest.mark.asyncio
async def test_simulated_fleet_lands_exactly_once(
    endpoints: Endpoints, client_id: str, no_errors: None, start_gateway: GatewayFactory
) -> None:
    spec = seeded_spec(endpoints.database_url, 2000)
    clock = Clock()
    # A 3 s reporting interval so every lamp reports several times in a few seconds.
    fleet = Fleet(spec, interval_s=3, failure_rate_per_day=200.0, start_ms=clock.now_ms())
    async with start_gateway() as gw:
        sim = Simulator(
            fleet,
            broker=endpoints.as_("lamplighter-headend"),
            clock=clock,
            connections=2,
            client_prefix=client_id,
        )
        await asyncio.to_thread(sim.run, duration_s=8)
        await asyncio.to_thread(sim.close)
        sent = sim.stats.lamp_readings
        url = endpoints.database_url
        await wait_for(lambda: count(url, "SELECT count(*) FROM lamp_readings") >= sent, 30, f"{sent} readings")
        await asyncio.sleep(0.5)
    assert sent > 2000 * 2
    assert count(url, "SELECT count(*) FROM lamp_readings") == sent
    assert count(url, "SELECT count(DISTINCT (lamp_no, seq)) FROM lamp_readings") == sent
    assert count(url, "SELECT count(*) FROM lamp_latest") == 2000
    assert count(url, "SELECT count(*) FROM quarantine") == 0
    # Each lamp's readings are its seq 0..n-1 with no gap.
    assert (
        count(
            url,
            "SELECT count(*) FROM (SELECT lamp_no FROM lamp_readings GROUP BY lamp_no "
            "HAVING max(seq) + 1 <> count(*) OR min(seq) <> 0) gaps",
        )
        == 0
    )
    # Injected failures show in the stored faults.
    failed = int((fleet.fault > 0).sum())
    assert failed > 0
    assert count(url, "SELECT count(*) FROM lamp_latest WHERE faults <> '{}'") == failed
    # Every message that was not a single lamp's report was a cabinet report.
    single = count(
        url, "SELECT count(*) FROM lamp_readings r JOIN lamps l ON l.no = r.lamp_no WHERE l.controller = 'single'"
    )
    assert count(url, "SELECT count(*) FROM cabinet_readings") == sim.stats.messages - single
    assert gw.gateway.stats.rejected == 0


@pytest.mark.asyncio
async def test_malformed_messages_are_quarantined_and_ingest_goes_on(
    endpoints: Endpoints, client_id: str, no_errors: None, start_gateway: GatewayFactory
) -> None:
    seed(endpoints.database_url, 500)
    ids = lamp_ids(endpoints.database_url, 500)
    url = endpoints.database_url
    async with start_gateway():
        good, bad = await asyncio.to_thread(publish_readings, endpoints, ids, 20_000, client_id + "-pub", bad_every=20)
        assert sum(bad.values()) == 1000
        await wait_for(
            lambda: (
                count(url, "SELECT count(*) FROM quarantine") >= 1000
                and count(url, "SELECT count(*) FROM lamp_readings") >= good
            ),
            30,
            "all messages",
        )
        # Still running: a later good message lands too.
        later = json.dumps({"ts": int(time.time() * 1000), "seq": 999_999, "on": False, "dim": 0, "faults": []})
        pub = RawPublisher(endpoints.as_("lamplighter-headend"), client_id + "-late")
        pub.publish(f"sl/{ids[0][1]}/lamp/{ids[0][0]}/state", later.encode())
        pub.close()
        await wait_for(
            lambda: count(url, "SELECT count(*) FROM lamp_readings WHERE seq = 999999") == 1, 10, "the late message"
        )
    assert count(url, "SELECT count(*) FROM lamp_readings") == good + 1
    with psycopg.connect(url) as conn:
        got = Counter(dict(conn.execute("SELECT reason, count(*) FROM quarantine GROUP BY reason").fetchall()))
        sample = conn.execute(
            "SELECT topic, payload, detail FROM quarantine WHERE reason = 'out_of_range' LIMIT 1"
        ).fetchone()
    assert got == bad
    assert sample is not None and sample[0].startswith("sl/") and b"999" in bytes(sample[1]) and "100" in sample[2]


@pytest.mark.asyncio
@pytest.mark.slow
async def test_gateway_killed_mid_stream_loses_and_duplicates_nothing(endpoints: Endpoints, client_id: str) -> None:
    seed(endpoints.database_url, 1000)
    ids = lamp_ids(endpoints.database_url, 1000)
    url = endpoints.database_url
    gw = GatewayChild(endpoints, client_id)
    try:
        # The persistent session must exist before publishing, or the broker has nobody to queue for.
        await wait_for(gw.subscribed.is_set, 30, "gateway to subscribe")
        n = 60_000
        publisher = asyncio.create_task(asyncio.to_thread(publish_readings, endpoints, ids, n, client_id + "-pub"))
        await wait_for(lambda: count(url, "SELECT count(*) FROM lamp_readings") > 5_000, 60, "ingest to start")
        gw.kill()
        landed_at_kill = count(url, "SELECT count(*) FROM lamp_readings")
        await publisher
        assert landed_at_kill < n, "the kill came too late to test anything"
        gw = GatewayChild(endpoints, client_id)
        await wait_for(lambda: count(url, "SELECT count(*) FROM lamp_readings") >= n, 90, f"{n} readings")
        await asyncio.sleep(1.0)
    finally:
        gw.stop()
    assert count(url, "SELECT count(*) FROM lamp_readings") == n
    assert count(url, "SELECT count(DISTINCT (lamp_no, ts, seq)) FROM lamp_readings") == n
    assert count(url, "SELECT count(*) FROM quarantine") == 0


@pytest.mark.asyncio
async def test_a_database_outage_mid_stream_loses_and_duplicates_nothing(
    services: Services, endpoints: Endpoints, client_id: str
) -> None:
    """PostgreSQL drops every connection and refuses new ones for a few seconds (a restart, a failover)."""
    seed(endpoints.database_url, 1000)
    ids = lamp_ids(endpoints.database_url, 1000)
    url = endpoints.database_url
    gw = GatewayChild(endpoints, client_id)
    try:
        await wait_for(gw.subscribed.is_set, 30, "gateway to subscribe")
        # Enough that the outage comes while the stream still flows: the gateway keeps up with the publisher, and
        # 60,000 readings had all landed once before the database went away.
        n = 150_000
        publisher = asyncio.create_task(asyncio.to_thread(publish_readings, endpoints, ids, n, client_id + "-pub"))
        await wait_for(lambda: count(url, "SELECT count(*) FROM lamp_readings") > 1_000, 60, "ingest to start")
        with services.database_away(url):
            await asyncio.sleep(4.0)
        landed_after_outage = count(url, "SELECT count(*) FROM lamp_readings")
        await publisher
        try:
            await wait_for(lambda: count(url, "SELECT count(*) FROM lamp_readings") >= n, 90, f"{n} readings")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the gateway's log:\n{''.join(gw.log[-30:])}") from None
        await asyncio.sleep(1.0)
        assert gw.proc.poll() is None, "the gateway exited during the outage"
    finally:
        gw.stop()
    assert landed_after_outage < n, "the outage came too late to test anything"
    assert count(url, "SELECT count(*) FROM lamp_readings") == n
    assert count(url, "SELECT count(DISTINCT (lamp_no, ts, seq)) FROM lamp_readings") == n
    assert count(url, "SELECT count(*) FROM quarantine") == 0
    assert any("retrying" in line for line in gw.log), "the gateway said nothing of the outage"


@pytest.mark.asyncio
async def test_a_broker_restart_mid_stream_loses_nothing(endpoints: Endpoints, client_id: str, tmp_path: Path) -> None:
    """The simulated devices keep what they cannot send and send again what was not acknowledged; the gateway
    reconnects to its session. Every reading lands once."""
    broker = PrivateBroker(tmp_path)
    ep = broker.endpoints(endpoints)
    url = ep.database_url
    spec = seeded_spec(url, 2000)
    clock = Clock()
    fleet = Fleet(spec, interval_s=2, failure_rate_per_day=0.0, start_ms=clock.now_ms())
    try:
        async with gateway(ep, client_id) as gw:
            sim = Simulator(fleet, broker=ep.as_("lamplighter-headend"), clock=clock, client_prefix=client_id)
            run = asyncio.create_task(asyncio.to_thread(sim.run, duration_s=10))
            await wait_for(lambda: count(url, "SELECT count(*) FROM lamp_readings") > 2000, 20, "ingest to start")
            await asyncio.to_thread(broker.restart, 2.0)
            await run
            await asyncio.to_thread(sim.close)
            sent = sim.stats.lamp_readings
            await wait_for(lambda: count(url, "SELECT count(*) FROM lamp_readings") >= sent, 60, f"{sent} readings")
            await asyncio.sleep(0.5)
            assert gw.gateway.stats.rejected == 0
    finally:
        broker.stop()
    assert sim.stats.reconnects == 2 and sim.stats.dropped == 0  # both of its connections came back
    assert sent > 2000 * 3
    assert count(url, "SELECT count(*) FROM lamp_readings") == sent
    assert count(url, "SELECT count(DISTINCT (lamp_no, seq)) FROM lamp_readings") == sent


@pytest.mark.asyncio
async def test_last_will_marks_a_device_offline(
    endpoints: Endpoints, client_id: str, no_errors: None, start_gateway: GatewayFactory
) -> None:
    spec = seeded_spec(endpoints.database_url, 60)
    clock = Clock()
    fleet = Fleet(spec, interval_s=600, start_ms=clock.now_ms())
    url = endpoints.database_url
    provision(endpoints)  # every device its own account, as installed in the field
    async with start_gateway():
        sim = Simulator(
            fleet,
            broker=endpoints.as_("lamplighter-headend"),
            clock=clock,
            per_device=True,
            device_login=device_logins(endpoints),
            client_prefix=client_id,
        )
        devices = sim.stats.devices
        await wait_for(
            lambda: count(url, "SELECT count(*) FROM device_status WHERE online") == devices, 10, "devices online"
        )
        sim.close(clean=False)  # connections drop without DISCONNECT: the broker publishes each last will
        await wait_for(
            lambda: count(url, "SELECT count(*) FROM device_status WHERE NOT online") == devices, 10, "last wills"
        )
    clear_statuses(endpoints, spec, client_id)


@pytest.mark.asyncio
async def test_a_last_will_wins_over_the_online_status_its_connection_sent(
    endpoints: Endpoints, client_id: str, no_errors: None, start_gateway: GatewayFactory
) -> None:
    """docs/protocol.md: the will carries the connection's start, earlier than the `online: true` sent after it.
    Statuses follow the order they arrive in, so the device is offline; a will months old is still taken."""
    spec = seeded_spec(endpoints.database_url, 60)
    url = endpoints.database_url
    lamp, district = spec.lamp_id[0], spec.lamp_district[0]
    topic = f"sl/{district}/lamp/{lamp}/status"
    mine = f"SELECT count(*) FROM device_status WHERE device_type = 'lamp' AND device_id = '{lamp}' AND "
    online, offline = mine + "online", mine + "NOT online"
    now = Clock().now_ms()
    pub = RawPublisher(endpoints.as_("lamplighter-headend"), client_id + "-will")
    try:
        async with start_gateway():
            pub.publish(topic, json.dumps({"online": True, "ts": now}).encode())
            await wait_for(lambda: count(url, online) == 1, 10, "the device online")
            pub.publish(topic, json.dumps({"online": False, "ts": now - 60_000}).encode())
            await wait_for(lambda: count(url, offline) == 1, 10, "the will taken")
            pub.publish(topic, json.dumps({"online": True, "ts": now + 1}).encode())
            await wait_for(lambda: count(url, online) == 1, 10, "the device online again")
            pub.publish(topic, json.dumps({"online": False, "ts": now - 200 * 86_400_000}).encode())
            await wait_for(lambda: count(url, offline) == 1, 10, "the old will taken")
    finally:
        pub.close()


@pytest.mark.asyncio
async def test_devices_seeded_while_the_gateway_runs_are_accepted(
    endpoints: Endpoints, client_id: str, no_errors: None, start_gateway: GatewayFactory
) -> None:
    url = endpoints.database_url
    seed(url, 300)
    async with start_gateway(inventory_check_s=0.2) as gw:
        assert len(gw.gateway.registry.lamps) == 300
        with psycopg.connect(endpoints.schema_url, autocommit=True) as conn:  # a replace is the owner's work
            load_city(conn, generate(600, seed=7), replace=True)
        await wait_for(lambda: len(gw.gateway.registry.lamps) == 600, 10, "the registry reload")
        ids = lamp_ids(url, 600)
        await asyncio.to_thread(publish_readings, endpoints, ids, 600, client_id + "-pub")
        await wait_for(lambda: count(url, "SELECT count(*) FROM lamp_readings") == 600, 20, "readings of every lamp")
    assert count(url, "SELECT count(*) FROM quarantine") == 0


@pytest.mark.asyncio
async def test_batches_in_flight_together_keep_arrival_order(
    endpoints: Endpoints, client_id: str, no_errors: None
) -> None:
    """Batches of 25 messages, two in flight at once: readings land once, every lamp's latest state is its last
    report, and each device's status is the last one it sent (statuses follow arrival, not `ts`)."""
    spec = seeded_spec(endpoints.database_url, 200)
    url = endpoints.database_url
    lamps = list(zip(spec.lamp_id, spec.lamp_district, strict=True))
    now = Clock().now_ms()
    messages: list[tuple[bytes, bytes]] = []
    rounds = 10
    for r in range(rounds):
        for i, (lamp, district) in enumerate(lamps):
            report = {"ts": now + r * 1000, "seq": r, "on": True, "dim": 100, "faults": []}
            messages.append((f"sl/{district}/lamp/{lamp}/state".encode(), json.dumps(report).encode()))
            if i < 50:  # ts going backwards on purpose: only the arrival order may decide
                status = {"online": (r + i) % 2 == 0, "ts": now - r * 1000}
                messages.append((f"sl/{district}/lamp/{lamp}/status".encode(), json.dumps(status).encode()))
    settings = Settings(
        database_url=url, mqtt_url=endpoints.mqtt_url, gateway_client_id=client_id, flush_interval_s=0.02, batch_max=25
    )
    proc = GatewayProcess.start(settings, endpoints)
    task = asyncio.create_task(proc.run())
    pub = RawPublisher(endpoints.as_("lamplighter-headend"), client_id + "-pipe")
    try:
        await asyncio.wait_for(proc.subscriber.connected.wait(), 10)
        sent = time.time()
        await asyncio.to_thread(pub.publish_batch, messages)
        await wait_for(lambda: count(url, "SELECT count(*) FROM lamp_readings") >= rounds * len(lamps), 30, "readings")
        await wait_for(lambda: proc.gateway.stats.statuses == rounds * 50, 10, "statuses")
        last_commit = proc.metrics.registry.get_sample_value("lamplighter_gateway_last_commit_timestamp_seconds")
        assert last_commit is not None and sent < last_commit <= time.time()
    finally:
        pub.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert proc.gateway.stats.most_in_flight == 2, "the batches never overlapped: nothing was tested"
    assert count(url, "SELECT count(*) FROM lamp_readings") == rounds * len(lamps)
    assert count(url, f"SELECT count(*) FROM lamp_latest WHERE seq = {rounds - 1}") == len(lamps)
    with psycopg.connect(url) as conn:
        status = dict(conn.execute("SELECT device_id, online FROM device_status WHERE device_type = 'lamp'").fetchall())
    assert status == {lamp: (rounds - 1 + i) % 2 == 0 for i, (lamp, _) in enumerate(lamps[:50])}

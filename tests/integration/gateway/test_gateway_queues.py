"""QoS 0 messages have no flow control: while ingest is held up they wait in a bounded queue, the oldest
dropped and counted, and what is kept is stored once ingest moves again. QoS 1 messages are never dropped
(the broker holds them back instead)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import psycopg
import pytest

from gateway.service import Gateway
from inventory.registry import load_registry
from kernel.database import Database
from telemetry.store import TelemetryStore
from tests.support.gateway import count, seed, wait_for

pytestmark = pytest.mark.services


@pytest.mark.asyncio
async def test_qos0_waits_in_a_bounded_queue_while_ingest_is_held_up(database_url: str) -> None:
    seed(database_url, 50)
    with psycopg.connect(database_url) as conn:
        registry = load_registry(conn)
        lamp, district = conn.execute("SELECT id, district FROM lamps ORDER BY no LIMIT 1").fetchone() or ("", "")
    store = TelemetryStore(Database(database_url))
    gw = Gateway(
        registry=registry, write=store.write, ack=lambda tokens: len(tokens), qos0_max=100, flush_interval_s=0.05
    )
    task = asyncio.create_task(gw.run())
    now = int(time.time() * 1000)

    def report(seq: int) -> bytes:
        return json.dumps({"ts": now + seq, "seq": seq, "on": True, "dim": 100, "faults": []}).encode()

    topic = f"sl/{district}/lamp/{lamp}/state"
    try:
        with psycopg.connect(database_url) as locker:
            locker.execute("LOCK TABLE lamp_readings IN ACCESS EXCLUSIVE MODE")  # a long migration, say
            gw.on_message(topic, report(0), 0, None)
            await wait_for(lambda: gw.oldest_uncommitted_s() > 0.3, 5, "the first batch to be held up")
            for seq in range(1, 501):
                gw.on_message(topic, report(seq), 0, None)
            assert gw.qos0_dropped == 400  # 500 arrived behind the held batch; the newest 100 are kept
            locker.rollback()
        await wait_for(lambda: count(database_url, "SELECT count(*) FROM lamp_readings") == 101, 10, "101 readings")
        kept = count(database_url, "SELECT min(seq) FROM lamp_readings WHERE seq > 0")
        assert kept == 401  # the oldest went first
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.close()

"""The gateway's MQTT subscriber reads the broker's stream in large pieces when it is busy, and still hands on a
lone message at once when it is quiet."""

from __future__ import annotations

import asyncio
import contextlib
import time

import mqtt5
import pytest

from gateway.mqtt import AckToken, MqttSubscriber
from lamplighter.runtime import Endpoints
from simulator.wire import RawPublisher
from tests.support.services import forget_sessions

pytestmark = pytest.mark.services


@pytest.mark.asyncio
async def test_a_burst_arrives_in_large_reads_and_a_lone_message_without_delay(
    endpoints: Endpoints, client_id: str
) -> None:
    district = client_id[-6:]  # a district no inventory has: only this test's messages on these topics
    topic = f"sl/{district}/lamp/+/state"
    reads: list[int] = []  # messages handed on per socket read
    arrived: dict[bytes, float] = {}
    progress = asyncio.Event()  # set on every read

    def on_packets(packets: list[mqtt5.PublishPacket], source: MqttSubscriber) -> None:
        now = time.monotonic()
        reads.append(len(packets))
        for p in packets:
            arrived[p.payload] = now
        progress.set()
        source.ack([AckToken(source.generation, p.packet_id, source) for p in packets if p.packet_id is not None])

    sub = MqttSubscriber(
        broker=endpoints.as_("lamplighter-ingest"),
        client_id=f"{client_id}-sub",
        on_message=lambda *_: None,
        on_packets=on_packets,
        topics=[topic],
    )
    task = asyncio.create_task(sub.run())
    pub = RawPublisher(endpoints.as_("lamplighter-headend"), f"{client_id}-pub")
    try:
        await asyncio.wait_for(sub.connected.wait(), 10)
        await asyncio.sleep(0.2)  # the subscription is in place once connected; let the SUBACK settle

        # Quiet: one message at a time, each handed on within a few milliseconds of its sending.
        lags = []
        for i in range(20):
            key = b"lone-%d" % i
            sent = time.monotonic()
            await asyncio.to_thread(pub.publish, f"sl/{district}/lamp/L{i}/state", key)
            async with asyncio.timeout(2):
                while key not in arrived:
                    progress.clear()
                    await progress.wait()
            lags.append(arrived[key] - sent)
            await asyncio.sleep(0.02)
        lags.sort()
        assert lags[len(lags) // 2] < 0.02, f"a lone message waited {lags} s"

        # Busy: 20,000 messages sent as fast as the socket takes them.
        reads.clear()
        n = 20_000
        messages = [(f"sl/{district}/lamp/L{i % 500}/state".encode(), b"burst-%d" % i) for i in range(n)]
        await asyncio.to_thread(pub.publish_batch, messages)
        async with asyncio.timeout(30):
            while sum(reads) < n:
                progress.clear()
                await progress.wait()
        assert sum(reads) == n
        # Handed on as they trickled in, these came 5-10 to a read; gathered, at least tens.
        assert n / len(reads) >= 20, f"{len(reads)} reads for {n} messages"
    finally:
        pub.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        forget_sessions(endpoints.as_("lamplighter-api"), f"{client_id}-sub")

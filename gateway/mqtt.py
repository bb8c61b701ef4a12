"""The gateway's MQTT 5 subscriber: an asyncio protocol over the `mqtt5` sans-IO codec, with manual acks.

Why not paho-mqtt or aiomqtt here: paho reads each packet with several one-byte `recv` calls and runs Python
bookkeeping per message; on this project's reference machine its receive loop alone topped out near 36,000
messages/s with an empty handler, which leaves too little of a core for decoding and COPY at the 25,000 msg/s
ingest goal. Parsing whole socket reads with `mqtt5` (Rust) reached over 75,000 msg/s in the same run, bounded by
the publisher. The outbound link (gateway.command_link: commands and their acks, the retained rate, crews'
ticket notifications) rides on the same protocol, so the gateway process has one MQTT stack.

QoS 1 messages are not acknowledged on receipt: the caller acks them (`ack`) once their batch is committed. The
session is persistent (clean start off, session expiry), so after a crash or a lost connection the broker
redelivers everything not acked; acks for messages received on a previous connection are dropped, because their
packet ids mean nothing on the new one.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import mqtt5

from fieldnet.broker import Broker
from kernel.backoff import Backoff
from kernel.errors import Problem
from protocol.topics import REPORT_FILTERS

__all__ = ["AckToken", "MqttError", "MqttSubscriber", "OnPackets"]

logger = logging.getLogger(__name__)


class GatewayError(Problem):
    """The base of the gateway's errors."""


class MqttError(GatewayError, ConnectionError):
    """The broker refused us or the connection broke; `MqttSubscriber.run` retries by itself."""

    kind = "unavailable"


@dataclass(slots=True, eq=False)  # one per message: not frozen, which would make its __init__ three times dearer
class AckToken:
    """What it takes to acknowledge one message: the connection it came on and its packet id."""

    generation: int
    packet_id: int
    source: MqttSubscriber | None = None  # which connection, when a process has several (one per district)


OnMessage = Callable[[str, bytes, int, "AckToken | None"], None]
# Every PUBLISH of one socket read at once, with the connection they came on (for their acknowledgement tokens):
# one call instead of one per message, and no object made per message but the caller's own.
OnPackets = Callable[[list[mqtt5.PublishPacket], "MqttSubscriber"], None]


MQTT_MAX_PACKET = 268_435_455 + 5  # the largest remaining length MQTT can encode, and its fixed header


def publish_size(topic: str, payload: bytes) -> int:
    """The size of a QoS 1 PUBLISH of ours, at most: fixed header (up to 5 bytes), topic (2 + its UTF-8), packet
    id (2), properties (1: none), payload."""
    return 5 + 2 + len(topic.encode()) + 2 + 1 + len(payload)


# A read smaller than this means the broker's stream is not backed up: reading stops for _READ_PAUSE_S so that
# the next read finds more. Reading each packet the moment it arrives cost a wake-up, a recv and a callback for
# every 5-10 messages (median read 1,155 bytes under bench ingest, strace), about a tenth of the gateway's CPU.
_SMALL_READ = 64 * 1024
_READ_PAUSE_S = 0.002


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: MqttSubscriber) -> None:
        self.owner = owner
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.connack: asyncio.Future[mqtt5.ConnAckPacket] = asyncio.get_running_loop().create_future()
        self.suback: asyncio.Future[mqtt5.SubAckPacket] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        view = memoryview(self.buf)
        offset = 0
        owner = self.owner
        publishes: list[mqtt5.PublishPacket] = []
        try:
            while offset < len(view):
                try:
                    packet, used = mqtt5.read(view[offset:])
                except IndexError:  # incomplete packet: wait for more bytes
                    break
                offset += used
                if type(packet) is mqtt5.PublishPacket:
                    publishes.append(packet)
                elif isinstance(packet, mqtt5.ConnAckPacket):
                    self.connack.set_result(packet)
                elif isinstance(packet, mqtt5.PubAckPacket):
                    if owner.on_puback is not None:
                        owner.on_puback(packet.packet_id)
                elif isinstance(packet, mqtt5.SubAckPacket):
                    self.suback.set_result(packet)
                elif isinstance(packet, mqtt5.DisconnectPacket):
                    logger.warning("broker %s disconnected us: %s", owner.address, packet.reason_code)
        except ValueError as exc:
            logger.error("broker %s sent a malformed packet (%s); reconnecting", owner.address, exc)
            if self.transport:
                self.transport.close()
        finally:
            view.release()
        del self.buf[:offset]
        if publishes:
            owner._deliver(publishes)
        transport = self.transport
        if len(data) < _SMALL_READ and transport is not None and not transport.is_closing():
            transport.pause_reading()
            asyncio.get_running_loop().call_later(_READ_PAUSE_S, self._resume)

    def _resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)
        for fut in (self.connack, self.suback):
            if not fut.done():
                fut.set_exception(MqttError(f"connection to {self.owner.address} lost: {exc}"))


class MqttSubscriber:
    """Subscribes to the device topics and hands every message to `on_message(topic, payload, qos, token)`."""

    def __init__(
        self,
        *,
        broker: Broker,
        client_id: str,
        on_message: OnMessage,
        topics: Sequence[str] = REPORT_FILTERS,
        receive_maximum: int = 65535,
        session_expiry_s: int = 7 * 24 * 3600,
        keepalive_s: int = 30,
        on_puback: Callable[[int], None] | None = None,
        on_packets: OnPackets | None = None,
    ) -> None:
        if not 1 <= receive_maximum <= 65535:
            raise GatewayError(f"receive_maximum must be 1..65535, got {receive_maximum}")
        self.broker, self.client_id = broker, client_id
        self.address = str(broker)  # never the password
        self.topics = tuple(topics)
        self.receive_maximum = receive_maximum
        self.session_expiry_s = session_expiry_s
        self.keepalive_s = keepalive_s
        self._on_message = on_message
        self._on_packets = on_packets  # when given, it takes each read's messages instead of `on_message`
        self._proto: _Protocol | None = None
        self.generation = 0
        self.on_puback = on_puback  # the broker acknowledged a QoS 1 PUBLISH of ours (its packet id)
        self.broker_receive_max = 65535  # QoS 1 PUBLISHes of ours the broker takes unacknowledged (CONNACK)
        # The largest packet the broker takes (CONNACK's Maximum Packet Size; MQTT's own limit when it says
        # nothing): a larger PUBLISH would make it drop the connection, and everything in flight with it.
        self.broker_max_packet = MQTT_MAX_PACKET
        self.connected = asyncio.Event()
        self.received = 0

    def _deliver(self, packets: list[mqtt5.PublishPacket]) -> None:
        self.received += len(packets)
        if self._on_packets is not None:
            self._on_packets(packets, self)
            return
        for p in packets:
            qos = int(p.qos)
            token = AckToken(self.generation, p.packet_id, self) if qos and p.packet_id is not None else None
            self._on_message(p.topic, p.payload, qos, token)

    def write(self, data: bytes) -> bool:
        """Send packets already encoded (for example QoS 1 PUBLISHes); False when not connected."""
        proto = self._proto
        if proto is None or proto.transport is None or proto.transport.is_closing() or not self.connected.is_set():
            return False
        proto.transport.write(data)
        return True

    def ack(self, tokens: Sequence[AckToken]) -> int:
        """Send PUBACKs for messages of the current connection; returns how many were sent."""
        proto = self._proto
        if proto is None or proto.transport is None or proto.transport.is_closing():
            return 0
        gen = self.generation
        # A PUBACK with reason "success" and no properties is the same 4 bytes in MQTT 3.1.1 and 5.
        out = b"".join(b"\x40\x02" + struct.pack("!H", t.packet_id) for t in tokens if t.generation == gen)
        if out:
            proto.transport.write(out)
        return len(out) // 4

    async def _connect_once(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            _, proto = await loop.create_connection(
                lambda: _Protocol(self),
                self.broker.host,
                self.broker.port,
                ssl=self.broker.ssl_context(),
                server_hostname=self.broker.host if self.broker.tls else None,
            )
        except OSError as exc:
            raise MqttError(f"cannot reach broker {self.address}: {exc}") from exc
        assert proto.transport is not None
        proto.transport.write(
            mqtt5.ConnectPacket(
                self.client_id,
                clean_start=False,
                session_expiry_interval=self.session_expiry_s,
                keep_alive=self.keepalive_s,
                receive_max=self.receive_maximum,
                username=self.broker.username,
                password=self.broker.password_bytes,
            ).write()
        )
        # asyncio.timeout rather than wait_for, here and below: on Python 3.11 wait_for can swallow a cancel that
        # arrives as its future completes, and `run` would then go on for ever.
        async with asyncio.timeout(10):
            connack = await proto.connack
        if connack.reason_code != mqtt5.ConnAckReasonCode.SUCCESS:
            proto.transport.close()
            raise MqttError(f"broker {self.address} refused client {self.client_id!r}: {connack.reason_code}")
        self.broker_receive_max = connack.receive_max or 65535
        self.broker_max_packet = connack.max_packet_size or MQTT_MAX_PACKET
        self.generation += 1
        self._proto = proto
        if self.topics:  # a publish-only link subscribes to nothing
            proto.transport.write(
                mqtt5.SubscribePacket(
                    1, [mqtt5.TopicFilter(t, max_qos=mqtt5.QoS.AT_LEAST_ONCE) for t in self.topics]
                ).write()
            )
            async with asyncio.timeout(10):
                suback = await proto.suback
            bad = [c for c in suback.reason_codes if int(c.value) >= 0x80]
            if bad:
                raise MqttError(f"broker {self.address} refused subscriptions {self.topics}: {bad}")
        logger.info(
            "connected to broker %s as %r (session present: %s) with %d topic filters",
            self.address,
            self.client_id,
            connack.session_present,
            len(self.topics),
        )
        return proto

    async def run(self) -> None:
        """Stay connected until cancelled, reconnecting with backoff: from about 0.5 s doubling to 30 s, ±50 % so
        a fleet of gateways restarting together does not hammer the broker in step, and starting over once a
        connection stayed up a minute."""
        backoff = Backoff(0.5, 30.0, jitter=0.5)
        while True:
            try:
                proto = await self._connect_once()
                backoff.up()
                self.connected.set()
                pinger = asyncio.create_task(self._ping(proto), name="mqtt-ping")
                try:
                    exc = await proto.closed
                finally:
                    pinger.cancel()
                    self.connected.clear()
                logger.warning("connection to broker %s lost (%s); reconnecting", self.address, exc or "closed")
            except (MqttError, TimeoutError) as exc:
                logger.warning("broker %s: %s; retrying", self.address, exc)
            except asyncio.CancelledError:
                await self.close()
                raise
            await backoff.sleep()

    async def _ping(self, proto: _Protocol) -> None:
        while True:
            await asyncio.sleep(self.keepalive_s / 2)
            if proto.transport is not None and not proto.transport.is_closing():
                proto.transport.write(b"\xc0\x00")  # PINGREQ

    async def close(self) -> None:
        """Disconnect cleanly; the session (and its unacked messages) stays on the broker."""
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None and not proto.transport.is_closing():
            proto.transport.write(b"\xe0\x00")  # DISCONNECT, normal
            proto.transport.close()


async def broker_ping(broker: Broker, *, timeout: float = 2.0) -> None:
    """Connect, wait for CONNACK, disconnect; raises MqttError when the broker does not accept us."""
    import uuid

    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                broker.host,
                broker.port,
                ssl=broker.ssl_context(),
                server_hostname=broker.host if broker.tls else None,
            )
    except (OSError, TimeoutError) as exc:
        raise MqttError(f"cannot reach broker {broker}: {exc}") from exc
    try:
        writer.write(
            mqtt5.ConnectPacket(
                f"lamplighter-health-{uuid.uuid4().hex[:8]}",
                clean_start=True,
                username=broker.username,
                password=broker.password_bytes,
            ).write()
        )
        async with asyncio.timeout(timeout):
            data = await reader.read(64)
        packet, _ = mqtt5.read(memoryview(data))
        if not isinstance(packet, mqtt5.ConnAckPacket) or packet.reason_code != mqtt5.ConnAckReasonCode.SUCCESS:
            code = getattr(packet, "reason_code", packet)
            raise MqttError(f"broker {broker} did not accept a connection: {code}")
        writer.write(b"\xe0\x00")
    except (OSError, TimeoutError, IndexError, ValueError) as exc:
        raise MqttError(f"broker {broker} did not answer CONNECT: {exc!r}") from exc
    finally:
        writer.close()

"""The gateway's outbound MQTT link: device commands out and their acknowledgements in, and on the same
connection every other message the backend publishes (the city's retained lighting rate, crews' ticket
notifications). One MQTT 5 connection, one in-flight window."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence

import mqtt5

from fieldnet.broker import Broker
from gateway.mqtt import AckToken, MqttError, MqttSubscriber, publish_size
from protocol.messages import Ack, decode_ack
from protocol.topics import ACK_FILTERS

__all__ = ["Ack", "CommandLink", "PacketTooLarge", "decode_ack"]

logger = logging.getLogger(__name__)

_QOS1 = mqtt5.QoS.AT_LEAST_ONCE


class PacketTooLarge(MqttError):
    """A message larger than the broker takes: refused here, before it could cost the link its connection.
    Sending it again would fail the same way (`permanent`)."""

    permanent = True


_Out = tuple[str, str, bytes, bool, "asyncio.Future[None] | None"]


class CommandLink:
    """Publishes commands and collects acknowledgements over one MQTT 5 connection, reconnecting on its own.

    Built on the same `mqtt5` codec and asyncio protocol as the ingest (gateway.mqtt), not on aiomqtt: profiled
    during a whole-city campaign, paho's per-message bookkeeping for publishing, PUBACKs and received
    acknowledgements took about 60 % of the gateway's event loop. Commands go out as QoS 1 PUBLISHes written
    straight to the socket, never more unacknowledged by the broker than the Receive Maximum its CONNACK
    announced (Mosquitto's `max_inflight_messages`; 65,535 when it says nothing) and never reusing a packet id
    still in flight: what the window has no room for waits in a short backlog (`room()` says how much more it
    takes) and goes as the broker's PUBACKs come. The device's own acknowledgement is what counts; a command lost
    with a connection is sent again after the acknowledgement timeout.
    """

    def __init__(
        self,
        broker: Broker,
        client_id: str,
        *,
        max_acks: int = 200_000,
        backlog: int = 200,
        acks: bool = True,
    ) -> None:
        self.broker, self.client_id = broker, client_id
        # Answers wait here for the engine's next tick; past `max_acks` the oldest go (counted), so a flood of
        # answers costs bounded memory and never blocks the connection. A lost answer is covered by the retry.
        self.acks: collections.deque[tuple[str, bytes]] = collections.deque(maxlen=max_acks)
        self.acks_dropped = 0
        self.received = 0  # acknowledgements received, all connections
        self.backlog_max = backlog
        self.most_in_flight = 0  # the most PUBLISHes the broker had unacknowledged at once (for tests)
        self._packet_id = 0
        self._in_flight: set[int] = set()
        # (campaign, topic, body, retain, the future of a `send`)
        self._backlog: collections.deque[_Out] = collections.deque()
        self._waiting: dict[int, asyncio.Future[None]] = {}  # packet id → a `send` waiting for its PUBACK
        self._generation = 0
        self._sub = MqttSubscriber(
            broker=broker,
            client_id=client_id,
            on_message=self._on_ack,
            topics=ACK_FILTERS if acks else (),
            session_expiry_s=7 * 24 * 3600 if acks else 0,  # only the acks need a session that outlives us
            on_puback=self._on_puback,
        )

    def _on_ack(self, topic: str, payload: bytes, qos: int, token: AckToken | None) -> None:
        if len(self.acks) == self.acks.maxlen:
            self.acks_dropped += 1
        self.acks.append((topic, payload))
        self.received += 1
        if token is not None:  # taken in memory at once; a lost answer is covered by the retry
            self._sub.ack([token])

    def _on_puback(self, packet_id: int) -> None:
        self._in_flight.discard(packet_id)
        if (fut := self._waiting.pop(packet_id, None)) is not None and not fut.done():
            fut.set_result(None)
        if self._backlog:
            self._flush()

    async def run(self) -> None:
        logger.info("command link connecting to %s", self.broker)
        await self._sub.run()

    def ready(self) -> bool:
        return self._sub.connected.is_set()

    async def wait_ready(self) -> None:
        await self._sub.connected.wait()

    async def close(self) -> None:
        """Disconnect (the session stays on the broker for whoever runs the command engine next)."""
        await self._sub.close()

    def connections(self) -> int:
        return self._sub.generation

    def max_packet(self) -> int:
        """The largest message the broker takes on this link (its CONNACK said so)."""
        return self._sub.broker_max_packet

    def room(self) -> int:
        """How many more commands `publish` takes now: the broker's free window and the backlog's room."""
        self._check_connection()
        free = max(0, self._sub.broker_receive_max - len(self._in_flight))
        return free + max(0, self.backlog_max - len(self._backlog))

    def publish(self, messages: Sequence[tuple[str, bytes]], campaign: str = "") -> int:
        """Send these commands, or keep them in the backlog until the window has room; returns how many were
        taken (0 when not connected)."""
        if not messages or not self._sub.connected.is_set():
            return 0
        self._check_connection()
        limit = self.max_packet()
        for topic, payload in messages:
            if publish_size(topic, payload) > limit:  # never sent: the device's timeout marks it failed
                logger.error("command on %s not sent: %d bytes, the broker takes %d", topic[:200], len(payload), limit)
                continue
            self._backlog.append((campaign, topic, payload, False, None))
        self._flush()
        return len(messages)

    def send(self, topic: str, payload: bytes, *, retain: bool = False) -> asyncio.Future[None]:
        """One QoS 1 PUBLISH beside the commands, in the same window: done when the broker acknowledges it,
        failed with MqttError when the link is down or its connection goes first (the caller retries)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self._sub.connected.is_set():
            fut.set_exception(MqttError(f"not connected to the broker {self._sub.address}"))
            return fut
        if (size := publish_size(topic, payload)) > self.max_packet():
            fut.set_exception(
                PacketTooLarge(
                    f"a {size:,}-byte message on {topic[:200]} exceeds the {self.max_packet():,} bytes "
                    f"the broker {self._sub.address} takes"
                )
            )
            return fut
        self._check_connection()
        self._backlog.append(("", topic, payload, retain, fut))
        self._flush()
        return fut

    def drop(self, campaign: str) -> int:
        """A cancelled campaign: what of it still waits in the backlog never leaves."""
        before = len(self._backlog)
        self._backlog = collections.deque(m for m in self._backlog if m[0] != campaign)
        return before - len(self._backlog)

    def _check_connection(self) -> None:
        if self._sub.generation != self._generation:  # a new connection: nothing of ours is in flight on it
            self._generation = self._sub.generation
            self._in_flight.clear()
            self._fail_waiting("the connection to the broker was lost before it acknowledged")

    def _fail_waiting(self, why: str) -> None:
        waiting, self._waiting = self._waiting, {}
        for fut in waiting.values():
            if not fut.done():
                fut.set_exception(MqttError(why))

    def _flush(self) -> None:
        window = self._sub.broker_receive_max
        out = []
        while self._backlog and len(self._in_flight) < window:
            _, topic, payload, retain, fut = self._backlog.popleft()
            pid = self._packet_id
            while True:  # the next packet id not still in flight
                pid = pid % 65535 + 1
                if pid not in self._in_flight:
                    break
            self._packet_id = pid
            self._in_flight.add(pid)
            if fut is not None:
                self._waiting[pid] = fut
            out.append(mqtt5.PublishPacket(topic, payload, qos=_QOS1, retain=retain, packet_id=pid).write())
        if out and not self._sub.write(b"".join(out)):
            # The connection went: commands are sent again after the acknowledgement timeout, `send`s fail.
            for *_, fut in self._backlog:
                if fut is not None and not fut.done():
                    fut.set_exception(MqttError("the connection to the broker was lost"))
            self._backlog.clear()
            self._fail_waiting("the connection to the broker was lost")
        self.most_in_flight = max(self.most_in_flight, len(self._in_flight))

"""The MQTT side of remote control: device commands out, acknowledgements in, over one MQTT 5 connection."""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence
from typing import Annotated

import mqtt5
import msgspec
from msgspec import Meta

from gateway.codec import BIGINT_MAX, FUTURE_TOLERANCE_MS, MAX_DEPTH, clean_text, nesting_depth
from gateway.mqtt import AckToken, MqttSubscriber

__all__ = ["Ack", "CommandLink", "decode_ack"]

logger = logging.getLogger(__name__)

_ACK_TOPICS = ("sl/+/lamp/+/ack", "sl/+/cabinet/+/ack")
_QOS1 = mqtt5.QoS.AT_LEAST_ONCE


class Ack(msgspec.Struct):
    id: Annotated[str, Meta(max_length=64)]
    ok: bool
    ts: Annotated[int, Meta(ge=0, le=BIGINT_MAX)]
    error: str | None = None


_ACK_MAX_BYTES = 8192  # an ack may carry a lamp state report (at most 4 KiB) besides its own fields
_ERROR_CHARS = 200


def decode_ack(payload: bytes, now_ms: int, retention_ms: int = 90 * 86_400_000) -> Ack:
    """An acknowledgement, checked as the codec checks a report (its `ts` in the same window: at most 5 minutes
    ahead of the clock, not older than the retention); raises ValueError naming what is wrong."""
    if len(payload) > _ACK_MAX_BYTES:
        raise ValueError(f"payload of {len(payload)} bytes exceeds the {_ACK_MAX_BYTES}-byte limit")
    if (depth := nesting_depth(payload)) > MAX_DEPTH:
        raise ValueError(f"arrays and objects nest {depth} deep; at most {MAX_DEPTH} are accepted")
    try:
        ack = msgspec.json.decode(payload, type=Ack)
    except (msgspec.MsgspecError, RecursionError) as exc:
        raise ValueError(str(exc)) from None
    if ack.ts > now_ms + FUTURE_TOLERANCE_MS:
        raise ValueError(f"ts {ack.ts} is {(ack.ts - now_ms) / 1000:.0f} s ahead of the gateway clock")
    if ack.ts < now_ms - retention_ms:
        raise ValueError(f"ts {ack.ts} is older than the retention window (oldest accepted {now_ms - retention_ms})")
    if ack.error is not None:
        ack.error = clean_text(ack.error, _ERROR_CHARS)  # stored with the lamp's outcome
    return ack


class CommandLink:
    """Publishes commands and collects acknowledgements over one MQTT 5 connection, reconnecting on its own.

    Built on the same `mqtt5` codec and asyncio protocol as the ingest (gateway.mqtt), not on aiomqtt: profiled
    during a whole-city campaign, paho's per-message bookkeeping for publishing, PUBACKs and received
    acknowledgements took about 60 % of the gateway's event loop. Commands go out as QoS 1 PUBLISHes written
    straight to the socket; the broker's PUBACKs are not waited for, because the device's own acknowledgement
    is what counts and a command that never arrives is sent again after the acknowledgement timeout.
    """

    def __init__(self, host: str, port: int, client_id: str, *, max_acks: int = 200_000) -> None:
        self.host, self.port, self.client_id = host, port, client_id
        # Answers wait here for the engine's next tick; past `max_acks` the oldest go (counted), so a flood of
        # answers costs bounded memory and never blocks the connection. A lost answer is covered by the retry.
        self.acks: collections.deque[tuple[str, bytes]] = collections.deque(maxlen=max_acks)
        self.acks_dropped = 0
        self.received = 0  # acknowledgements received, all connections
        self._packet_id = 0
        self._sub = MqttSubscriber(
            host=host, port=port, client_id=client_id, on_message=self._on_ack, topics=_ACK_TOPICS
        )

    def _on_ack(self, topic: str, payload: bytes, qos: int, token: AckToken | None) -> None:
        if len(self.acks) == self.acks.maxlen:
            self.acks_dropped += 1
        self.acks.append((topic, payload))
        self.received += 1
        if token is not None:  # taken in memory at once; a lost answer is covered by the retry
            self._sub.ack([token])

    async def run(self) -> None:
        logger.info("command link connecting to %s:%d", self.host, self.port)
        await self._sub.run()

    def ready(self) -> bool:
        return self._sub.connected.is_set()

    async def close(self) -> None:
        """Disconnect (the session stays on the broker for whoever runs the command engine next)."""
        await self._sub.close()

    def connections(self) -> int:
        return self._sub.generation

    def publish(self, messages: Sequence[tuple[str, bytes]]) -> int:
        """Write these commands to the broker at once; returns how many went (0 when not connected)."""
        if not messages or not self._sub.connected.is_set():
            return 0
        out = []
        for topic, payload in messages:
            self._packet_id = self._packet_id % 65535 + 1
            out.append(mqtt5.PublishPacket(topic, payload, qos=_QOS1, packet_id=self._packet_id).write())
        return len(messages) if self._sub.write(b"".join(out)) else 0

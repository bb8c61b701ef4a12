"""A minimal, fast MQTT 3.1.1 publisher for the simulator and the load generator.

General clients spend most of their time per message in Python (building each packet, a lock, a callback).
A simulator that must outrun the gateway cannot: here whole batches of pre-encoded PUBLISH packets go out in one
`sendall`, and PUBACKs are counted in bulk. It keeps the number of unacknowledged messages under a window well
below MQTT's 65,535 packet ids, so no id is ever reused while still in flight.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["PublishError", "RawPublisher", "Will", "encode_connect", "encode_publish", "encode_varint"]

# 8,192 unacknowledged messages keep a loopback pipe full at 100,000 msg/s with ~80 ms of broker latency and stay
# far from the 65,535 packet ids a connection has.
DEFAULT_WINDOW = 8192


class PublishError(ConnectionError):
    """The broker refused the connection or closed it while messages were unacknowledged."""


def encode_varint(n: int) -> bytes:
    """MQTT's variable byte integer (remaining length)."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: bytes) -> bytes:
    return struct.pack("!H", len(s)) + s


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def encode_connect(client_id: str, *, keepalive: int = 60, will: Will | None = None, clean: bool = True) -> bytes:
    flags = 0x02 if clean else 0
    payload = _str(client_id.encode())
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += _str(will.topic.encode()) + _str(will.payload)
    var = _str(b"MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    body = var + payload
    return bytes([0x10]) + encode_varint(len(body)) + body


def encode_publish(
    topic: str | bytes, payload: bytes, *, qos: int = 1, packet_id: int = 0, retain: bool = False
) -> bytes:
    t = topic.encode() if isinstance(topic, str) else topic
    body = _str(t) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return bytes([0x30 | (qos << 1) | (1 if retain else 0)]) + encode_varint(len(body)) + body


class RawPublisher:
    """One blocking MQTT 3.1.1 connection that publishes QoS 1 messages as fast as the broker acknowledges them."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        *,
        window: int = DEFAULT_WINDOW,
        will: Will | None = None,
        keepalive: int = 60,
        timeout: float = 30.0,
    ) -> None:
        if not 0 < window < 65535:
            raise ValueError(f"window must be between 1 and 65,534 unacknowledged messages, got {window}")
        self.window = window
        self.sent = 0
        self.acked = 0
        self._next_id = 1
        self._buf = b""
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.sendall(encode_connect(client_id, keepalive=keepalive, will=will))
        ack = self._recv_exact(4)
        if ack[0] != 0x20 or ack[3] != 0:
            raise PublishError(f"broker {host}:{port} refused client {client_id!r}: CONNACK return code {ack[3]}")

    def _recv_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise PublishError(
                    f"broker closed the connection with {self.sent - self.acked} messages unacknowledged"
                )
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _read_acks(self, block: bool) -> None:
        """Consume PUBACKs (4 bytes each on 3.1.1); also tolerates PINGRESP."""
        self._sock.setblocking(block)
        try:
            chunk = self._sock.recv(262144)
        except BlockingIOError:
            return
        finally:
            self._sock.setblocking(True)
        if not chunk:
            raise PublishError(f"broker closed the connection with {self.sent - self.acked} messages unacknowledged")
        buf = self._buf + chunk
        i, n = 0, len(buf)
        while n - i >= 2:
            length = buf[i + 1]
            if n - i < 2 + length:
                break
            if buf[i] == 0x40:
                self.acked += 1
            i += 2 + length
        self._buf = buf[i:]

    def publish_batch(self, messages: Sequence[tuple[bytes, bytes]], *, retain: bool = False) -> None:
        """Publish (topic, payload) pairs at QoS 1; returns once all are handed to the socket (not yet acked)."""
        head = 0x32 | (1 if retain else 0)
        i = 0
        while i < len(messages):
            room = self.window - (self.sent - self.acked)
            if room <= 0:
                self._read_acks(block=True)
                continue
            chunk = messages[i : i + room]
            parts: list[bytes] = []
            pid = self._next_id
            for topic, payload in chunk:
                body_len = 2 + len(topic) + 2 + len(payload)
                parts.append(
                    bytes([head])
                    + encode_varint(body_len)
                    + struct.pack("!H", len(topic))
                    + topic
                    + struct.pack("!H", pid)
                    + payload
                )
                pid = pid + 1 if pid < 65535 else 1
            self._next_id = pid
            self._sock.sendall(b"".join(parts))
            self.sent += len(chunk)
            i += len(chunk)
            self._read_acks(block=False)

    def send_prebuilt(self, packets: bytes, count: int) -> None:
        """Send `count` PUBLISH packets encoded beforehand with packet ids continuing from `next_id`."""
        if count > self.window:
            raise ValueError(f"a prebuilt chunk of {count} messages exceeds the window of {self.window}")
        while self.window - (self.sent - self.acked) < count:
            self._read_acks(block=True)
        self._sock.sendall(packets)
        self.sent += count
        self._next_id = (self._next_id - 1 + count) % 65535 + 1
        self._read_acks(block=False)

    @property
    def next_id(self) -> int:
        return self._next_id

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.publish_batch([(topic.encode(), payload)], retain=retain)

    def drain(self, timeout: float = 60.0) -> None:
        """Wait until the broker acknowledged every message sent."""
        deadline = time.monotonic() + timeout
        while self.acked < self.sent:
            if time.monotonic() > deadline:
                raise PublishError(f"{self.sent - self.acked} messages still unacknowledged after {timeout} s")
            self._read_acks(block=True)

    def ping(self) -> None:
        self._sock.sendall(b"\xc0\x00")

    def close(self) -> None:
        try:
            self.drain()
            self._sock.sendall(b"\xe0\x00")  # DISCONNECT: no last will
        finally:
            self._sock.close()

    def abort(self) -> None:
        """Drop the connection without DISCONNECT, so the broker publishes the last will."""
        self._sock.close()


def chunks(items: Iterable[tuple[bytes, bytes]], size: int) -> Iterable[list[tuple[bytes, bytes]]]:
    batch: list[tuple[bytes, bytes]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch

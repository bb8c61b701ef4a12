"""A minimal, fast MQTT 3.1.1 publisher for the simulator and the load generator.

General clients spend most of their time per message in Python (building each packet, a lock, a callback).
A simulator that must outrun the gateway cannot: here whole batches of pre-encoded PUBLISH packets go out in one
`sendall`, and PUBACKs are read in bulk. It keeps the number of unacknowledged messages under a window well
below MQTT's 65,535 packet ids, so no id is ever reused while still in flight, and keeps those messages until
their PUBACK, so after a lost connection `reconnect()` sends them again (QoS 1: at least once).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fieldnet.broker import Broker, Login
from telemetry.errors import Problem

__all__ = ["PublishError", "RawPublisher", "Will", "encode_connect", "encode_publish", "encode_varint"]

# 8,192 unacknowledged messages keep a loopback pipe full at 100,000 msg/s with ~80 ms of broker latency and stay
# far from the 65,535 packet ids a connection has.
DEFAULT_WINDOW = 8192


class SimulatorError(Problem):
    """The base of the simulator's errors: settings it cannot run with, a broker it cannot publish to."""


class PublishError(SimulatorError, ConnectionError):
    """The broker refused the connection or closed it while messages were unacknowledged.

    From `publish_batch`, `unsent` is how many of the batch's last messages never reached the socket; the
    others are held as unacknowledged and go again with `reconnect()`."""

    def __init__(self, message: str, *, unsent: int = 0) -> None:
        super().__init__(message, kind="unavailable")
        self.unsent = unsent


_REFUSED = {
    1: "unacceptable protocol version",
    2: "client id rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


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


def encode_connect(
    client_id: str,
    *,
    keepalive: int = 60,
    will: Will | None = None,
    clean: bool = True,
    login: Login | None = None,
) -> bytes:
    flags = 0x02 if clean else 0
    payload = _str(client_id.encode())
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += _str(will.topic.encode()) + _str(will.payload)
    if login is not None:
        flags |= 0xC0  # user name and password follow
        payload += _str(login.username.encode()) + _str(login.password.encode())
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
        broker: Broker,
        client_id: str,
        *,
        window: int = DEFAULT_WINDOW,
        will: Will | None = None,
        keepalive: int = 60,
        timeout: float = 30.0,
    ) -> None:
        if not 0 < window < 65535:
            raise SimulatorError(f"window must be between 1 and 65,534 unacknowledged messages, got {window}")
        self.window = window
        self.sent = 0
        self.acked = 0
        self.resent = 0  # messages sent again after a reconnect
        self._next_id = 1
        self._buf = b""
        self._inflight: dict[int, bytes] = {}  # packet id → PUBLISH, until its PUBACK (publish_batch only)
        self._broker = broker
        self._address = (broker.host, broker.port)
        self._connect = encode_connect(client_id, keepalive=keepalive, will=will, login=broker.login)
        self._client_id, self._timeout = client_id, timeout
        self._sock = self._open()

    def _open(self) -> socket.socket:
        sock = socket.create_connection(self._address, timeout=self._timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            ctx = self._broker.ssl_context()
            if ctx is not None:
                sock = ctx.wrap_socket(sock, server_hostname=self._broker.host)
            sock.sendall(self._connect)
            self._sock, self._buf = sock, b""
            ack = self._recv_exact(4)
        except BaseException:
            sock.close()
            raise
        if ack[0] != 0x20 or ack[3] != 0:
            sock.close()
            why = _REFUSED.get(ack[3], f"CONNACK return code {ack[3]}")
            raise PublishError(f"broker {self._broker} refused client {self._client_id!r}: {why}")
        return sock

    def reconnect(self) -> int:
        """A new connection under the same client id (and last will); every message still unacknowledged goes
        again, flagged as a duplicate. Returns how many. Raises OSError or PublishError if the broker is away."""
        with contextlib.suppress(OSError):
            self._sock.close()
        self._sock = self._open()
        again = [bytes([packet[0] | 0x08]) + packet[1:] for packet in self._inflight.values()]  # DUP
        self.acked = self.sent - len(again)  # what was counted in flight and never acknowledged
        if again:
            self._sock.sendall(b"".join(again))
            self.resent += len(again)
        return len(again)

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
        except (BlockingIOError, ssl.SSLWantReadError):
            return
        finally:
            self._sock.setblocking(True)
        if not chunk:
            raise PublishError(f"broker closed the connection with {self.sent - self.acked} messages unacknowledged")
        buf = self._buf + chunk
        i, n = 0, len(buf)
        inflight = self._inflight
        while n - i >= 2:
            length = buf[i + 1]
            if n - i < 2 + length:
                break
            if buf[i] == 0x40:
                self.acked += 1
                if inflight:
                    inflight.pop((buf[i + 2] << 8) | buf[i + 3], None)
            i += 2 + length
        self._buf = buf[i:]

    def publish_batch(self, messages: Sequence[tuple[bytes, bytes]], *, retain: bool = False) -> None:
        """Publish (topic, payload) pairs at QoS 1; returns once all are handed to the socket (not yet acked).

        Raises PublishError (with `unsent`) when the connection is lost on the way."""
        head = 0x32 | (1 if retain else 0)
        inflight = self._inflight
        i = 0
        try:
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
                    packet = (
                        bytes([head])
                        + encode_varint(body_len)
                        + struct.pack("!H", len(topic))
                        + topic
                        + struct.pack("!H", pid)
                        + payload
                    )
                    parts.append(packet)
                    inflight[pid] = packet
                    pid = pid + 1 if pid < 65535 else 1
                self._next_id = pid
                self.sent += len(chunk)
                i += len(chunk)  # from here on in flight: kept until acknowledged, sent again on reconnect
                self._sock.sendall(b"".join(parts))
                self._read_acks(block=False)
        except OSError as exc:
            unsent = len(messages) - i
            if isinstance(exc, PublishError):
                exc.unsent = unsent
                raise
            raise PublishError(f"connection to the broker lost: {exc}", unsent=unsent) from exc

    def send_prebuilt(self, packets: bytes, count: int) -> None:
        """Send `count` PUBLISH packets encoded beforehand with packet ids continuing from `next_id`."""
        if count > self.window:
            raise SimulatorError(f"a prebuilt chunk of {count} messages exceeds the window of {self.window}")
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

"""A minimal, fast MQTT 3.1.1 publisher for the simulator and the load generator.

General clients spend most of their time per message in Python (building each packet, a lock, a callback).
A simulator that must outrun the gateway cannot: here whole batches of pre-encoded PUBLISH packets go out in one
`sendall`, and PUBACKs are read in bulk. It keeps the number of unacknowledged messages under a window well
below MQTT's 65,535 packet ids, so no id is ever reused while still in flight, and keeps those messages until
their PUBACK, so after a lost connection `reconnect()` sends them again (QoS 1: at least once).

A device's connection also subscribes (`subscribe`) and takes what the broker sends it (`poll`, or whenever it
reads acknowledgements): each PUBLISH is acknowledged and handed to `on_message`.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from fieldnet.broker import Broker, Login
from kernel.errors import Problem

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
    """One blocking MQTT 3.1.1 connection, the simulator's one MQTT stack: it publishes QoS 1 messages as fast as the
    broker acknowledges them, and takes what it subscribed to (a device's commands) when polled. `clean=False` keeps
    the session at the broker, so what arrives for it while it is away waits there."""

    def __init__(
        self,
        broker: Broker,
        client_id: str,
        *,
        window: int = DEFAULT_WINDOW,
        will: Will | None = None,
        keepalive: int = 60,
        timeout: float = 30.0,
        on_message: Callable[[str, bytes], None] | None = None,
        clean: bool = True,
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
        self._connect = encode_connect(client_id, keepalive=keepalive, will=will, clean=clean, login=broker.login)
        self._client_id, self._timeout = client_id, timeout
        self.on_message = on_message
        self.received = 0  # PUBLISHes the broker sent this connection
        self._subscribing: dict[int, list[str]] = {}  # SUBSCRIBE packet id → its filters, until the SUBACK
        self._refused: list[str] = []  # filters the broker refused
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
        self._subscribing.clear()  # the caller subscribes again (a clean session has none; a kept one, no harm)
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
        """Consume what the broker sent: PUBACKs (4 bytes each on 3.1.1), SUBACKs, PUBLISHes (acknowledged, then
        handed to `on_message`); PINGRESP and anything else is skipped."""
        self._sock.setblocking(block)
        try:
            chunk = self._sock.recv(262144)
        except (BlockingIOError, ssl.SSLWantReadError):
            if not self._buf:
                return
            chunk = None  # nothing new, but what came with the CONNACK (a kept session's messages) is still to read
        finally:
            self._sock.setblocking(True)
        if chunk is not None and not chunk:
            raise PublishError(f"broker closed the connection with {self.sent - self.acked} messages unacknowledged")
        buf = self._buf + (chunk or b"")
        i, n = 0, len(buf)
        inflight = self._inflight
        incoming: list[tuple[str, bytes]] = []
        pubacks: list[bytes] = []
        while n - i >= 2:
            if buf[i] == 0x40 and buf[i + 1] == 2:  # the common case, kept fast: a PUBACK
                if n - i < 4:
                    break
                self.acked += 1
                if inflight:
                    inflight.pop((buf[i + 2] << 8) | buf[i + 3], None)
                i += 4
                continue
            length, shift, j = 0, 0, i + 1
            while j < n and j - i <= 4:
                length |= (buf[j] & 0x7F) << shift
                shift += 7
                j += 1
                if not buf[j - 1] & 0x80:
                    break
            else:
                break  # the remaining length is not all here yet
            if n - j < length:
                break
            kind = buf[i] & 0xF0
            if kind == 0x30:  # PUBLISH
                qos = (buf[i] >> 1) & 3
                tlen = (buf[j] << 8) | buf[j + 1]
                k = j + 2 + tlen
                topic = buf[j + 2 : k].decode("utf-8", "replace")
                if qos:
                    pubacks.append(b"\x40\x02" + buf[k : k + 2])
                    k += 2
                incoming.append((topic, bytes(buf[k : j + length])))
            elif kind == 0x90:  # SUBACK: one return code per filter, 0x80 a refusal
                filters = self._subscribing.pop((buf[j] << 8) | buf[j + 1], [])
                self._refused += [f for f, code in zip(filters, buf[j + 2 : j + length], strict=False) if code == 0x80]
            i = j + length
        self._buf = buf[i:]
        if pubacks:
            self._sock.sendall(b"".join(pubacks))
        self.received += len(incoming)
        if self.on_message is not None:
            for topic, payload in incoming:
                self.on_message(topic, payload)

    def subscribe(self, filters: Sequence[str]) -> None:
        """Subscribe to `filters` at QoS 1 (the SUBACK is read with the next acknowledgements; `subscribed()` waits
        for it)."""
        pid = self._next_id
        self._next_id = pid + 1 if pid < 65535 else 1
        body = struct.pack("!H", pid) + b"".join(_str(f.encode()) + b"\x01" for f in filters)
        self._subscribing[pid] = list(filters)
        self._sock.sendall(bytes([0x82]) + encode_varint(len(body)) + body)

    def subscribed(self, timeout: float = 30.0) -> None:
        """Wait until the broker granted every subscription asked for (PublishError if it refused one)."""
        deadline = time.monotonic() + timeout
        while self._subscribing:
            if time.monotonic() > deadline:
                raise PublishError(f"no SUBACK from {self._broker} for client {self._client_id!r} in {timeout} s")
            self._read_acks(block=True)
        if self._refused:
            refused, self._refused = self._refused, []
            raise PublishError(f"broker {self._broker} refused client {self._client_id!r} the subscriptions {refused}")

    def poll(self) -> None:
        """Take whatever the broker has sent (commands, acknowledgements) without waiting."""
        self._read_acks(block=False)

    @property
    def sock(self) -> socket.socket:
        """The connection's socket now (a new one after `reconnect`), for a selector."""
        return self._sock

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

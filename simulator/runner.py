"""Drive a simulated fleet against a broker: the `lamplighter simulate` loop.

When the broker goes away the devices behave as field controllers do: they keep what they could not send (up to
`held_max` reports per connection, the oldest dropped first and counted), reconnect with backoff, send again
what the broker never acknowledged, then what they kept, in order.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import numpy as np

from fieldnet.broker import Broker, Login
from kernel.backoff import backoff_delay
from kernel.clock import Clock
from protocol.topics import ack_topic, cmd_topic, device_topic, split_device_topic
from simulator.commands import DeviceCommands
from simulator.fleet import Fleet, Report
from simulator.wire import PublishError, RawPublisher, SimulatorError, Will

__all__ = ["SimStats", "Simulator"]

logger = logging.getLogger(__name__)

# Real seconds between simulation steps: short enough that switching bursts go out promptly.
_TICK_S = 0.05
# Keep idle connections alive well inside the 60 s keepalive we announce.
_PING_EVERY_S = 20.0
_RECONNECT_MIN_S, _RECONNECT_MAX_S = 0.5, 30.0
_RECONNECT_JITTER = 0.5  # ±50 %: thousands of per-device connections do not all come back in the same instant


def _retry_in(failures: int) -> float:
    return backoff_delay(failures, _RECONNECT_MIN_S, _RECONNECT_MAX_S, _RECONNECT_JITTER)


@dataclass
class SimStats:
    messages: int = 0
    lamp_readings: int = 0
    devices: int = 0
    failed_lamps: int = 0
    reconnects: int = 0
    held: int = 0  # reports kept now because their connection is down
    dropped: int = 0  # reports dropped because a connection was down too long (its buffer full)


class Simulator:
    """Publishes the fleet's due reports, over `connections` shared connections or one per device."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        broker: Broker,
        clock: Clock,
        connections: int = 2,
        per_device: bool = False,
        device_login: Callable[[str], Login] | None = None,
        client_prefix: str = "lamplighter-sim",
        commands: DeviceCommands | None = None,
        held_max: int = 1_000_000,
    ) -> None:
        if connections < 1:
            raise SimulatorError(f"connections must be at least 1, got {connections}")
        self.fleet = fleet
        self.clock = clock
        self.commands = commands
        self.broker = broker
        self.per_device = per_device
        if per_device and device_login is None:
            raise SimulatorError("one connection per device needs each device's login (the deployment's key)")
        self._device_login = device_login
        self.stats = SimStats(devices=len(fleet.single) + len(fleet.conc_cabinets))
        self._stop = threading.Event()
        self._pubs: list[RawPublisher] = []
        self._by_topic: dict[bytes, RawPublisher] = {}  # per device: its state topic → its connection
        self._by_ack: dict[bytes, RawPublisher] = {}  # per device: each ack topic it answers on → its connection
        self.held_max = held_max
        self._down: dict[int, tuple[RawPublisher, float, int]] = {}  # id → (connection, retry at, failures)
        self._held: dict[int, collections.deque[tuple[bytes, bytes]]] = {}
        # Per device: the command topics each connection reads (its own; a concentrator's also its lamps'), and
        # a selector over the connections, so the loop takes commands from those with something to read.
        self._cmd_topics: dict[int, list[str]] = {}
        self._selector = selectors.DefaultSelector()
        self._watched: dict[int, socket.socket] = {}
        if per_device:
            self._open_per_device(client_prefix)
        else:
            self._pubs = [RawPublisher(broker, f"{client_prefix}-{i}") for i in range(connections)]
        logger.info(
            "simulator: %d devices (%d single-lamp controllers, %d concentrators), %d lamps, %s to %s:%d",
            self.stats.devices,
            len(fleet.single),
            len(fleet.conc_cabinets),
            fleet.n,
            "one connection per device" if per_device else f"{connections} shared connections",
            broker.host,
            broker.port,
        )

    def _open_per_device(self, prefix: str) -> None:
        """Each device on its own connection as its own account ({district}/lamp/{id} or …/cabinet/{id})."""
        assert self._device_login is not None
        fleet, spec = self.fleet, self.fleet.spec
        state_topics = fleet.topics_single + fleet.topics_cab
        on_message = self.commands.deliver if self.commands is not None else None
        for (status_topic, _), state_topic in zip(fleet.status_topics(), state_topics, strict=True):
            now = self.clock.now_ms()
            will = Will(status_topic, msgspec.json.encode({"online": False, "ts": now}))
            parts = split_device_topic(status_topic)
            assert parts is not None
            district, kind, device, _ = parts
            stem = f"{district}/{kind}/{device}"  # the device's login: its topics' middle
            login = self._device_login(stem)
            pub = RawPublisher(
                self.broker.with_login(login), f"{prefix}-{device}", will=will, window=64, on_message=on_message
            )
            pub.publish(status_topic, msgspec.json.encode({"online": True, "ts": self.clock.now_ms()}), retain=True)
            self._pubs.append(pub)
            self._by_topic[state_topic] = pub
            self._by_ack[device_topic(district, kind, device, "ack").encode()] = pub
            self._cmd_topics[id(pub)] = [device_topic(district, kind, device, "cmd")]
        # A lamp behind a concentrator takes and answers its commands through it.
        cabinets = zip(fleet.conc_cabinets.tolist(), fleet.topics_cab, strict=True)
        cab_pub = {int(c): self._by_topic[t] for c, t in cabinets}
        for lamp in np.flatnonzero(spec.lamp_concentrator).tolist():
            via = cab_pub.get(int(spec.lamp_cabinet[lamp]))
            if via is not None:
                district, lamp_id = spec.lamp_district[lamp], spec.lamp_id[lamp]
                self._by_ack[ack_topic(district, lamp_id).encode()] = via
                self._cmd_topics[id(via)].append(cmd_topic(district, lamp_id))
        if self.commands is not None:
            # Every device subscribes, then every SUBACK is awaited: commands go out only once all can arrive.
            for pub in self._pubs:
                self._listen(pub)
            for pub in self._pubs:
                pub.subscribed()

    def _listen(self, pub: RawPublisher) -> None:
        """Subscribe `pub` (a device's connection, new or reconnected) to its commands and watch its socket."""
        old = self._watched.pop(id(pub), None)
        if old is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(old)
        pub.subscribe(self._cmd_topics[id(pub)])
        self._selector.register(pub.sock, selectors.EVENT_READ, pub)
        self._watched[id(pub)] = pub.sock

    def _take_commands(self) -> None:
        """Read the device connections that have something (commands; acknowledgements of their reports)."""
        for key, _ in self._selector.select(0):
            pub = key.data
            if id(pub) in self._down:
                continue
            try:
                pub.poll()
            except OSError as exc:
                self._lost(pub, exc, [])

    def _route(self, r: Report) -> RawPublisher:
        if self.per_device:
            return self._by_topic[r.topic]
        return self._pubs[hash(r.topic) % len(self._pubs)]

    def step(self) -> int:
        """Act on commands, send their acknowledgements and every report due now; returns messages sent."""
        now_ms = self.clock.now_ms()
        sent = 0
        if self._watched:
            self._take_commands()
        if self.commands is not None:
            acks = self.commands.process(now_ms)
            if acks:
                if self.per_device:
                    by: dict[int, tuple[RawPublisher, list[tuple[bytes, bytes]]]] = {}
                    for topic, body in acks:
                        pub = self._by_ack.get(topic)
                        if pub is not None:  # each device answers on its own connection
                            by.setdefault(id(pub), (pub, []))[1].append((topic, body))
                    for pub, msgs in by.values():
                        self._send(pub, msgs)
                else:
                    self._send(self._pubs[0], acks)
                sent += len(acks)
        reports = self.fleet.due_reports(now_ms)
        if not reports:
            return sent
        groups: dict[int, tuple[RawPublisher, list[tuple[bytes, bytes]]]] = {}
        for r in reports:
            pub = self._route(r)
            groups.setdefault(id(pub), (pub, []))[1].append((r.topic, r.payload))
            self.stats.lamp_readings += r.lamps
        for pub, msgs in groups.values():
            self._send(pub, msgs)
        self.stats.messages += len(reports)
        return sent + len(reports)

    def run(self, *, duration_s: float | None = None, on_tick: Callable[[SimStats], None] | None = None) -> None:
        """Step until `stop()` or `duration_s` real seconds have passed."""
        started = last_ping = time.monotonic()
        while not self._stop.is_set():
            self.step()
            self.stats.failed_lamps = int(np.count_nonzero(self.fleet.fault))
            if on_tick:
                on_tick(self.stats)
            now = time.monotonic()
            if duration_s is not None and now - started >= duration_s:
                break
            if self._down:
                self._revive(now)
            if now - last_ping > _PING_EVERY_S:
                for p in self._pubs:
                    if id(p) not in self._down:
                        try:
                            p.ping()
                        except OSError as exc:
                            self._lost(p, exc, [])
                last_ping = now
            self._stop.wait(_TICK_S)

    def stop(self) -> None:
        self._stop.set()

    # -- a broker that goes away ---------------------------------------------------------------------------

    def _send(self, pub: RawPublisher, msgs: list[tuple[bytes, bytes]]) -> None:
        if id(pub) in self._down:
            self._hold(pub, msgs)
            return
        try:
            pub.publish_batch(msgs)
        except OSError as exc:
            unsent = exc.unsent if isinstance(exc, PublishError) else len(msgs)
            self._lost(pub, exc, msgs[len(msgs) - unsent :] if unsent else [])

    def _lost(self, pub: RawPublisher, exc: OSError, unsent: list[tuple[bytes, bytes]]) -> None:
        self._down[id(pub)] = (pub, time.monotonic() + _retry_in(1), 1)
        self._hold(pub, unsent)
        logger.warning(
            "simulator: lost the broker %s (%s); %d reports unacknowledged and %d kept, reconnecting",
            self.broker,
            exc,
            pub.sent - pub.acked,
            len(self._held.get(id(pub), ())),
        )

    def _hold(self, pub: RawPublisher, msgs: list[tuple[bytes, bytes]]) -> None:
        held = self._held.setdefault(id(pub), collections.deque())
        held.extend(msgs)
        over = len(held) - self.held_max
        for _ in range(max(over, 0)):
            held.popleft()
        self.stats.dropped += max(over, 0)
        self.stats.held = sum(len(q) for q in self._held.values())

    def _revive(self, now: float) -> None:
        for key, (pub, retry_at, failures) in list(self._down.items()):
            if now < retry_at:
                continue
            try:
                again = pub.reconnect()
                if id(pub) in self._watched:  # a clean session: its command subscriptions are made again
                    self._listen(pub)
            except OSError as exc:
                delay = _retry_in(failures + 1)
                self._down[key] = (pub, now + delay, failures + 1)
                logger.info("simulator: broker %s still away (%s); next try in %.1f s", self.broker, exc, delay)
                continue
            del self._down[key]
            held = list(self._held.pop(key, ()))
            self.stats.reconnects += 1
            self.stats.held = sum(len(q) for q in self._held.values())
            logger.warning(
                "simulator: back on the broker %s; %d unacknowledged reports sent again, %d kept ones follow",
                self.broker,
                again,
                len(held),
            )
            if held:
                self._send(pub, held)

    def close(self, *, clean: bool = True) -> None:
        """Wait for every ack, then disconnect; per-device connections first say they go offline."""
        if self.commands is not None:
            self.commands.close()
        self._selector.close()
        if self._down:
            self._revive(float("inf"))  # one last try for what the devices kept
        if self._down:
            logger.warning(
                "simulator: the broker %s is away; %d kept and %d unacknowledged reports are lost",
                self.broker,
                self.stats.held,
                sum(p.sent - p.acked for p, _, _ in self._down.values()),
            )
        for pub in self._pubs:
            if id(pub) in self._down:
                pub.abort()
                continue
            try:
                if self.per_device and clean:
                    topic = next(t for t, p in self._by_topic.items() if p is pub)
                    status = topic.decode().rsplit("/", 1)[0] + "/status"
                    pub.publish(status, msgspec.json.encode({"online": False, "ts": self.clock.now_ms()}), retain=True)
                if clean:
                    pub.close()
                else:
                    pub.abort()
            except OSError as exc:
                logger.warning("simulator: closing a connection to %s failed: %s", self.broker, exc)

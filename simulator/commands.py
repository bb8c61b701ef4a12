"""The simulated devices' side of remote control: receive commands, act once per id, acknowledge.

Commands arrive through one subscription to every lamp's `…/cmd` topic (a persistent session, so commands sent
while the simulator restarts are not lost), or, with one connection per device, on each device's own connection
(`deliver`, from simulator.runner; the shared connection then reads only the fault-injection topic); the
simulator's loop takes them between steps (`process`). Every connection is the simulator's own MQTT client
(`simulator.wire.RawPublisher`), reconnected with the devices' backoff when the broker goes away. Each command is
acted on once per id — a repeated id is acknowledged again without acting twice — and acknowledged after a
configurable latency. A share of lamps can be made unreachable (they never answer) and a share failing (they
answer `ok: false`), so every outcome of a campaign can be produced on purpose.
"""

from __future__ import annotations

import collections
import heapq
import json
import logging
import time

import numpy as np
import numpy.typing as npt

from fieldnet.accounts import SIM_FAULTS_TOPIC
from fieldnet.broker import Broker
from kernel.backoff import backoff_delay
from protocol.messages import decode_command, encode_ack
from protocol.topics import CMD_FILTERS, ack_topic, split_device_topic
from simulator.fleet import Fleet
from simulator.wire import RawPublisher

__all__ = ["FAULTS_TOPIC", "DeviceCommands", "outcome_masks"]

# The simulator's own fault-injection topic, for demos and tests; not part of the field protocol. Payloads:
# {"fail": [lamp ids], "code"?: "lamp_failure" | "driver_failure" | "relay_failure"}, {"repair": [lamp ids]},
# {"leak": [lamp ids]}, {"cut": {"cabinet": id, "circuit": n}}, {"restore": {"cabinet": id, "circuit": n}},
# {"degrade": [lamp ids], "mode": one of simulator.degradation.MODES, "lifetime"?: the mode's units}.
FAULTS_TOPIC = SIM_FAULTS_TOPIC

logger = logging.getLogger(__name__)

_SEEN_MAX = 500_000  # command ids remembered for deduplication
_GATHER_MS = 1000
_READS_PER_STEP = 64  # socket reads (up to 256 kB each) taken per simulation step
_PING_EVERY_S = 20.0  # well inside the 60 s keepalive the connection announces
# Field controllers retry every few seconds rather than backing off to minutes: back soon after the broker.
_RECONNECT_MIN_S, _RECONNECT_MAX_S = 1.0, 5.0


def outcome_masks(
    n: int, *, unreachable: float, failing: float, seed: int
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Which of `n` lamps never answer and which refuse every command: the same for the same seed, so a test
    or a benchmark in another process knows which lamps the simulator made unreachable."""
    draw = np.random.default_rng(seed + 17).random(n)
    return draw < unreachable, (draw >= unreachable) & (draw < unreachable + failing)


class DeviceCommands:
    def __init__(
        self,
        fleet: Fleet,
        *,
        broker: Broker,
        client_id: str,
        ack_latency_s: float = 0.05,
        unreachable: float = 0.0,
        failing: float = 0.0,
        seed: int = 1,
        shared_subscription: bool = True,
    ) -> None:
        """`shared_subscription`: this client reads every lamp's commands; False when each device reads its own
        on its own connection (the simulator hands them over with `deliver`)."""
        self.fleet = fleet
        self._topics = [(CMD_FILTERS[0], 1), (FAULTS_TOPIC, 1)] if shared_subscription else [(FAULTS_TOPIC, 1)]
        self.ack_latency_s = ack_latency_s
        self.unreachable, self.failing = outcome_masks(fleet.n, unreachable=unreachable, failing=failing, seed=seed)
        self.slot_of = {lamp: i for i, lamp in enumerate(fleet.spec.lamp_id)}
        self.inbox: collections.deque[tuple[str, bytes]] = collections.deque()
        self.acks: list[tuple[float, int, str, bytes]] = []  # heap of (due, tie, topic, payload)
        self.seen: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self.received = self.acted = self.repeats = 0
        self._tie = 0
        self._filters = [f for f, _ in self._topics]
        self._broker, self._client_id = broker, client_id
        # The connection to the broker: None while it is away (then `_retry_at` and `_failures` say when to try).
        self._link: RawPublisher | None = None
        self._retry_at, self._failures, self._pinged = 0.0, 0, time.monotonic()
        self._link = self._connect()

    def _connect(self) -> RawPublisher:
        link = RawPublisher(self._broker, self._client_id, on_message=self.deliver, clean=False)
        link.subscribe(self._filters)
        return link

    def _keep_up(self) -> None:
        """Take what the broker sent; reconnect when it went away (its kept session brings what arrived since)."""
        now = time.monotonic()
        if self._link is None:
            if now < self._retry_at:
                return
            try:
                self._link = self._connect()
            except OSError as exc:
                self._failures += 1
                self._retry_at = now + backoff_delay(self._failures, _RECONNECT_MIN_S, _RECONNECT_MAX_S, 0.5)
                logger.info("simulator: the command subscription is still away (%s)", exc)
                return
            logger.warning("simulator: the command subscription is back on %s", self._broker)
            self._failures = 0
        try:
            for _ in range(_READS_PER_STEP):  # all the broker has sent by now, within reason
                before = self._link.received
                self._link.poll()
                if self._link.received == before:
                    break
            if now - self._pinged > _PING_EVERY_S:
                self._link.ping()
                self._pinged = now
        except OSError as exc:
            logger.warning("simulator: lost the command subscription (%s); reconnecting", exc)
            self._link.abort()
            self._link, self._failures = None, 1
            self._retry_at = now + backoff_delay(1, _RECONNECT_MIN_S, _RECONNECT_MAX_S, 0.5)

    def deliver(self, topic: str, payload: bytes) -> None:
        """A command a device received on its own connection."""
        self.inbox.append((topic, payload))

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the broker granted the subscriptions (a PublishError if it refused one)."""
        if self._link is not None:
            self._link.subscribed(timeout)

    def process(self, now_ms: int) -> list[tuple[bytes, bytes]]:
        """Act on the commands received so far; return the acknowledgements due now."""
        self._keep_up()
        acted: list[int] = []
        while self.inbox:
            topic, payload = self.inbox.popleft()
            if topic == FAULTS_TOPIC:
                self._inject(payload, now_ms)
                continue
            self.received += 1
            slot = self._one(topic, payload, now_ms)
            if slot is not None:
                acted.append(slot)
        # One pass for every lamp that acted, not one per command; a concentrator gathers its lamps for 1 s.
        self.fleet.report_now(acted, now_ms, gather_ms=_GATHER_MS)
        out: list[tuple[bytes, bytes]] = []
        now = time.monotonic()
        while self.acks and self.acks[0][0] <= now:
            _, _, topic, body = heapq.heappop(self.acks)
            out.append((topic.encode(), body))
        return out

    def _inject(self, payload: bytes, now_ms: int) -> None:
        """A fault injected on purpose: the lamps (or a cable) fail, leak, start to wear out, are repaired or
        restored now."""
        try:
            order = json.loads(payload)
            fleet = self.fleet
            kinds = ("fail", "repair", "leak", "degrade")
            lamps = [self.slot_of[i] for k in kinds for i in order.get(k, ()) if i in self.slot_of]
            if "fail" in order:
                fleet.fail(lamps, str(order.get("code", "lamp_failure")), now_ms)
            elif "repair" in order:
                fleet.repair(lamps, now_ms)
                fleet.leak(lamps, now_ms, on=False)
            elif "leak" in order:
                fleet.leak(lamps, now_ms)
            elif "degrade" in order:
                lifetime = order.get("lifetime")
                fleet.degrade(lamps, str(order["mode"]), now_ms, lifetime=float(lifetime) if lifetime else None)
            elif "cut" in order or "restore" in order:
                where = order.get("cut") or order["restore"]
                cabinet = fleet.spec.cabinet_id.index(where["cabinet"])
                if "cut" in order:
                    fleet.cut_cable(cabinet, int(where["circuit"]), now_ms)
                else:
                    fleet.restore_cable(cabinet, int(where["circuit"]), now_ms)
            logger.info("simulator: injected %s", order)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("simulator: fault injection %r ignored: %s", payload[:200], exc)

    def _one(self, topic: str, payload: bytes, now_ms: int) -> int | None:
        """Handle one command; returns the lamp when it acted."""
        parts = split_device_topic(topic)
        if parts is None or parts[1] != "lamp" or parts[3] != "cmd":
            return None
        district, _, lamp, _ = parts
        slot = self.slot_of.get(lamp)
        if slot is None or self.unreachable[slot]:
            return None
        try:
            cmd = decode_command(payload)
        except ValueError:
            return None  # a device ignores what it cannot read
        cid = cmd["id"]
        answer_on = ack_topic(district, lamp)
        if cid in self.seen:
            self.repeats += 1
            self._ack_later(answer_on, self.seen[cid])  # acted once already: answer again
            return None
        if int(cmd.get("expires", 0)) < now_ms:
            return None  # too late: ignored, as the protocol says
        acted = None
        if self.failing[slot]:
            error: str | None = "the lamp driver does not respond"
        else:
            error = self.fleet.command(slot, cmd, now_ms, report=False)
            self.acted += 1
            acted = slot
        body = encode_ack(cid, error is None, now_ms, error)
        self.seen[cid] = body
        if len(self.seen) > _SEEN_MAX:
            self.seen.popitem(last=False)
        self._ack_later(answer_on, body)
        return acted

    def _ack_later(self, topic: str, body: bytes) -> None:
        self._tie += 1
        heapq.heappush(self.acks, (time.monotonic() + self.ack_latency_s, self._tie, topic, body))

    def close(self) -> None:
        if self._link is not None:
            try:
                self._link.close()
            except OSError as exc:
                logger.warning("simulator: closing the command subscription failed: %s", exc)

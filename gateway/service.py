"""The ingest loop: receive → batch → decode → commit → acknowledge.

Messages collect in a pending list; a batch is cut when it reaches `max_batch` messages or when its oldest
message has waited `flush_interval_s`. Up to two batches are written at once, each on its own connection, while
the next one fills; they are acknowledged in the order they were cut. Only after the commit are
the batch's QoS 1 messages acknowledged to the broker: a crash anywhere before that makes the broker redeliver
them, and the store's (device, ts, seq) key drops what had already landed.

The broker lets at most Receive Maximum messages be unacknowledged, so ingest throughput is capped at about
`receive_maximum / (flush interval + commit time)`: 65,535 / 0.35 s ≈ 187,000 msg/s, far above what one
machine writes. When the database is down, batches are retried with backoff and, once the window is full, the
broker simply stops sending: back-pressure, nothing dropped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import mqtt5
import numpy as np

from gateway.codec import Message, decode_batch, reject
from gateway.metrics import GatewayMetrics
from gateway.mqtt import AckToken, MqttSubscriber
from inventory.registry import Registry
from kernel.backoff import Backoff
from kernel.clock import Clock
from kernel.database import refusal, refused_for_data
from telemetry.models import Batch
from telemetry.store import WriteResult

__all__ = ["Gateway", "GatewayStats"]

logger = logging.getLogger(__name__)

# Commit retry after a database error: 0.5 s doubling to 10 s. Long enough not to spin on a down database,
# short enough that ingest resumes within seconds of it coming back.
_RETRY_MIN_S = 0.5
_RETRY_MAX_S = 10.0


_Part = tuple[Batch, WriteResult, int, float]  # a committed batch, its result, its messages, its commit time


def _transient(exc: BaseException) -> bool:
    """The database is in no state to write (away, read-only, full, a privilege missing): the same batch is
    retried, nothing acknowledged. Only an error about the batch's data (a value refused, a Python-side
    conversion error) splits it to quarantine the messages at fault."""
    return not refused_for_data(exc)


def _words(exc: BaseException) -> str:
    """The error on one line, with the column it names when the database names one."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    column = getattr(getattr(exc, "diag", None), "column_name", None)
    return f"{text} (column {column})" if column and column not in text else text


@dataclass
class GatewayStats:
    """Running totals for the console line and tests (the Prometheus counters hold the same)."""

    received: int = 0
    lamps_written: int = 0
    cabinets_written: int = 0
    duplicates: int = 0
    rejected: int = 0
    statuses: int = 0
    batches: int = 0
    most_in_flight: int = 0  # batches cut and not yet handed on at the same time, at most


class Gateway:
    """Batches messages from the subscriber and writes them through `write` (the storage seam)."""

    def __init__(
        self,
        *,
        registry: Registry,
        write: Callable[[Batch], Awaitable[WriteResult]],
        ack: Callable[[Sequence[AckToken]], int],
        metrics: GatewayMetrics | None = None,
        clock: Clock | None = None,
        max_batch: int = 10_000,
        flush_interval_s: float = 0.25,
        retention_days: int = 90,
        on_committed: Callable[[Batch], None] | None = None,
        qos0_max: int = 100_000,
        pipeline: int = 2,
    ) -> None:
        self.registry = registry
        # Called with each batch once it is committed (the in-memory fleet state follows the database).
        self.on_committed = on_committed
        self._write = write
        self._ack = ack
        self.metrics = metrics or GatewayMetrics()
        self.clock = clock or Clock()
        self.max_batch = max_batch
        self.flush_interval_s = flush_interval_s
        self.retention_ms = retention_days * 86_400_000
        self.stats = GatewayStats()
        self._pending: list[Message] = []
        # QoS 0 messages have no flow control: while the database is away they would pile up without end, so
        # they wait in a bounded queue of their own, the oldest dropped (and counted) when it is full.
        self._qos0: collections.deque[Message] = collections.deque(maxlen=qos0_max)
        self.qos0_dropped = 0
        self._first_at = 0.0
        # Batches cut and not yet handed on: each one's first message's arrival (monotonic, clock ms).
        self._inflight: collections.deque[tuple[float, int]] = collections.deque()
        self.pipeline = pipeline
        self._last: asyncio.Future[None] | None = None  # the newest batch's end: the next one acknowledges after it
        self.failing_batches = 0  # write attempts failed in a row: 0 while ingest is healthy
        self.metrics.oldest_uncommitted.set_function(self.oldest_uncommitted_s)
        self.metrics.failing_batches.set_function(lambda: self.failing_batches)
        self._wake = asyncio.Event()

    def on_message(self, topic: str, payload: bytes, qos: int, token: AckToken | None) -> None:
        """Called by the subscriber for every message, in arrival order."""
        mono = time.monotonic()
        self._arrived(mono)
        message = Message(topic, payload, self.clock.now_ms(), token, mono)
        if qos:
            self._pending.append(message)
        else:
            self._queue_qos0(message)
        self._maybe_full()

    def on_packets(self, packets: list[mqtt5.PublishPacket], source: MqttSubscriber) -> None:
        """The PUBLISHes of one socket read on `source`, in arrival order; they share one arrival time. A QoS 1
        message carries its packet id (QoS 0 has none)."""
        now_ms, mono = self.clock.now_ms(), time.monotonic()
        self._arrived(mono)
        gen, pending = source.generation, self._pending
        for p in packets:
            pid = p.packet_id
            if pid is not None:
                pending.append(Message(p.topic, p.payload, now_ms, AckToken(gen, pid, source), mono))
            else:
                self._queue_qos0(Message(p.topic, p.payload, now_ms, None, mono))
        self._maybe_full()

    def _arrived(self, mono: float) -> None:
        if not self._pending and not self._qos0:
            self._first_at = mono
            self._wake.set()

    def _queue_qos0(self, message: Message) -> None:
        if len(self._qos0) == self._qos0.maxlen:
            self.qos0_dropped += 1
            self.metrics.qos0_dropped.inc()
        self._qos0.append(message)

    def _maybe_full(self) -> None:
        if len(self._pending) + len(self._qos0) >= self.max_batch:
            self._wake.set()

    async def run(self) -> None:
        """Cut and commit batches until cancelled; on cancel, commit what is pending first.

        Up to `pipeline` batches are in flight: while PostgreSQL works on one, the next is decoded and sent on a
        connection of its own. A lone gateway otherwise took turns with its database (each about half a core
        busy while the broker's queue drained). Whatever order their commits finish in, batches are
        acknowledged and handed on in the order they were cut."""
        flushing: set[asyncio.Task[None]] = set()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if not self._pending and not self._qos0:
                    continue
                wait = self._first_at + self.flush_interval_s - time.monotonic()
                if len(self._pending) + len(self._qos0) < self.max_batch and wait > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):  # not wait_for, which can lose a cancel (3.11)
                            await self._wake.wait()
                    self._wake.clear()
                while len(flushing) >= self.pipeline:
                    done, flushing = await asyncio.wait(flushing, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()  # a batch's failure ends the loop, as it did with one batch at a time
                task = asyncio.create_task(self._flush(*self._cut(), retry=True), name="ingest-batch")
                flushing.add(task)
                if self._pending or self._qos0:
                    self._wake.set()
        except asyncio.CancelledError:
            if flushing:  # the batches in flight finish (or the broker redelivers them)
                await asyncio.wait(flushing, timeout=5)
            if self._pending or self._qos0:
                try:
                    await asyncio.wait_for(self.flush(retry=False), 5)
                except Exception as exc:  # the broker redelivers whatever this did not commit
                    logger.warning("final batch of %d messages not committed on shutdown: %s", len(self._pending), exc)
            raise

    async def flush(self, *, retry: bool = True) -> None:
        """Commit the messages pending now (at most `max_batch`), then acknowledge them."""
        await self._flush(*self._cut(), retry=retry)

    def _cut(
        self,
    ) -> tuple[list[Message], tuple[float, int] | None, asyncio.Future[None] | None, asyncio.Future[None]]:
        """Take the next batch: (its messages, its place among those in flight, the end of the batch before it,
        its own end)."""
        messages = self._pending[: self.max_batch]
        self._pending = self._pending[self.max_batch :]
        while self._qos0 and len(messages) < self.max_batch:
            messages.append(self._qos0.popleft())
        if self._pending or self._qos0:
            self._first_at = time.monotonic()
        marker = (messages[0].received_mono, messages[0].received_ms) if messages else None
        if marker is not None:
            self._inflight.append(marker)
            self.stats.most_in_flight = max(self.stats.most_in_flight, len(self._inflight))
        previous, end = self._last, asyncio.get_running_loop().create_future()
        self._last = end
        return messages, marker, previous, end

    async def _flush(
        self,
        messages: list[Message],
        marker: tuple[float, int] | None,
        previous: asyncio.Future[None] | None,
        end: asyncio.Future[None],
        *,
        retry: bool,
    ) -> None:
        m = self.metrics
        m.received.inc(len(messages))
        self.stats.received += len(messages)
        try:
            try:
                parts = await self._commit(messages, self.clock.now_ms(), retry, previous)
            finally:
                if previous is not None:  # handed on in the order cut, whichever commit finished first
                    await asyncio.shield(previous)
            self._ack([msg.token for msg in messages if isinstance(msg.token, AckToken)])
            for batch, result, n, elapsed in parts:
                self._account(batch, result, n, elapsed)
                if self.on_committed is not None:
                    try:
                        self.on_committed(batch)
                    except Exception:  # a consumer's bug must not stop ingest; what is stored is stored
                        logger.exception("a consumer of committed batches failed")
        finally:  # nothing awaits between the hand-on above and here: no one sees it handed on yet in flight
            if marker is not None:
                self._inflight.remove(marker)
            if not end.done():
                end.set_result(None)
            if self._last is end:
                self._last = None

    async def _commit(
        self, messages: list[Message], now_ms: int, retry: bool, previous: asyncio.Future[None] | None = None
    ) -> list[_Part]:
        """Decode and write `messages`, retrying while the database is away. A batch it refuses for what is in
        it is halved until the messages at fault are alone; each is then quarantined with the database's words,
        and everything else is committed. Device statuses are applied in arrival order, so a batch holding any
        waits for the batch before it to end first."""
        batch = decode_batch(messages, self.registry, now_ms=now_ms, retention_ms=self.retention_ms)
        if batch.statuses and previous is not None:
            await asyncio.shield(previous)
        backoff = Backoff(_RETRY_MIN_S, _RETRY_MAX_S)
        while True:
            started = time.perf_counter()
            try:
                result = await self._write(batch)
            except Exception as exc:
                self.metrics.commit_errors.inc()
                self.failing_batches += 1
                if not _transient(exc):
                    return await self._isolate(messages, now_ms, retry, exc)
                if not retry:
                    self._pending[:0] = messages
                    raise
                delay = backoff.fail()
                logger.error(
                    "database refused a batch of %d messages, none acknowledged: %s; retrying in %.1f s",
                    len(messages),
                    refusal(exc),
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            self.failing_batches = 0
            return [(batch, result, len(messages), time.perf_counter() - started)]

    async def _isolate(self, messages: list[Message], now_ms: int, retry: bool, exc: Exception) -> list[_Part]:
        if len(messages) > 1:
            half = len(messages) // 2
            logger.warning(
                "database refused a batch of %d messages for its data (%s); splitting it", len(messages), _words(exc)
            )
            return await self._commit(messages[:half], now_ms, retry) + await self._commit(
                messages[half:], now_ms, retry
            )
        msg = messages[0]
        logger.error("database refused the message on %r: %s; quarantined", msg.topic[:256], _words(exc))
        self.metrics.db_refused.inc()
        batch = Batch(rejects=[reject(msg, "db_refused", f"the database refused it: {_words(exc)}")])
        started = time.perf_counter()
        try:
            result = await self._write(batch)
        except Exception as again:
            if _transient(again):
                if not retry:
                    self._pending[:0] = messages
                    raise
                return await self._commit(messages, now_ms, retry)
            # Not even its quarantine record is storable: acknowledged and counted, so nothing waits behind it.
            logger.error("quarantine refused the message on %r too (%s); dropped", msg.topic[:256], _words(again))
            self.metrics.dropped.inc()
            return []
        self.failing_batches = 0
        return [(batch, result, 1, time.perf_counter() - started)]

    def ingested_through_ms(self) -> int:
        """Clock time up to which every message received is committed and handed on (`on_committed`)."""
        waiting = (self._pending[0] if self._pending else None, self._qos0[0] if self._qos0 else None)
        inflight = self._inflight[0][1] if self._inflight else None
        oldest = [t for t in (inflight, *(m.received_ms for m in waiting if m)) if t]
        return min(oldest) - 1 if oldest else self.clock.now_ms()

    def oldest_uncommitted_s(self) -> float:
        """Age of the oldest message received and not yet committed (0 when nothing waits)."""
        inflight = self._inflight[0][0] if self._inflight else None
        since = [t for t in (inflight, self._first_at if self._pending or self._qos0 else None) if t]
        return max(0.0, time.monotonic() - min(since)) if since else 0.0

    def _account(self, batch: Batch, result: WriteResult, n_messages: int, elapsed: float) -> None:
        m, s = self.metrics, self.stats
        now_ms = self.clock.now_ms()
        m.last_commit.set(time.time())  # before the counts, so whoever sees them sees this time too
        m.batch_size.observe(n_messages)
        m.commit_seconds.observe(elapsed)
        m.written.labels("lamp").inc(result.lamps_written)
        m.written.labels("cabinet").inc(result.cabinets_written)
        m.duplicates.labels("lamp").inc(result.lamp_duplicates)
        m.duplicates.labels("cabinet").inc(result.cabinet_duplicates)
        m.statuses.inc(result.statuses)
        for r in batch.rejects:
            m.rejected.labels(r.reason).inc()
            logger.debug("quarantined message on %s: %s (%s)", r.topic, r.reason, r.detail)
        m.pending.set(len(self._pending))
        if len(batch.lamps):
            ts = np.asarray(batch.lamps.ts, dtype=np.int64)
            m.record_latencies((now_ms - ts).astype(np.float32))
            m.lag.set((now_ms - int(ts.max())) / 1000)
        s.batches += 1
        s.lamps_written += result.lamps_written
        s.cabinets_written += result.cabinets_written
        s.duplicates += result.lamp_duplicates + result.cabinet_duplicates
        s.rejected += len(batch.rejects)
        s.statuses += result.statuses

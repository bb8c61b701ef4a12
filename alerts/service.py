"""The fault engine's I/O: decisions become tickets, people's actions flow back to the trackers, overdue
tickets escalate. Runs in the gateway's process beside the lighting engine (one TaskGroup, named tasks)."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from alerts.engine import AlertEngine, Opening
from alerts.errors import AlertsError
from alerts.faults import CABINET_FAULTS, LAMP_FAULTS, FaultKind
from alerts.tickets import Deadlines, add_lamps, clear_fault, escalate_overdue, open_ticket, reopen
from kernel.backoff import Backoff
from kernel.clock import Clock
from kernel.database import Database
from kernel.supervise import supervise
from telemetry.fleet import LampColumns
from telemetry.models import Batch, CabinetRow
from telemetry.store import cabinet_states, device_statuses

__all__ = ["AlertService", "SavedState"]

logger = logging.getLogger(__name__)

# The cabinet tracker's names for what tickets call `cabinet_outage` (reported by the device, or derived
# from the reports of the lamps behind it).
_TICKET_FAULT = {"lamps_out": "cabinet_outage"}
_CAUSE = {"cabinet_outage": "the cabinet reports loss of supply", "lamps_out": "most due lamps dark or silent"}
_ESCALATE_EVERY_S = 30.0
# Ticket decisions stored per worker call: a stop (SIGTERM) waits for the call in progress, so an alarm storm's
# thousands of decisions go in pieces rather than in one call that keeps the process from exiting for minutes.
_WRITE_CHUNK = 200


@dataclass(frozen=True)
class SavedState:
    """The fault engine's memory as PostgreSQL holds it: live tickets, cabinets' latest reports, statuses."""

    tickets: list[Any]
    cabinets: list[Any]
    statuses: list[Any]


class AlertService:
    def __init__(
        self,
        engine: AlertEngine,
        db: Database,
        clock: Clock,
        *,
        deadlines: Deadlines | None = None,
        sweep_every_s: float = 1.0,
        judges: Callable[[str], bool] | None = None,
    ) -> None:
        self.engine = engine
        # Which districts' decisions become tickets here: those whose ingest this process holds (another
        # gateway judges the others). None: every district.
        self.judges = judges
        self.db = db
        self.clock = clock
        self.deadlines = deadlines or Deadlines()
        # A sweep each second, or each clock minute when the clock runs faster than 60×.
        self.sweep_every_s = min(sweep_every_s, 60.0 / clock.speed)
        self._queue: deque[Opening] = deque()
        self._wake = asyncio.Event()
        self._seen: dict[int, tuple[str, Any]] = {}  # ticket id → (status, updated_at) already acted on
        self._watermark: dt.datetime | None = None
        self.tickets_opened = 0

    # -- start-up ---------------------------------------------------------------------------------------------

    def load(self, conn: psycopg.Connection) -> None:
        """Live tickets and the cabinets' latest reports and statuses, so a restart picks up where it was."""
        self.apply_state(self.read_state(conn))

    def read_state(self, conn: psycopg.Connection) -> SavedState:
        """What `apply_state` needs, read from PostgreSQL (I/O only: any thread)."""
        tickets = conn.execute(
            "SELECT id, asset_type, asset_id, fault, status, updated_at, first_seen, detail FROM tickets "
            "WHERE status IN ('open', 'dispatched', 'acknowledged', 'resolved', 'reopened')"
        ).fetchall()
        # Reports of cabinets the inventory no longer has are skipped when applied.
        return SavedState(tickets, cabinet_states(conn), device_statuses(conn))

    def apply_state(self, saved: SavedState) -> None:
        """Take what `read_state` read into the fault engine (on the loop that owns it)."""
        ix = self.engine.index
        for tid, asset_type, asset_id, fault, status, updated_at, first_seen, detail in saved.tickets:
            self._seen[tid] = (status, updated_at)
            first_ms = int(first_seen.timestamp() * 1000)
            try:
                if asset_type == "lamp" and (slot := ix.slot_of_id.get(asset_id)) is not None:
                    tracker, name = self.engine.lamp_tracker, fault
                elif asset_type == "cabinet" and (slot := ix.cabinet_of.get(asset_id)) is not None:
                    tracker, name = self.engine.cabinet_tracker, (detail or {}).get("rule", fault)
                    self.engine.open_work[slot] = True
                else:
                    continue
                tracker.opened(slot, name, first_ms)
                if status == "resolved":
                    tracker.resolved(slot, name, self.clock.now_ms())
            except KeyError:  # a ticket for a fault this version no longer knows: leave it to people
                continue
        self.engine.cabinets.apply_rows(
            [
                CabinetRow(ts, no, seq, door, list(cont), None, None, None, None, list(f), 0, ts)
                for no, ts, seq, door, cont, f in saved.cabinets
            ]
        )
        for kind, device, online in saved.statuses:
            if kind == "lamp" and (slot := ix.slot_of_id.get(device)) is not None:
                self.engine.lamp_history.offline[slot] = not online
            elif kind == "cabinet" and (cab := ix.cabinet_of.get(device)) is not None:
                self.engine.cabinet_history.offline[cab] = not online
        logger.info("fault engine: %d live tickets, %d cabinet states loaded", len(saved.tickets), len(saved.cabinets))

    def restart(self, saved: SavedState) -> None:
        """Start judging afresh from what `read_state` read: after the inventory changed and the lighting engine
        was rebuilt, or after this process took districts over (on the loop that owns the engine)."""
        self.engine.reset(self.clock.now_ms())
        self._seen.clear()
        self.apply_state(saved)

    # -- inputs -----------------------------------------------------------------------------------------------

    def on_batch(self, batch: Batch, columns: LampColumns) -> None:
        """A committed batch, after the lighting engine took it (`columns`: its readings as the engine holds
        them): evaluate the fault rules for what it touched and queue the tickets they open."""
        self._enqueue(self.engine.on_batch(columns, batch.cabinets, batch.statuses, self.clock.now_ms()))

    def _enqueue(self, openings: list[Opening]) -> None:
        if self.judges is not None:
            judges = self.judges
            openings = [o for o in openings if judges(o.district)]
        if openings:
            self._queue.extend(openings)
            self._wake.set()

    # -- loops ------------------------------------------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._writer(), name="ticket-writer")
            tg.create_task(self._sweeper(), name="fault-sweep")

    async def _sweeper(self) -> None:
        every = self.sweep_every_s
        await supervise(self._sweep, what="fault engine's sweep", every_s=every, first_s=every)

    async def _sweep(self) -> None:
        try:
            changes, work = await self._changed_tickets()
            self._apply_people(changes, work)
        finally:  # silence and escalation are judged even when the tickets' changes could not be read
            self._enqueue(self.engine.sweep(self.clock.now_ms()))

    async def escalate_forever(self) -> None:
        """Overdue tickets escalate: run once city-wide (by the gateway that leads)."""
        every = min(_ESCALATE_EVERY_S, 3600.0 / self.clock.speed)
        step = functools.partial(self.db.run, lambda c: escalate_overdue(c, self.clock.now()))
        await supervise(step, what="escalation check", every_s=every, first_s=every)

    async def _writer(self) -> None:
        await supervise(self._write_queued, what="fault engine's ticket writer", backoff=Backoff())

    async def _write_queued(self) -> None:
        """Store the queued decisions in chunks, each removed from the queue once committed; a chunk that fails
        stays first in the queue for the next round."""
        if not self._queue:
            await self._wake.wait()
        self._wake.clear()
        while self._queue:
            batch = list(itertools.islice(self._queue, _WRITE_CHUNK))
            try:
                opened, work = await self.db.run(functools.partial(self._write, openings=batch))
            except psycopg.Error as exc:
                raise AlertsError(f"{len(batch)} ticket decisions not stored: {exc}", kind="unavailable") from exc
            # The engine's state changes here, on its loop, not in the worker thread that wrote.
            self.tickets_opened += opened
            for asset_type, slot in work:
                self._mark_work(asset_type, slot, True)
            for _ in batch:
                self._queue.popleft()

    # -- database work (worker threads) -----------------------------------------------------------------------

    def _write(self, conn: psycopg.Connection, openings: list[Opening]) -> tuple[int, list[tuple[str, int]]]:
        """Store the decisions; returns how many tickets were created and the assets now with open work."""
        created = 0
        work: list[tuple[str, int]] = []
        for o in openings:
            d = o.decision
            fault = _TICKET_FAULT.get(d.fault, d.fault)
            now = dt.datetime.fromtimestamp(d.ts_ms / 1000, dt.UTC)
            if d.action in ("open", "repeat"):
                kind = next(k for k in self._kinds(d.asset_type) if k.code == d.fault)
                detail: dict[str, Any] = {"rule": d.fault}
                if d.fault in _CAUSE:
                    detail["cause"] = _CAUSE[d.fault]
                change = open_ticket(
                    conn,
                    priority=d.priority,
                    fault=fault,
                    asset_type=d.asset_type,
                    asset_id=o.asset_id,
                    district=o.district,
                    source=kind.source,
                    first_seen=dt.datetime.fromtimestamp(d.first_ms / 1000, dt.UTC),
                    now=now,
                    lamps=o.lamps,
                    detail=detail,
                    deadlines=self.deadlines,
                )
                if change.created:
                    created += 1
                    logger.info(
                        "ticket %d opened: %s %s on %s %s (%s)%s",
                        change.ticket_id,
                        d.priority,
                        fault,
                        d.asset_type,
                        o.asset_id,
                        o.district,
                        f", {len(o.lamps)} lamps" if o.lamps else "",
                    )
                if d.fault != "door_open":  # the alarm itself is no work that explains an open door
                    work.append((d.asset_type, d.slot))
            elif d.action == "clear":
                change2 = clear_fault(conn, asset_type=d.asset_type, asset_id=o.asset_id, fault=fault, now=now)
                if change2 is not None:
                    logger.info(
                        "ticket %d: %s on %s %s cleared → %s",
                        change2.ticket_id,
                        fault,
                        d.asset_type,
                        o.asset_id,
                        change2.status,
                    )
            elif d.action == "lamps":
                add_lamps(conn, asset_id=o.asset_id, fault=fault, lamps=o.lamps, now=now)
            elif d.action == "reopen":
                reopen(conn, asset_type=d.asset_type, asset_id=o.asset_id, fault=fault, now=now)
        return created, work

    async def _changed_tickets(self) -> tuple[list[Any], set[str]]:
        """Tickets changed since the last look (by anyone), and the cabinets with live work."""

        def query(conn: psycopg.Connection) -> tuple[list[Any], set[str]]:
            since = self._watermark - dt.timedelta(minutes=5) if self._watermark else None
            rows = conn.execute(
                "SELECT id, asset_type, asset_id, fault, status, updated_at, detail FROM tickets "
                + ("WHERE updated_at > %s " if since else "")
                + "ORDER BY id",
                (since,) if since else (),
            ).fetchall()
            work = conn.execute(
                """SELECT asset_type, asset_id FROM tickets WHERE asset_type = 'cabinet' AND fault <> 'door_open'
                     AND status IN ('open', 'dispatched', 'acknowledged', 'resolved', 'reopened')
                   UNION SELECT asset_type, asset_id FROM tickets
                   WHERE asset_type = 'lamp' AND status IN ('open', 'dispatched', 'acknowledged', 'reopened')"""
            ).fetchall()
            # A lamp's ticket is work at its cabinet (the index knows which).
            ix = self.engine.index
            cabinets = {a for kind, a in work if kind == "cabinet"}
            for kind, lamp in work:
                if kind == "lamp" and (slot := ix.slot_of_id.get(lamp)) is not None:
                    cabinets.add(ix.cabinet_ids[int(ix.lamp_cabinet[slot])])
            return rows, cabinets

        rows, work = await self.db.run(query)
        if rows:
            newest = max(r[5] for r in rows)
            self._watermark = max(self._watermark, newest) if self._watermark else newest
        return [r for r in rows if self._seen.get(r[0]) != (r[4], r[5])], work

    def _apply_people(self, rows: list[Any], work: set[str]) -> None:
        """What people (or the engine itself, through the database) changed: resolved, cancelled, closed."""
        ix = self.engine.index
        now_ms = self.clock.now_ms()
        for tid, asset_type, asset_id, fault, status, updated_at, detail in rows:
            previous = self._seen.get(tid)
            self._seen[tid] = (status, updated_at)
            name = (detail or {}).get("rule", fault)
            if asset_type == "lamp":
                slot, tracker = ix.slot_of_id.get(asset_id), self.engine.lamp_tracker
            else:
                slot, tracker = ix.cabinet_of.get(asset_id), self.engine.cabinet_tracker
            if slot is None:
                continue
            try:
                if status == "resolved" and (previous is None or previous[0] != "resolved"):
                    tracker.resolved(slot, name, now_ms)
                elif status == "cancelled" and previous is not None and previous[0] != "cancelled":
                    tracker.forget(slot, name)
            except KeyError:
                continue
        self.engine.open_work[:] = False
        for cabinet in work:
            if (cab := ix.cabinet_of.get(cabinet)) is not None:
                self.engine.open_work[cab] = True

    def _mark_work(self, asset_type: str, slot: int, on: bool) -> None:
        if asset_type == "cabinet":
            self.engine.open_work[slot] = on
        else:
            self.engine.open_work[int(self.engine.index.lamp_cabinet[slot])] = on

    @staticmethod
    def _kinds(asset_type: str) -> tuple[FaultKind, ...]:
        return LAMP_FAULTS if asset_type == "lamp" else CABINET_FAULTS

"""The lighting engine of one process: fleet state, schedules and the rate, plus their PostgreSQL edges.

`LightingEngine` holds the arrays (`FleetIndex`, `FleetState`, `Expected`) and answers "what is the rate now"
and "what is this lamp's condition". It is fed either by the gateway's committed batches (same process) or by
polling `lamp_latest` (`follow`), and it reloads schedules when their table changes. The functions below it
read and write schedules, samples, nightly reports and operator alerts. Array work is pure and synchronous;
callers in an event loop run the database functions in a thread.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.types.json import Jsonb

from inventory.index import FleetIndex, load_index
from kernel.database import Database
from kernel.supervise import supervise
from lighting.expected import Expected, ExpectedState, ScopeKey
from lighting.rate import CONDITIONS, Breakdown, breakdown, conditions
from lighting.schedules import SCOPES, ScheduleDoc, ScheduleError, encode_doc, validate
from telemetry.fleet import FleetState, LampColumns, fetch_latest
from telemetry.models import Batch

__all__ = [
    "Changes",
    "LampView",
    "LightingEngine",
    "delete_schedule",
    "follow_forever",
    "get_schedule",
    "held_cabinets",
    "load_schedules",
    "long_outages",
    "put_schedule",
    "schedules_version",
]

logger = logging.getLogger(__name__)

_POLL_OVERLAP = dt.timedelta(seconds=10)  # a batch committed late still carries a stored_at this recent


@dataclass(frozen=True)
class Changes:
    rows: LampColumns | None
    newest: object
    version: object
    docs: dict[ScopeKey, ScheduleDoc] | None


@dataclass(frozen=True)
class LampView:
    due: bool
    level: int
    condition: str


class LightingEngine:
    """Fleet state and schedules in memory; `breakdown(ts_ms)` gives every figure of the lighting rate."""

    def __init__(self, index: FleetIndex, docs: dict[ScopeKey, ScheduleDoc]) -> None:
        self.index = index
        self.state = FleetState(index)
        self.expected = Expected(index, docs, strict=False)
        self.schedules_version: object = None
        self._since: object = None
        # Device time up to which reports have reached this engine: each batch's newest reading, taken no later
        # than the batch arrived (a device whose clock runs ahead cannot move it past the present).
        self.heard_ms = 0
        self._cache: tuple[int, Breakdown] | None = None
        self._expected_cache: tuple[int, ExpectedState] | None = None
        self._conditions: tuple[tuple[int, int, int], npt.NDArray[np.int8]] | None = None

    # -- feeding -------------------------------------------------------------------------------------------

    def on_batch(self, batch: Batch) -> LampColumns:
        """The gateway's hook: a committed batch updates the fleet state. Returns the batch's lamp columns."""
        columns = LampColumns.of(batch.lamps, self.index)
        if self.state.apply_columns(columns, now_ms=batch.now_ms):
            self._cache = None
        self._heard(columns.ts_ms, batch.now_ms)
        return columns

    def _heard(self, ts_ms: npt.NDArray[np.int64], arrived_ms: int | None) -> None:
        if len(ts_ms):
            newest = int(ts_ms.max())
            self.heard_ms = max(self.heard_ms, newest if arrived_ms is None else min(newest, arrived_ms))

    def set_schedules(self, docs: dict[ScopeKey, ScheduleDoc]) -> None:
        expected = Expected(self.index, docs, strict=False)
        for scope, key in expected.dropped:
            logger.warning("schedule for %s %r ignored: not in the inventory", scope, key)
        self.expected = expected
        self._cache = self._expected_cache = None

    def fetch(self, conn: psycopg.Connection, *, states: bool = True, districts: list[str] | None = None) -> Changes:
        """What changed in `lamp_latest` (when `states`; of `districts` only, when given) and `schedules` since
        the last call. I/O only."""
        rows, newest = None, None
        if states and (districts is None or districts):
            since = None if self._since is None else self._since - _POLL_OVERLAP  # type: ignore[operator]
            rows, newest = fetch_latest(conn, self.index, since=since, districts=districts)
        version = schedules_version(conn)
        docs = load_schedules(conn) if version != self.schedules_version else None
        return Changes(rows, newest, version, docs)

    def apply(self, changes: Changes, *, skip: Callable[[str], bool] | None = None) -> int:
        """Apply what `fetch` found (in the thread that reads the engine); returns lamps changed. `skip`: the
        districts whose lamps this engine is fed directly (a gateway's own), left as they are."""
        changed = 0
        if changes.rows is not None:
            rows = changes.rows
            if skip is not None:
                ix = self.index
                skipped = np.array([skip(d) for d in ix.districts], dtype=np.bool_)
                inside = rows.slots >= 0
                mine = np.zeros(len(rows.slots), dtype=np.bool_)
                mine[inside] = skipped[ix.lamp_district[rows.slots[inside]]]
                rows = rows.take(~mine) if mine.any() else rows
            changed = self.state.apply_columns(rows, replace=True)  # lamp_latest is what counts
            newest = changes.newest
            self._heard(rows.ts_ms, None)  # stored rows: their arrival is in database time, not the clock's
            if newest is not None and (self._since is None or newest > self._since):  # type: ignore[operator]
                self._since = newest
        if changes.docs is not None:
            self.set_schedules(changes.docs)
            self.schedules_version = changes.version
            logger.info("schedules loaded (%d scopes)", len(changes.docs))
        if changed:
            self._cache = None
        return changed

    def adopt(self, fresh: LightingEngine) -> None:
        """Swap in an engine loaded afresh (`LightingEngine.load` in a worker thread) — after the inventory
        changed, or to take over districts another process read until now; on the loop that owns this one."""
        self.index, self.state, self.expected = fresh.index, fresh.state, fresh.expected
        self.schedules_version, self._since = fresh.schedules_version, fresh._since
        self.heard_ms = max(self.heard_ms, fresh.heard_ms)
        self._cache = self._expected_cache = None

    # -- reading -------------------------------------------------------------------------------------------

    def expected_at(self, ts_ms: int) -> ExpectedState:
        if self._expected_cache is None or self._expected_cache[0] != ts_ms:
            self._expected_cache = (ts_ms, self.expected.at(ts_ms))
        return self._expected_cache[1]

    def breakdown(self, ts_ms: int) -> Breakdown:
        """Every figure at `ts_ms`; repeated calls for the same second reuse the result."""
        second = ts_ms // 1000
        if self._cache is None or self._cache[0] != second:
            self._cache = (second, breakdown(self.index, self.state, self.expected_at(ts_ms)))
        return self._cache[1]

    def conditions(self, ts_ms: int) -> npt.NDArray[np.int8]:
        """Each lamp's condition at `ts_ms` (indices into `CONDITIONS`); reused within a second while nothing
        changed. Read-only: callers must not write into it."""
        key = (ts_ms // 1000, self.state.updates, id(self.expected))
        if self._conditions is None or self._conditions[0] != key:
            self._conditions = (key, conditions(self.index, self.state, self.expected_at(ts_ms)))
        return self._conditions[1]

    def lamp(self, lamp_id: str, ts_ms: int) -> LampView | None:
        slot = self.index.slot_of_id.get(lamp_id)
        if slot is None:
            return None
        ex = self.expected_at(ts_ms)
        cond = conditions(self.index, self.state, ex)[slot]
        return LampView(bool(ex.due[slot]), int(ex.level[slot]), CONDITIONS[int(cond)])

    @classmethod
    def load(cls, conn: psycopg.Connection) -> LightingEngine:
        """Inventory, schedules and every lamp's latest state from PostgreSQL: the figures survive a restart."""
        engine = cls(load_index(conn), {})
        engine.apply(engine.fetch(conn))
        logger.info(
            "lighting engine: %d lamps, %d with a stored state, %d schedule scopes",
            engine.index.n,
            int(np.count_nonzero(engine.state.ts_ms)),
            len(engine.expected.docs),
        )
        return engine


# -- schedules in PostgreSQL ------------------------------------------------------------------------------


def held_cabinets(conn: psycopg.Connection, cabinet_ids: Sequence[str], now: dt.datetime) -> set[str]:
    """Those of `cabinet_ids` an operator's override holds at `now`."""
    return {
        str(r[0])
        for r in conn.execute(
            "SELECT key FROM schedules WHERE scope = 'cabinet' AND key = ANY(%s) "
            "AND (doc->'override'->>'until')::timestamptz > %s",
            (list(cabinet_ids), now),
        )
    }


def schedules_version(conn: psycopg.Connection) -> object:
    row = conn.execute("SELECT count(*), max(updated_at) FROM schedules").fetchone()
    return tuple(row) if row else None


def load_schedules(conn: psycopg.Connection) -> dict[ScopeKey, ScheduleDoc]:
    docs: dict[ScopeKey, ScheduleDoc] = {}
    for scope, key, doc in conn.execute("SELECT scope, key, doc FROM schedules"):
        try:
            docs[(scope, key)] = validate(msgspec.convert(doc, ScheduleDoc))
        except (msgspec.ValidationError, ScheduleError) as exc:  # stored by an older version: skip, say so
            logger.error("schedule %s/%s is unusable and ignored: %s", scope, key, exc)
    return docs


def _check_scope(conn: psycopg.Connection, scope: str, key: str) -> None:
    if scope not in SCOPES:
        raise ScheduleError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}", "scope")
    if scope == "city":
        if key != "all":
            raise ScheduleError("the city's key is 'all'", "key")
        return
    table, column = {
        "district": ("districts", "code"),
        "road": ("roads", "id::text"),
        "cabinet": ("cabinets", "id"),
        "lamp": ("lamps", "id"),
    }[scope]
    if conn.execute(f"SELECT 1 FROM {table} WHERE {column} = %s", (key,)).fetchone() is None:
        raise ScheduleError(f"no {scope} {key!r} in the inventory", "key", kind="not_found")


def get_schedule(conn: psycopg.Connection, scope: str, key: str) -> dict[str, Any] | None:
    _check_scope(conn, scope, key)
    row = conn.execute("SELECT doc, updated_at FROM schedules WHERE scope = %s AND key = %s", (scope, key)).fetchone()
    if row is None:
        return None
    return {"scope": scope, "key": key, **row[0], "updated_at": row[1]}


def put_schedule(conn: psycopg.Connection, scope: str, key: str, doc: ScheduleDoc) -> None:
    """Store a validated document for a scope (a city document must keep a profile)."""
    _check_scope(conn, scope, key)
    if scope == "city" and doc.profile is None:
        raise ScheduleError("the city's schedule must have a profile (every lamp needs one to fall back on)", "profile")
    conn.execute(
        "INSERT INTO schedules (scope, key, doc) VALUES (%s, %s, %s) "
        "ON CONFLICT (scope, key) DO UPDATE SET doc = EXCLUDED.doc, updated_at = clock_timestamp()",
        (scope, key, Jsonb(msgspec.json.decode(encode_doc(doc)))),
    )


def delete_schedule(conn: psycopg.Connection, scope: str, key: str) -> bool:
    _check_scope(conn, scope, key)
    if scope == "city":
        raise ScheduleError("the city's schedule cannot be removed, only replaced", "scope")
    cur = conn.execute("DELETE FROM schedules WHERE scope = %s AND key = %s", (scope, key))
    return cur.rowcount > 0


def long_outages(conn: psycopg.Connection, now: dt.datetime, *, longer_than: dt.timedelta) -> list[dict[str, Any]]:
    """Planned outages (schedule windows of kind `outage`) longer than `longer_than` that have not ended by
    `now`, soonest first: what the public notices list."""
    rows = conn.execute(
        """SELECT s.scope, s.key, w->>'start', w->>'end', coalesce(w->>'note', '')
           FROM schedules s, jsonb_array_elements(s.doc->'windows') w
           WHERE w->>'kind' = 'outage'
             AND (w->>'end')::timestamptz > %s
             AND (w->>'end')::timestamptz - (w->>'start')::timestamptz > %s
           ORDER BY (w->>'start')::timestamptz""",
        (now, longer_than),
    ).fetchall()
    return [
        {
            "scope": r[0],
            "key": r[1],
            "start": dt.datetime.fromisoformat(r[2]),
            "end": dt.datetime.fromisoformat(r[3]),
            "note": r[4],
        }
        for r in rows
    ]


async def follow_forever(
    engine: LightingEngine,
    db: Database,
    *,
    states: bool,
    period_s: float = 2.0,
    skip: Callable[[str], bool] | None = None,
    fetched: Callable[[dt.datetime], None] | None = None,
) -> None:
    """Keep `engine` current: schedules always, lamp states too when no gateway feeds it in this process (or,
    with `skip`, for the districts this process's gateway does not read). Read in a worker thread, applied on
    the loop that owns the engine. `fetched(at)`: after each fetch applied, the database time it began (what
    was committed before then is in the engine now)."""

    def fetch(conn: psycopg.Connection, districts: list[str] | None) -> tuple[dt.datetime, Changes]:
        row = conn.execute("SELECT statement_timestamp()").fetchone()
        assert row is not None
        return row[0], engine.fetch(conn, states=states, districts=districts)

    async def refresh() -> None:
        # Only the lamps of the districts fed elsewhere are read: a gateway reading every district reads no
        # lamp states back (measured: a fifth of a lone gateway's CPU went to reading its own writes).
        others = None if skip is None else [d for d in engine.index.districts if not skip(d)]
        at, changes = await db.run(functools.partial(fetch, districts=others))
        engine.apply(changes, skip=skip)
        if fetched is not None:
            fetched(at)

    await supervise(refresh, what="the lighting engine's refresh from the database", every_s=period_s)

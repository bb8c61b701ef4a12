"""A process's PostgreSQL, opened once at start-up and handed to every service that needs it.

One pool serves every short piece of work. psycopg's connections are either async (for the event loop) or sync
(for worker threads, where the lighting engine's and the fault engine's heavier reads and writes run so the loop
stays free), so the pool has both faces, `pool` and `threads`, drawn from one budget. Each connection is checked
as it is handed out (one round trip, or a look at its socket when it was in use a moment ago: `FreshCheck`):
after a database restart or a failover the next piece of work gets a fresh connection, not a dead one, and nobody
writes a reconnect loop of their own.

A protocol that holds a connection gets one of its own (`dedicated`): the ingest writer's COPY staging tables,
LISTEN, and the session-level advisory locks the leases are.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import select
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from kernel.errors import Problem

__all__ = [
    "Connection",
    "Database",
    "DatabaseUnavailable",
    "FreshCheck",
    "connect",
    "database_of",
    "empty_tables",
    "refusal",
    "refused_for_data",
    "role_of",
    "shown",
    "with_database",
]

T = TypeVar("T")

# An open connection, as the rooms' functions that run SQL are given one; only the kernel and the rooms that own
# tables import psycopg (tests/unit/test_architecture.py), the others name it so.
Connection = psycopg.Connection


class DatabaseUnavailable(Problem):
    """The database is away, or refuses this role (a connection that fails or is lost, a privilege missing): the
    message names the database and the reason. psycopg's errors of that kind are read into this once, here."""

    kind = "unavailable"


@contextlib.contextmanager
def connect(url: str, *, autocommit: bool = False, connect_timeout: int | None = None) -> Iterator[Connection[Any]]:
    """A connection of its own for a command's or a tool's short work, closed on leaving (committed first unless
    `autocommit`, or rolled back on an error). The database away, lost on the way, or refusing the role a privilege
    comes out as `DatabaseUnavailable`; an error of the SQL itself is the owning room's to read."""
    try:
        conn = psycopg.connect(url, autocommit=autocommit, connect_timeout=connect_timeout)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to the database {shown(url)}: {refusal(exc)}") from exc
    try:
        with conn:
            yield conn
    except (psycopg.OperationalError, psycopg.errors.InsufficientPrivilege) as exc:
        raise DatabaseUnavailable(f"the database {shown(url)} failed the work: {refusal(exc)}") from exc


# SQLSTATE classes that blame what a statement carried: a row twice in one statement (21), a value out of range or
# malformed (22), a constraint (23), a value past a limit (54). Every other error is the database's state: away
# (08, 57), out of disk or memory (53), read-only after a failover (25006), a privilege taken away (42501), a lock
# or a serialisation conflict (55, 40). Retrying a batch refused for its state succeeds once the state passes;
# retrying one refused for its data never does.
_DATA_CLASSES = ("21", "22", "23", "54")
_STATES = {
    "25006": "the database is read-only (a standby after a failover, or default_transaction_read_only)",
    "42501": "the database refuses the gateway's role the privilege to write",
    "53100": "the database's disk is full",
    "53200": "the database is out of memory",
    "53300": "the database has too many connections",
}


def refused_for_data(exc: BaseException) -> bool:
    """Whether a write failed because of the data it carried, so that splitting the batch finds the messages at
    fault; otherwise (False) the database is in no state to write and the same batch is retried later."""
    if isinstance(exc, psycopg.Error):
        if exc.sqlstate is not None:
            return exc.sqlstate[:2] in _DATA_CLASSES
        # Raised before the server saw it: a value psycopg cannot send (a NUL in text, say) is the data's fault;
        # a lost or closed connection is not.
        return not isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return not isinstance(exc, OSError)  # a Python-side conversion of one value failed


def refusal(exc: BaseException) -> str:
    """The database's state that made it refuse, in words, naming the SQLSTATE."""
    state = exc.sqlstate if isinstance(exc, psycopg.Error) else None
    words = " ".join(str(exc).split()) or type(exc).__name__
    if state in _STATES:
        return f"{_STATES[state]} (SQLSTATE {state}: {words})"
    return f"{type(exc).__name__}{f' (SQLSTATE {state})' if state else ''}: {words}"


_WAIT_S = 5.0  # a piece of work waits this long for a connection before it fails (and its loop backs off)
_CONNECT_S = 5


class FreshCheck:
    """A pool's check of a connection it hands out. A round trip (`SELECT` of nothing) unless the connection was
    handed out less than `fresh_s` ago and its socket has nothing to read: an idle connection the server ended
    (a restart, a failover, an administrator) has its farewell or its end of file waiting there, and gets the
    round trip, which fails, so the pool makes a fresh one. A busy API hands each pooled connection out many times
    a second; under full ingest every round trip waits for a core, and the check was half of most calls' trips."""

    def __init__(self, fresh_s: float = 1.0) -> None:
        self.fresh_s = fresh_s
        self._handed: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def _fresh(self, conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
        now = time.monotonic()
        last = self._handed.get(conn)
        self._handed[conn] = now
        if last is None or now - last >= self.fresh_s or conn.closed or conn.broken:
            return False
        waiting = select.poll()
        waiting.register(conn.fileno(), select.POLLIN)
        return not waiting.poll(0)

    def sync(self, conn: psycopg.Connection[Any]) -> None:
        if not self._fresh(conn):
            ConnectionPool.check_connection(conn)

    async def async_(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if not self._fresh(conn):
            await AsyncConnectionPool.check_connection(conn)


class Database:
    """`size` connections at most for the loop, `thread_size` for worker threads, plus the dedicated ones.
    `autocommit`: for the pooled connections (a pooled connection without it commits when handed back)."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "lamplighter",
        size: int = 4,
        thread_size: int = 3,
        autocommit: bool = True,
        wait_s: float = _WAIT_S,
    ) -> None:
        self.url = url
        self.name = name
        kwargs = {"autocommit": autocommit, "application_name": name, "connect_timeout": _CONNECT_S}
        self.pool = AsyncConnectionPool(
            url, min_size=1, max_size=size, kwargs=kwargs, timeout=wait_s, open=False,
            check=FreshCheck().async_, name=f"{name}-loop",
        )  # fmt: skip
        self.threads = ConnectionPool(
            url, min_size=1, max_size=thread_size, kwargs=kwargs, timeout=wait_s, open=False,
            check=FreshCheck().sync, name=f"{name}-threads",
        )  # fmt: skip
        self._open = False

    async def open(self) -> None:
        """Start filling the pools (in the background: a database that is away now does not stop start-up)."""
        if self._open:
            return
        await self.pool.open(wait=False)
        await asyncio.to_thread(self.threads.open, wait=False)
        self._open = True

    async def close(self) -> None:
        if not self._open:
            return
        self._open = False
        await self.pool.close()
        await asyncio.to_thread(self.threads.close)

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled async connection (autocommit) for a short piece of work on the loop."""
        async with self.pool.connection() as conn:
            yield conn

    async def run(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`fn(connection)` in a worker thread, with a pooled sync connection (autocommit)."""

        def work() -> T:
            with self.threads.connection() as conn:
                return fn(conn)

        return await asyncio.to_thread(work)

    async def dedicated(self, purpose: str) -> psycopg.AsyncConnection[Any]:
        """A connection of its own (autocommit), for a protocol that holds one; the caller closes it. A cancel
        that comes while it is being made still closes it once made."""
        making = asyncio.ensure_future(
            psycopg.AsyncConnection.connect(
                self.url, autocommit=True, application_name=f"{self.name}-{purpose}", connect_timeout=_CONNECT_S
            )
        )
        try:
            return await asyncio.shield(making)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await (await making).close()
            raise


def with_database(url: str, database: str) -> str:
    """`url` (a postgresql:// URL) naming another database on the same server, as the same role."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def database_of(url: str) -> str:
    """The database a postgresql:// URL names."""
    return str(conninfo_to_dict(url).get("dbname") or "")


def role_of(url: str) -> str:
    """The role a postgresql:// URL logs in as (libpq's default, the operating system's user, when it names none)."""
    user = conninfo_to_dict(url).get("user")
    return str(user) if user else getpass.getuser()


def shown(url: str) -> str:
    """`url` fit for logs and messages: a password in it is replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def empty_tables(conn: psycopg.Connection, tables: Sequence[str], *, counted: Sequence[str] = ()) -> dict[str, int]:
    """Empty a room's `tables` at once (TRUNCATE: inside the caller's transaction, all or nothing), first counting
    the rows of those in `counted`, which are what the caller reports as removed. Only the owner of the tables may,
    so it is the owning room that calls it, naming its own tables."""
    counts = {}
    for table in counted:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
        counts[table] = int(row[0]) if row else 0
    conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(sql.Identifier(t) for t in tables)))
    return counts

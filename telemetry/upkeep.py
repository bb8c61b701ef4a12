"""The time series' upkeep, run once city-wide by the leading gateway: daily partitions made ahead and dropped
past the retention, old quarantine records pruned, each finished day summed up per lamp (`telemetry.daily`) and
then whatever the composition root runs on the new summaries (the failure forecast), and whole days of raw readings
packed into the compact history (in child processes, on a core of their own rather than the gateway's loop)."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections.abc import Mapping, Sequence

import psycopg

from kernel.clock import Clock
from kernel.database import Database, empty_tables
from kernel.supervise import supervise
from telemetry.daily import pending_summary_days
from telemetry.history import pending_days
from telemetry.schema import maintain_partitions
from telemetry.store import prune_quarantine

__all__ = ["Upkeep", "forget_inventory"]

logger = logging.getLogger(__name__)

_PARTITION_CHECK_S = 3600.0
_QUARANTINE_CHECK_S = 60.0
_COMPACT_CHECK_S = 3600.0
_COMPACT_FIRST_S = 60.0  # after taking the lead, so a gateway's start is not slowed by a day's compaction


class Upkeep:
    """`compact`: the command that packs days older than `--before DATE` (`lamplighter compact`), run with `env`,
    first `compact_first_s` after the lead is taken and then every `compact_every_s`; None: no compaction
    (nor with `compact_after_days` 0)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        quarantine_days: int,
        quarantine_rows: int,
        compact_after_days: int,
        compact: Sequence[str] | None,
        env: Mapping[str, str],
        summarise: Sequence[str] | None = None,
        after_summaries: Sequence[str] | None = None,
        compact_first_s: float = _COMPACT_FIRST_S,
        compact_every_s: float = _COMPACT_CHECK_S,
    ) -> None:
        self.db, self.clock = db, clock
        self.quarantine_days, self.quarantine_rows = quarantine_days, quarantine_rows
        self.compact_after_days = compact_after_days
        self.compact = list(compact) if compact and compact_after_days else None
        self.summarise = list(summarise) if summarise else None
        self.after_summaries = list(after_summaries) if after_summaries else None
        self.env = dict(env)
        self.compact_first_s, self.compact_every_s = compact_first_s, compact_every_s

    async def run(self) -> None:
        """Until cancelled."""
        # An hour of the gateway's clock, so a compressed night still crosses midnight with partitions ready.
        period = max(_PARTITION_CHECK_S / self.clock.speed, 10.0)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(
                supervise(lambda: self.db.run(self._partitions), what="partition upkeep", every_s=period),
                name="partition-upkeep",
            )
            tg.create_task(
                supervise(self._prune_quarantine, what="quarantine upkeep", every_s=_QUARANTINE_CHECK_S),
                name="quarantine-upkeep",
            )
            if self.compact is not None:
                # Stopping it midway loses nothing: each range of lamps, and each day's cabinets, is packed in one
                # transaction, and the next run packs the day again over what is there.
                job = supervise(
                    self._compact_days,
                    what="history compaction",
                    every_s=self.compact_every_s,
                    first_s=self.compact_first_s,
                )
                tg.create_task(job, name="history-compaction")
            if self.summarise is not None:
                # Each range of lamps is summed up in one transaction, and a day is marked done after its last.
                job = supervise(
                    self._summarise_days,
                    what="daily summaries",
                    every_s=self.compact_every_s,
                    first_s=self.compact_first_s,
                )
                tg.create_task(job, name="daily-summaries")

    def _partitions(self, conn: psycopg.Connection) -> None:
        maintain_partitions(conn)
        if self.clock.compressed:
            maintain_partitions(conn, today=self.clock.now().date(), drop=False)

    async def _prune_quarantine(self) -> None:
        days, rows = self.quarantine_days, self.quarantine_rows
        removed = await self.db.run(lambda c: prune_quarantine(c, days=days, rows=rows))
        if removed:
            logger.info("quarantine: %d old records removed", removed)

    async def _summarise_days(self) -> None:
        assert self.summarise is not None
        today = self.clock.now().astimezone(dt.UTC).date()
        days = await self.db.run(functools.partial(pending_summary_days, before=today))
        if days:
            logger.info("daily summaries: %d days (%s to %s) in a child process", len(days), days[0], days[-1])
            done = await self._child("daily summaries", [*self.summarise, "--before", today.isoformat()])
            if done and self.after_summaries is not None:  # the night's forecast, on the days just summed up
                await self._child("the nightly forecast", [*self.after_summaries, "--day", today.isoformat()])

    async def _child(self, what: str, argv: list[str]) -> bool:
        """Run a command to its end (terminated if this task is cancelled); whether it succeeded."""
        child = await asyncio.create_subprocess_exec(*argv, env=self.env)
        try:
            code = await child.wait()
        except asyncio.CancelledError:
            child.terminate()  # its open transaction rolls back; the next leader's run goes on
            await child.wait()
            raise
        if code:
            logger.warning("%s exited with status %d (tried again in an hour)", what, code)
        return code == 0

    async def _compact_days(self) -> None:
        assert self.compact is not None
        # The process's clock, not the wall's: a demo showing another night must not pack the day it shows.
        before = self.clock.now().astimezone(dt.UTC).date() - dt.timedelta(days=self.compact_after_days)
        days = await self.db.run(functools.partial(pending_days, before=before))
        if not days:
            return
        logger.info("history: compacting %d days (%s to %s) in a child process", len(days), days[0], days[-1])
        await self._child("history compaction", [*self.compact, "--before", before.isoformat()])


def forget_inventory(conn: psycopg.Connection) -> dict[str, int]:
    """Empty every reading, compact day, latest state, device status and quarantined message: they name lamps and
    cabinets by number or id, which a replaced inventory reuses for other devices."""
    return empty_tables(
        conn,
        (
            "lamp_readings",
            "cabinet_readings",
            "lamp_history",
            "cabinet_history",
            "lamp_days",
            "lamp_days_done",
            "lamp_latest",
            "cabinet_latest",
            "device_status",
            "quarantine",
        ),
        counted=("quarantine",),
    )

"""Every minute of the (possibly compressed) clock: sample the rate, watch targets, publish, and after dawn
write the nightly report. Runs in the gateway's process, beside the lighting engine that the gateway feeds."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo

import psycopg

from energy.errors import EnergyError
from energy.nights import NoReadings, compute_night, night_complete, store_night
from kernel.clock import Clock
from kernel.database import Database, empty_tables
from kernel.supervise import supervise
from lighting.engine import LightingEngine
from lighting.rate import Breakdown
from lighting.sampling import (
    AlertEvent,
    BelowTarget,
    SampleRow,
    night_of,
    nightly_report,
    ops_message,
    sample_rows,
    store_nightly,
    write_alert_events,
    write_samples,
)

__all__ = ["Sampler", "forget_inventory"]

logger = logging.getLogger(__name__)

_MAX_CATCH_UP_MS = 30 * 60_000
_MAX_CATCH_UP_REAL_S = 5.0
# A minute is judged once what devices reported up to it is ingested: their publish, the broker's hop and the
# gateway's next batch take this long in real time at most (on a fast clock, many clock minutes).
_TRANSIT_REAL_S = 0.1
_INGEST_WAIT_REAL_S = 5.0  # ingest stalled: the minute is sampled anyway (and the health says why)


class Sampler:
    def __init__(
        self,
        engine: LightingEngine,
        db: Database,
        clock: Clock,
        *,
        publish: Callable[[bytes], None] | None = None,
        fine_every_min: int = 10,
        timezone: str = "Asia/Shanghai",
        inspection: dt.time = dt.time(22, 0),
        ingested_through: Callable[[], int] | None = None,
    ) -> None:
        self.engine = engine
        # Clock time up to which the gateway has committed what it received; without it, samples are taken on
        # the minute (the engine then fed by other means, as in tests of the sampler alone).
        self.ingested_through = ingested_through
        self._last_tick = 0  # the clock minute sampled last (epoch ms)
        self.db = db
        self.clock = clock
        self.publish = publish  # the retained ops message (the city's rate) goes out through this
        self.fine_every_min = fine_every_min
        self.tz = ZoneInfo(timezone)
        self.inspection = inspection
        self.alerts = BelowTarget()
        self.samples = 0
        self.last: Breakdown | None = None
        self._night_open: dt.date | None = None  # the local night being sampled, reported once it ends
        # The newest ended night whose energy is stored (energy.nights), and the task storing one.
        self._energy_night: dt.date | None = None
        self._energy_task: asyncio.Task[None] | None = None
        self._energy_retry_ms = 0
        self._first_heard_ms: int | None = None  # when the engine first held a report (stored or new)
        self.warm_up_skipped = 0  # minutes not sampled because the fleet had not all reported yet

    @property
    def _transit_ms(self) -> int:
        """A report's way from device to engine (`_TRANSIT_REAL_S`), in clock milliseconds."""
        return int(_TRANSIT_REAL_S * 1000 * self.clock.speed)

    async def run(self) -> None:
        self._last_tick = self.clock.now_ms() // 60_000 * 60_000
        await supervise(self._next_minute, what="the lighting-rate sample of a minute")

    async def _next_minute(self) -> None:
        now = self.clock.now_ms()
        tick = self._last_tick + 60_000
        if tick > now:
            await asyncio.sleep((tick - now) / 1000 / self.clock.speed)
        elif now - tick > max(_MAX_CATCH_UP_MS, _MAX_CATCH_UP_REAL_S * 1000 * self.clock.speed):
            tick = now // 60_000 * 60_000  # far behind (a suspended machine): skip to the present
        # On a fast clock a sample can take longer than a clock minute: the minutes missed meanwhile are sampled
        # right after (from the state as it is then), so no minute goes missing. One that fails is not tried
        # again: the next is, after the backoff.
        self._last_tick = tick
        await self._wait_for_ingest(tick)
        await self.sample(tick)

    async def _wait_for_ingest(self, tick_ms: int) -> None:
        """Until the reports devices sent up to `tick_ms` are in the engine. Without this, on a fast clock every
        lamp that switched on at dusk looked dark for minutes, because its report was still on its way."""
        if self.ingested_through is None:
            return
        transit = self._transit_ms
        target = tick_ms + transit
        # Late for this minute (the process, the broker or the devices stalled while the clock ran on): what the
        # gateway has received says nothing of what devices have not sent yet, so also wait until reports from
        # after the minute have reached the engine. A city's devices report every second; a quiet fleet waits
        # at most the deadline. Without it one clean-clone run sampled eleven minutes of a compressed dusk at
        # 0.05 % (the state from before the switching) and raised a false below-target alert.
        late = self.clock.now_ms() - tick_ms > 2 * transit
        deadline = time.monotonic() + _INGEST_WAIT_REAL_S
        while time.monotonic() < deadline and (  # noqa: ASYNC110 (watermarks)
            self.ingested_through() < target or (late and self.engine.heard_ms < tick_ms)
        ):
            await asyncio.sleep(0.02)

    def warming_up(self, tick_ms: int) -> bool:
        """Whether `tick_ms` lies before the fleet could have reported once: before any report reached the engine
        (a city just seeded), or within the longest reporting interval (and a minute) after the first one. Those
        minutes have no data; counted, every lamp not heard from yet would be a lamp out (a fresh demo's first
        minutes read 14 % and went into the night's report). An engine started on stored states is not."""
        heard = self.engine.heard_ms
        if heard <= 0:
            return True
        if self._first_heard_ms is None:
            self._first_heard_ms = heard
        longest = int(self.engine.index.interval_s.max(initial=0)) * 1000
        return tick_ms < self._first_heard_ms + longest + 60_000

    async def sample(self, tick_ms: int) -> Breakdown:
        """One minute's work at `tick_ms` (clock time)."""
        b = self.engine.breakdown(tick_ms)
        self.last = b
        ts = dt.datetime.fromtimestamp(tick_ms / 1000, dt.UTC)
        due = int(b.city.due[0])
        if due > 0 and self.warming_up(tick_ms):
            # No data yet: nothing stored, no below-target alarm; the live figures still go out.
            self.warm_up_skipped += 1
            if self.publish is not None:
                self.publish(ops_message(b))
            return b
        # Sampled late (the process stalled while the clock ran on): the engine already holds reports from after
        # the minute. Their time, not the minute's, starts a spell below target.
        heard = self.engine.heard_ms
        late = heard > tick_ms + 2 * self._transit_ms + 60_000
        events = self.alerts.update(b, evidence_ms=heard if late else None)
        for e in events:
            self._log(e)
        rows: list[SampleRow] = []
        if due > 0:
            local = ts.astimezone(self.tz)
            minute = local.hour * 60 + local.minute
            at_inspection = (local.hour, local.minute) == (self.inspection.hour, self.inspection.minute)
            rows = sample_rows(b, fine=minute % self.fine_every_min == 0 or at_inspection)
            self._night_open = night_of(ts, self.tz)
        night_done = None
        if due == 0 and self._night_open is not None:  # dawn: the night's report (redone if it was early)
            night_done, self._night_open = self._night_open, None
        if rows or events or night_done:
            await self.db.run(lambda conn: self._write(conn, rows, events, night_done))
            self.samples += bool(rows)
        if self.publish is not None:
            self.publish(ops_message(b))
        self._energy_after_noon(tick_ms)
        return b

    def _energy_after_noon(self, tick_ms: int) -> None:
        """Once a night has ended (local noon), its energy is computed and stored, once, in the background."""
        ended = night_of(dt.datetime.fromtimestamp(tick_ms / 1000, dt.UTC), self.tz) - dt.timedelta(days=1)
        busy = self._energy_task is not None and not self._energy_task.done()
        if ended == self._energy_night or busy or tick_ms < self._energy_retry_ms:
            return
        self._energy_task = asyncio.create_task(self._store_energy(ended, tick_ms), name=f"energy-{ended}")

    async def _store_energy(self, night: dt.date, tick_ms: int) -> None:
        def run(conn: psycopg.Connection) -> str:
            if night_complete(conn, night):
                return "stored before"
            t = time.perf_counter()
            ne = compute_night(conn, self.engine.index, night, self.tz, self.clock.now_ms())
            store_night(conn, ne)
            return f"computed in {time.perf_counter() - t:.1f} s: {float(ne.lamp_wh.sum()) / 1000:,.1f} kWh"

        try:
            done = await self.db.run(run)
        except NoReadings as exc:
            done = str(exc)  # nothing to store, and nothing to try again
        except (psycopg.Error, EnergyError) as exc:
            logger.warning("energy of the night of %s not stored (tried again in 10 minutes): %s", night, exc)
            self._energy_retry_ms = tick_ms + 10 * 60_000
            return
        self._energy_night = night
        logger.info("energy of the night of %s: %s", night, done)

    def _write(
        self, conn: psycopg.Connection, rows: list[SampleRow], events: list[AlertEvent], night_done: dt.date | None
    ) -> None:
        if rows:
            write_samples(conn, rows)
        if events:
            write_alert_events(conn, events)
        if night_done is not None:
            report = nightly_report(conn, night_done, index=self.engine.index, inspection=self.inspection)
            if report is not None:
                store_nightly(conn, night_done, report)
                city = report.get("city") or {}
                logger.info(
                    "nightly report for %s: city min %s %%, mean %s %%, at %s %s %%; %d of %d roads pass",
                    night_done,
                    city.get("min"),
                    city.get("mean"),
                    report["inspection_time"],
                    city.get("at_inspection"),
                    report["roads_passing"],
                    report["roads_assessed"],
                )

    @staticmethod
    def _log(e: AlertEvent) -> None:
        name = "city" if e.grouping == "city" else f"district {e.key}"
        if e.kind == "raised":
            logger.warning("ALERT: %s below target: %.2f %% < %.0f %% since %s", name, e.rate or 0, e.target, e.since)
        else:
            logger.info("alert cleared: %s back at %s %% (target %.0f %%)", name, e.rate, e.target)


def forget_inventory(conn: psycopg.Connection) -> dict[str, int]:
    """Empty the rate's samples, the nightly reports and the operators' alerts, and delete every schedule but the
    city's own document (the others name districts, roads, cabinets or lamps of the inventory being replaced)."""
    counts = empty_tables(
        conn, ("lighting_rate_samples", "nightly_reports", "operator_alerts"), counted=("operator_alerts",)
    )
    counts["schedules"] = conn.execute("DELETE FROM schedules WHERE scope <> 'city'").rowcount
    return counts

"""`lamplighter demo`: services, schema, seed if empty, gateway and API in this process, simulator beside it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
import signal
import subprocess
import sys
import time
from zoneinfo import ZoneInfo

import numpy as np
import uvicorn

from api.app import create_app
from inventory.queries import districts_named, seeded_lamps
from kernel.clock import Clock
from kernel.database import connect
from kernel.local import quiet_collector
from lamplighter.config import Settings
from lamplighter.runtime import GatewayProcess, private_services, provision_private
from lamplighter.seeding import seed_command
from lamplighter.simproc import spawn, stop_process
from protocol.topics import crew_tickets_topic
from telemetry.store import newest_report

__all__ = ["run_demo"]

logger = logging.getLogger(__name__)

_CONSOLE_EVERY_S = 2.0
_DEFAULT_LAMPS = 110_000
_WALKTHROUGH_CREW = "cd-crew"  # the crew of the README's example lamp, XN-CD-000001 (Chengdong)


def run_demo(
    settings: Settings,
    *,
    lamps: int | None,
    replace: bool = False,
    interval: float,
    clock: Clock,
    clock_args: list[str],
) -> int:
    with private_services(settings, "dev") as ep:
        ep.migrate(settings.retention_days, settings.compact_after_days)
        with connect(ep.database_url, autocommit=True) as conn:
            seeded = seeded_lamps(conn)
            latest = newest_report(conn)
        if latest is not None and latest > clock.now() + dt.timedelta(minutes=5):
            print(
                f"note: the demo's database holds readings up to {latest:%Y-%m-%d %H:%M %Z}, later than this "
                f"run's clock ({clock.now():%Y-%m-%d %H:%M %Z}). Lamps follow what they report now, so the map is "
                f"right within a report interval; the history and tickets of that later run stay. Add --replace to "
                f"start from a fresh city.",
                file=sys.stderr,
            )
        if seeded is None or replace:
            size = lamps or (seeded if seeded is not None else _DEFAULT_LAMPS)
            seed_command(ep.schema_url, lamps=size, seed=1, replace=replace)
        elif lamps is not None and lamps != seeded:
            print(
                f"the demo's database holds a city of {seeded:,} lamps, not {lamps:,}: add --replace to load "
                f"{lamps:,} lamps in its place (its readings, tickets and commands go too)",
                file=sys.stderr,
            )
            return 2
        else:
            print(f"inventory of {seeded:,} lamps already loaded")
        _demo_crews(ep.database_url)
        with connect(ep.database_url) as conn:
            provision_private(ep, conn)  # every device and crew gets its broker account
        logins = _demo_logins(ep.database_url)
        gw = GatewayProcess.start(settings, ep, clock=clock)
        quiet_collector()
        env = {**ep.env(), "LAMPLIGHTER_CLOCK_ORIGIN": repr(clock.origin)}
        sim = spawn(["simulate", "--quiet", "--interval", str(interval), *clock_args], env)
        try:
            asyncio.run(_serve(settings, ep, gw, sim, logins))
        finally:
            _stop_simulator(sim)
        print(
            f"\ndemo stopped: written {gw.gateway.stats.lamps_written:,} lamp readings and "
            f"{gw.gateway.stats.cabinets_written:,} cabinet reports, {gw.gateway.stats.rejected:,} rejected"
        )
    return 0


def _demo_crews(database_url: str) -> None:
    """A first run has no crews: give each district one (reached over MQTT) and the city a supervisors' crew, so
    the demo's tickets are dispatched. Crews added through the API are left alone."""
    from alerts.crews import Crew, list_crews, save_crew

    with connect(database_url, autocommit=True) as conn:
        if list_crews(conn, dt.datetime.now(dt.UTC)):
            return
        districts = districts_named(conn)
        for code, name in districts:
            save_crew(conn, Crew(id=f"{code}-crew", name=f"{name} maintenance crew", districts=[code]))
        save_crew(conn, Crew(id="supervisors", name="Lighting department supervisors", supervisor=True))
    print(
        f"demo crews created: one per district ({len(districts)}), and the supervisors; tickets reach them on "
        f"{crew_tickets_topic('{crew}')}"
    )


def _demo_logins(database_url: str) -> list[tuple[str, str, str, str]]:
    """Fresh passwords for the demo's operator and for one district crew, on every run: (page, name, password,
    whose page it is)."""
    from alerts.crews import list_crews
    from api.auth import add_user

    logins = []
    with connect(database_url, autocommit=True) as conn:
        # Chengdong's crew when there is one: the README's walk-through makes a lamp there leak.
        crews = [c for c in list_crews(conn, dt.datetime.now(dt.UTC)) if not c["supervisor"]]
        crews.sort(key=lambda c: (c["id"] != _WALKTHROUGH_CREW, c["id"]))
        crew = (crews[0]["id"], crews[0]["name"]) if crews else None
        password = secrets.token_urlsafe(9)
        add_user(conn, "operator", "operator", password=password, replace=True)
        logins.append(("/", "operator", password, "the control room"))
        if crew is not None:
            password = secrets.token_urlsafe(9)
            add_user(conn, "crew", "crew", crew=crew[0], password=password, replace=True)
            logins.append(("/crew", "crew", password, f"{crew[1]}, {crew[0]}"))
    return logins


async def _serve(
    settings: Settings,
    ep: object,
    gw: GatewayProcess,
    sim: subprocess.Popen[bytes],
    logins: list[tuple[str, str, str, str]],
) -> None:
    app = create_app(
        database_url=gw.ep.database_url,
        broker=gw.ep.as_("lamplighter-api"),
        metrics=gw.metrics.registry,
        engine=gw.engine,
        clock=gw.clock,
        command_pace=settings.command_pace,
        timezone=settings.timezone,
        ingest_stall_s=settings.ingest_stall_s,
        max_stream_clients=settings.api_max_streams,
        max_body=settings.api_max_body_bytes,
        max_small_body=settings.api_max_small_body_bytes,
        secure_cookies=settings.api_secure_cookies,
        docs=settings.api_docs,
        tariff=settings.tariff,
        currency=settings.tariff_currency,
        co2_kg_per_kwh=settings.co2_kg_per_kwh,
    )
    server = uvicorn.Server(uvicorn.Config(app, host=settings.api_host, port=settings.api_port, log_level="warning"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: its terminal closed
        loop.add_signal_handler(sig, stop.set)
    base = f"http://{settings.api_host}:{settings.api_port}"
    print(f"API on {base}/api/v1/health (docs at {base}/docs, metrics at {base}/metrics)")
    for page, name, password, who in logins:
        print(f"log in at {base}{page} as {name} / {password}   ({who})")
    print("Ctrl-C stops everything", flush=True)
    async with asyncio.TaskGroup() as tg:
        gw_task = tg.create_task(gw.run(), name="gateway")
        api_task = tg.create_task(server.serve(), name="api")
        console = tg.create_task(_console(gw, sim), name="console")
        await stop.wait()
        console.cancel()
        print(flush=True)  # below the status line
        # The devices stop first and the gateway takes in what they sent, so the demo ends with nothing in flight.
        await asyncio.to_thread(_stop_simulator, sim)
        await _drained(gw)
        server.should_exit = True
        await api_task
        gw_task.cancel()


def _stop_simulator(sim: subprocess.Popen[bytes]) -> None:
    stop_process(sim, "the simulator", grace_s=15.0)


async def _drained(gw: GatewayProcess, *, quiet_s: float = 0.5, limit_s: float = 10.0) -> None:
    """Until nothing more has reached the gateway for `quiet_s` (at most `limit_s`)."""
    deadline = time.monotonic() + limit_s
    seen = -1
    while gw.subscriber.received != seen and time.monotonic() < deadline:
        seen = gw.subscriber.received
        await asyncio.sleep(quiet_s)


class _ClearsStatusLine(logging.Filter):
    """On a terminal, a log record first clears the status line, so it gets a line of its own (the status line
    is drawn again below it at the next refresh) instead of being written into it."""

    def filter(self, record: logging.LogRecord) -> bool:
        with contextlib.suppress(OSError):
            sys.stdout.write("\r\033[K")
            sys.stdout.flush()
        return True


async def _console(gw: GatewayProcess, sim: subprocess.Popen[bytes]) -> None:
    """One status line, rewritten in place: lamps reporting, messages/s, lamp readings and cabinet reports written
    (the same two counts as the closing line's), rejected, the rate."""
    clear = _ClearsStatusLine()
    handlers = logging.getLogger().handlers if sys.stdout.isatty() else []
    for h in handlers:
        h.addFilter(clear)
    try:
        await _status_lines(gw, sim)
    finally:
        for h in handlers:
            h.removeFilter(clear)


async def _status_lines(gw: GatewayProcess, sim: subprocess.Popen[bytes]) -> None:
    last_t, last_n = time.monotonic(), 0
    tz = ZoneInfo(gw.settings.timezone)  # the city's local time
    while True:
        await asyncio.sleep(_CONSOLE_EVERY_S)
        s = gw.gateway.stats
        now = time.monotonic()
        rate = (gw.subscriber.received - last_n) / (now - last_t)
        last_t, last_n = now, gw.subscriber.received
        b = gw.engine.breakdown(gw.clock.now_ms())
        reporting = int(np.count_nonzero(gw.engine.state.fresh_until >= b.ts_ms))
        city = b.city.rows()[0]
        rate_text = "day (nothing due)" if city["rate"] is None else f"{city['rate']:.2f} % of {city['due']:,} due"
        sim_state = "running" if sim.poll() is None else f"exited ({sim.returncode})"
        line = (
            f"\r{gw.clock.now().astimezone(tz).isoformat(timespec='seconds')}  lamps reporting {reporting:,}  "
            f"{rate:,.0f} msg/s  written: {s.lamps_written:,} lamp readings, {s.cabinets_written:,} cabinet reports  "
            f"rejected {s.rejected:,}  lighting rate {rate_text}  simulator {sim_state}   "
        )
        with contextlib.suppress(OSError):
            sys.stdout.write(line)
            sys.stdout.flush()

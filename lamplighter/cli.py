"""The `lamplighter` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any

from bench.cli import add_bench_parser, run_bench
from kernel.clock import Clock
from kernel.database import connect, shown
from kernel.errors import Problem
from kernel.local import quiet_collector
from lamplighter.config import ConfigError, LamplighterError, Settings
from lamplighter.devices import add_devices_parser
from lamplighter.nightly import forecast_command, summarise_command
from lamplighter.seeding import seed_command
from lamplighter.simulation import inject_command, simulate_command

__all__ = ["main"]

logger = logging.getLogger("lamplighter")


def _clock(args: argparse.Namespace) -> Clock:
    start = getattr(args, "clock_start", None)
    if start is None:
        return Clock()
    try:
        when = datetime.fromisoformat(start)
    except ValueError as exc:
        raise ConfigError(f"--clock-start: {start!r} is not an ISO time such as 2026-12-01T17:30:00+08:00") from exc
    origin = float(os.environ.get("LAMPLIGHTER_CLOCK_ORIGIN", "0") or 0)
    return Clock(when, args.clock_speed, origin)


def _add_clock(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clock-start", metavar="ISO-TIME", help="run on a compressed clock starting at this time")
    p.add_argument("--clock-speed", type=float, default=1.0, metavar="N", help="compressed clock runs N× real time")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lamplighter", description="Smart streetlight monitoring backend.")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="command", required=True)

    sub.add_parser("services", help="run the private Mosquitto and PostgreSQL under .run/dev until Ctrl-C")
    sub.add_parser("migrate", help="apply database migrations")

    p = sub.add_parser("compact", help="pack lamp and cabinet readings older than a few days into the compact history")
    p.add_argument(
        "--older-than-days",
        type=int,
        metavar="N",
        help="compact whole UTC days ending at least N days ago (default: the compact_after_days setting, 2)",
    )
    p.add_argument(
        "--before",
        type=date.fromisoformat,
        metavar="YYYY-MM-DD",
        help="compact whole UTC days before this one (the leading gateway passes its clock's: a demo's night is "
        "not today on the wall clock); overrides --older-than-days",
    )
    p.add_argument("--chunk-lamps", type=int, default=5000, metavar="N", help="lamps per transaction")

    p = sub.add_parser("summarise", help="sum up each lamp's days of readings: burning hours, starts, power, leakage")
    p.add_argument(
        "--before",
        type=date.fromisoformat,
        metavar="YYYY-MM-DD",
        help="summarise whole UTC days before this one (default: today's; the leading gateway passes its clock's)",
    )
    p.add_argument("--back-days", type=int, default=7, metavar="N", help="look this many days back (default 7)")

    p = sub.add_parser("forecast", help="failure forecasts: retrain when due, score every lamp for the night")
    p.add_argument("--day", type=date.fromisoformat, metavar="YYYY-MM-DD", help="the run's day (default: today UTC)")
    p.add_argument("--retrain", action="store_true", help="train a new model first, whatever the newest one's age")

    p = sub.add_parser("seed", help="generate and load the city inventory")
    p.add_argument("--lamps", type=int, default=110_000, help="number of lamps (default 110,000)")
    p.add_argument("--seed", type=int, default=1, help="random seed; same seed and size, same city")
    p.add_argument(
        "--replace",
        action="store_true",
        help=(
            "replace the loaded inventory, even the same one, clearing everything that refers to it (readings, "
            "history, tickets, commands, schedules, quarantine)"
        ),
    )

    p = sub.add_parser("gateway", help="MQTT → PostgreSQL ingest; Prometheus text at /metrics")
    _add_clock(p)

    p = sub.add_parser("simulate", help="simulated field devices speaking the protocol")
    p.add_argument("--interval", type=float, default=300.0, help="reporting interval, seconds of device time")
    p.add_argument("--jitter", type=float, default=1.0, help="spread of first reports, fraction of the interval")
    p.add_argument("--failure-rate", type=float, default=0.0005, help="lamp failures per lamp per day")
    p.add_argument("--connections", type=int, default=2, help="shared connections the devices are multiplexed on")
    p.add_argument("--per-device", action="store_true", help="one connection per device, with its last will")
    p.add_argument("--duration", type=float, default=None, help="stop after this many real seconds")
    p.add_argument("--seed", type=int, default=1, help="random seed of values and failures")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--client-prefix", default="lamplighter-sim", help="MQTT client ids start with this")
    p.add_argument("--no-commands", action="store_true", help="ignore commands (no command subscription)")
    p.add_argument("--ack-latency", type=float, default=0.05, help="seconds a device takes to acknowledge")
    p.add_argument("--unreachable", type=float, default=0.0, help="share of lamps that never answer a command")
    p.add_argument("--failing", type=float, default=0.0, help="share of lamps that refuse every command")
    p.add_argument(
        "--degradation",
        choices=["none", "realistic"],
        default="none",
        help="lamps wearing out before they fail: none, or at realistic yearly rates (docs/forecast.md)",
    )
    p.add_argument("--degradation-seed", type=int, default=1, help="random seed of the degradations")
    p.add_argument(
        "--truth",
        type=Path,
        default=None,
        metavar="FILE",
        help="append each degradation's onset and failure here, as JSON lines (the ground truth a forecast is "
        "judged by; the backend never reads it)",
    )
    _add_clock(p)

    p = sub.add_parser(
        "dispatch", help="deliver ticket notifications from the outbox (beside or instead of the gateway's)"
    )
    p.add_argument("--lease-s", type=float, default=30.0, help="a claimed notification is retried after this")
    p.add_argument("--batch", type=int, default=50, help="notifications claimed at once")

    p = sub.add_parser(
        "inject", help="make simulated lamps fail, leak, wear out or be repaired, or cut a cable (demos)"
    )
    p.add_argument("action", choices=["fail", "repair", "leak", "degrade", "cut", "restore"])
    p.add_argument("what", nargs="+", help="lamp ids; for cut and restore: CABINET CIRCUIT")
    p.add_argument("--code", default="lamp_failure", choices=["lamp_failure", "driver_failure", "relay_failure"])
    p.add_argument(
        "--mode",
        default="driver",
        choices=["driver", "water", "relay", "photocell", "lumen"],
        help="degrade: how the lamps wear out (default driver)",
    )
    p.add_argument(
        "--lifetime",
        type=float,
        default=None,
        help="degrade: onset to failure, in days (of burning at 40 °C for a driver; switchings for a relay)",
    )

    add_devices_parser(sub)

    p = sub.add_parser("users", help="users, roles and their API tokens")
    usub = p.add_subparsers(dest="users", required=True)
    u = usub.add_parser("add", help="add a user and print its API token (shown once)")
    u.add_argument("name")
    u.add_argument("--role", required=True, choices=["viewer", "operator", "crew", "admin"])
    u.add_argument("--crew", default=None, help="the crew id of a crew user")
    u.add_argument("--password", action="store_true", help="also set a password for the login form (asked for)")
    u.add_argument("--lang", choices=["zh", "en"], default="zh", help="language of the pages (default zh)")
    u.add_argument("--replace", action="store_true", help="reset an existing user: new role, token and password")
    usub.add_parser("list", help="list the users")
    u = usub.add_parser("disable", help="disable a user and revoke its tokens")
    u.add_argument("name")

    p = sub.add_parser("api", help="the HTTP API (follows the database; run beside `lamplighter gateway`)")
    _add_clock(p)

    p = sub.add_parser("demo", help="everything: services, schema, seed, gateway, simulator, API")
    p.add_argument("--lamps", type=int, help="city size (default: the loaded inventory, or 110,000 on a first run)")
    p.add_argument(
        "--replace",
        action="store_true",
        help="start from a fresh city: load the inventory afresh (--lamps, or the loaded size) and clear its data",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=300.0,
        help="seconds of device time between a simulated device's reports (default 300; a shorter one shows more "
        "life on the map and costs more CPU)",
    )
    _add_clock(p)

    add_bench_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # SIGTERM and SIGHUP (its terminal closed) end a command as Ctrl-C does, unwinding whatever it started (the
    # private services above all) at any moment, startup included; the long-running loops install their own.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        settings = Settings.load()
        return int(_dispatch(args, settings) or 0)
    except Problem as exc:  # any package's own error: a message for the user, no traceback
        print(f"lamplighter: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _dispatch(args: argparse.Namespace, settings: Settings) -> int | None:
    from lamplighter import runtime

    cmd = args.command
    if cmd == "services":
        with runtime.private_services(settings, "dev") as ep:
            # Until Ctrl-C, SIGTERM or SIGHUP (all three raise KeyboardInterrupt here, see main; one that comes
            # while the services start unwinds that too), then the services stop on the way out. Slept in short
            # spans, not paused or waited for by sigwait: a signal the kernel hands to another thread (numpy's
            # BLAS starts some) would never wake either.
            try:
                for name, value in ep.env().items():
                    print(f"{name}={value}")
                if ep.accounts is not None:  # the private broker: its TLS listener is the port after
                    ca = ep.accounts.parent / "tls" / "ca.crt"
                    tls = f"mqtts://127.0.0.1:{ep.mqtt_port + 1}"
                    print(f"# over TLS: LAMPLIGHTER_MQTT_URL={tls} LAMPLIGHTER_MQTT_CA_FILE={ca}")
                print("private services running; Ctrl-C stops them", flush=True)
                while True:
                    time.sleep(0.2)
            except KeyboardInterrupt:
                pass
        return 0
    if cmd == "bench":
        return run_bench(args, settings)
    if cmd == "demo":
        from lamplighter.demo import run_demo

        return run_demo(
            settings,
            lamps=args.lamps,
            replace=args.replace,
            interval=args.interval,
            clock=_clock(args),
            clock_args=_clock_argv(args),
        )
    ep = runtime.endpoints(settings)
    if cmd == "migrate":
        applied = ep.migrate(settings.retention_days, settings.compact_after_days)
        print(f"migrations applied: {applied or 'none (up to date)'}")
        with connect(ep.database_url) as conn:
            runtime.warn_privileges(conn)
    elif cmd == "seed":
        ep.migrate(settings.retention_days, settings.compact_after_days)
        seed_command(ep.schema_url, lamps=args.lamps, seed=args.seed, replace=args.replace)
        with connect(ep.database_url) as conn:
            done = runtime.provision_private(ep, conn)
        if done is not None:
            print(f"private broker: {done.devices:,} device accounts provisioned, and reloaded")
    elif cmd == "compact":
        return compact_command(ep.database_url, settings, args)
    elif cmd == "summarise":
        return summarise_command(ep.database_url, args)
    elif cmd == "forecast":
        return forecast_command(ep.database_url, args)
    elif cmd == "devices":
        from lamplighter.devices import devices_command

        return devices_command(ep, args)
    elif cmd == "gateway":
        _run_gateway(settings, ep, _clock(args))
    elif cmd == "simulate":
        simulate_command(ep, args, _clock(args))
    elif cmd == "dispatch":
        _run_dispatcher(settings, ep, args)
    elif cmd == "users":
        return users_command(ep.database_url, args)
    elif cmd == "inject":
        inject_command(ep, args)
    elif cmd == "api":
        import uvicorn

        from api.app import create_app

        with connect(ep.database_url, connect_timeout=5) as conn:
            runtime.warn_privileges(conn)
        quiet_collector()
        uvicorn.run(
            create_app(
                database_url=ep.database_url,
                broker=ep.as_("lamplighter-api"),
                clock=_clock(args),
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
            ),
            host=settings.api_host,
            port=settings.api_port,
        )
    return 0


def compact_command(database_url: str, settings: Settings, args: argparse.Namespace) -> int:
    """Pack whole days of raw lamp and cabinet readings into the compact history, showing progress; safe to
    stop and rerun."""
    from datetime import UTC, timedelta

    from tqdm import tqdm

    from telemetry.history import compact

    days = settings.compact_after_days if args.older_than_days is None else args.older_than_days
    if days < 0 or args.chunk_lamps < 1:
        raise LamplighterError("--older-than-days must be 0 or more and --chunk-lamps 1 or more")
    before = args.before or datetime.now(UTC).date() - timedelta(days=days)
    bars: dict[Any, tqdm[Any]] = {}

    def progress(day: Any, done: int, total: int) -> None:
        bar = bars.get(day)
        if bar is None:
            for old in bars.values():
                old.close()
            bar = bars[day] = tqdm(total=total, desc=f"compacting {day}", unit="lamp", disable=not sys.stderr.isatty())
        bar.update(done - bar.n)

    with connect(database_url) as conn:
        report = compact(conn, before=before, chunk_lamps=args.chunk_lamps, progress=progress)
    for bar in bars.values():
        bar.close()
    if not report.days:
        print(f"history: nothing to compact before {before}")
    else:
        print(
            f"history: {report.readings:,} readings of {len(report.days)} days ({report.days[0]} to "
            f"{report.days[-1]}) packed into {report.lamp_days:,} lamp-days, and {report.cabinet_readings:,} "
            f"cabinet readings into {report.cabinet_days:,} cabinet-days, in {report.seconds:.1f} s"
        )
    return 0


def _ask_password() -> str:
    import getpass

    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise LamplighterError("the two passwords differ", "password")
    return first


def users_command(database_url: str, args: argparse.Namespace) -> int:
    from api.auth import AuthError, add_user, disable_user, list_user_rows
    from lamplighter.schema import migrate

    with connect(database_url, autocommit=True) as conn:
        migrate(conn)
        if args.users == "list":
            print(f"{'name':<24} {'role':<9} {'crew':<16} lang login disabled")
            for name, role, crew, lang, can_login, disabled in list_user_rows(conn):
                login, off = "yes" if can_login else "no", "yes" if disabled else ""
                print(f"{name:<24} {role:<9} {crew:<16} {lang:<4} {login:<5} {off}")
            return 0
        if args.users == "disable":
            if not disable_user(conn, args.name):
                raise LamplighterError(f"user {args.name!r} does not exist", "name", kind="not_found")
            print(f"{args.name} disabled; its tokens are revoked")
            return 0
        password = _ask_password() if args.password else None
        try:
            user, token = add_user(
                conn, args.name, args.role, crew=args.crew, password=password, lang=args.lang, replace=args.replace
            )
        except AuthError as exc:
            raise LamplighterError(str(exc), exc.field) from None
    crew = f" of crew {user.crew}" if user.crew else ""
    print(f"user {user.name} ({user.role}{crew}) {'reset' if args.replace else 'added'}")
    print(f"API token (shown once; send it as 'Authorization: Bearer <token>'):\n{token}")
    return 0


def _run_dispatcher(settings: Settings, ep: Any, args: argparse.Namespace) -> None:
    import datetime as dt

    from alerts.dispatch import Dispatcher, MqttTransport, NotifyTransport, Transport, WebhookTransport
    from gateway.command_link import CommandLink
    from kernel.database import Database

    async def run() -> None:
        link = CommandLink(
            ep.as_("lamplighter-commands"), f"{settings.gateway_client_id}-dispatch-{os.getpid()}", acks=False
        )
        transports: dict[str, Transport] = {
            "webhook": WebhookTransport(allow_private=settings.delivery_allow_private),
            "notify": NotifyTransport(allow_private=settings.delivery_allow_private),
            "mqtt": MqttTransport(link.send),
        }
        db = Database(ep.database_url, name="lamplighter-dispatch")
        dispatcher = Dispatcher(
            db,
            transports,
            batch=args.batch,
            lease=dt.timedelta(seconds=args.lease_s),
            max_attempts=settings.delivery_max_attempts,
            max_age=dt.timedelta(hours=settings.delivery_max_age_h),
        )
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: its terminal closed
            loop.add_signal_handler(sig, task.cancel)
        logger.info("dispatcher delivering the outbox of %s", shown(ep.database_url))
        link_task = asyncio.create_task(link.run(), name="outbound-link")
        try:
            async with db:
                with contextlib.suppress(asyncio.CancelledError):
                    await dispatcher.run()
        finally:
            link_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await link_task
        logger.info(
            "dispatcher stopped: %d delivered, %d failed attempts", dispatcher.delivered, dispatcher.failed_attempts
        )

    asyncio.run(run())


def _clock_argv(args: argparse.Namespace) -> list[str]:
    if getattr(args, "clock_start", None) is None:
        return []
    return ["--clock-start", args.clock_start, "--clock-speed", str(args.clock_speed)]


def _give_way(nice: int) -> None:
    """Lower this process's CPU priority to `nice`. On Linux each thread has its own and new ones take their
    creator's, so every thread running now is lowered too."""
    if nice <= os.getpriority(os.PRIO_PROCESS, 0):
        return
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # no /proc: the calling thread, and the threads it starts from now on
        threads = [0]
    for tid in threads:
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.setpriority(os.PRIO_PROCESS, tid, max(nice, os.getpriority(os.PRIO_PROCESS, tid)))
    logger.info("gateway at nice %d (gateway_nice): on a shared machine the API and PostgreSQL go first", nice)


def _run_gateway(settings: Settings, ep: Any, clock: Clock) -> None:
    from prometheus_client import start_http_server

    from lamplighter.runtime import GatewayProcess

    _give_way(settings.gateway_nice)
    proc = GatewayProcess.start(settings, ep, clock=clock)
    start_http_server(settings.metrics_port, addr="127.0.0.1", registry=proc.metrics.registry)
    logger.info("gateway metrics at http://127.0.0.1:%d/metrics", settings.metrics_port)
    quiet_collector()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: its terminal closed
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await proc.run()

    asyncio.run(run())
    logger.info("gateway stopped: %s", proc.gateway.stats)

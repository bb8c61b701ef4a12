"""The `lamplighter simulate` and `lamplighter inject` commands: simulated field devices against the broker, and
faults (or wear) injected into a running simulator."""

from __future__ import annotations

import argparse
import signal
import time
from typing import Any

from kernel.clock import Clock
from kernel.database import connect
from lamplighter.config import LamplighterError
from lamplighter.services import ServiceError

__all__ = ["inject_command", "simulate_command"]


def _degradation(args: argparse.Namespace, lamp_ids: list[str]) -> Any:
    from simulator.degradation import Degradation, Rates

    if args.degradation == "none" and args.truth is None:
        return None
    rates = Rates() if args.degradation == "realistic" else Rates.zero()
    return Degradation(len(lamp_ids), seed=args.degradation_seed, rates=rates, truth=args.truth, lamp_ids=lamp_ids)


def simulate_command(ep: Any, args: argparse.Namespace, clock: Clock) -> None:
    from lamplighter.devices import device_logins
    from simulator.fleet import Fleet, FleetSpec
    from simulator.runner import Simulator

    with connect(ep.database_url) as conn:
        spec = FleetSpec.from_db(conn)
    if not spec.lamp_id:
        raise ServiceError("the inventory is empty: run `lamplighter seed` first")
    from lamplighter.simcontrol import ScheduleControl

    fleet = Fleet(
        spec,
        interval_s=args.interval,
        jitter=args.jitter,
        seed=args.seed,
        failure_rate_per_day=args.failure_rate,
        start_ms=clock.now_ms(),
        control=ScheduleControl(ep.database_url, spec.lamp_id),
        degradation=_degradation(args, spec.lamp_id),
    )
    commands = None
    if not args.no_commands:
        from simulator.commands import DeviceCommands

        commands = DeviceCommands(
            fleet,
            broker=ep.as_("lamplighter-headend"),
            client_id=f"{args.client_prefix}-commands",
            ack_latency_s=args.ack_latency,
            unreachable=args.unreachable,
            failing=args.failing,
            seed=args.seed,
            # One connection per device: each reads its own commands; the shared client only fault injections.
            shared_subscription=not args.per_device,
        )
        commands.wait_ready()
    sim = Simulator(
        fleet,
        broker=ep.as_("lamplighter-headend"),
        clock=clock,
        device_login=device_logins(ep) if args.per_device else None,
        connections=args.connections,
        per_device=args.per_device,
        commands=commands,
        client_prefix=args.client_prefix,
    )
    signal.signal(signal.SIGTERM, lambda *_: sim.stop())
    last = [time.monotonic(), 0]

    def progress(stats: Any) -> None:
        now = time.monotonic()
        if not args.quiet and now - last[0] >= 5:
            rate = (stats.messages - last[1]) / (now - last[0])
            broker = ""
            if stats.held or stats.reconnects or stats.dropped:
                broker = (
                    f", broker: {stats.held:,} reports kept, {stats.reconnects} reconnects, {stats.dropped:,} dropped"
                )
            print(
                f"simulator {clock.now().isoformat(timespec='seconds')}: {stats.messages:,} messages "
                f"({rate:,.0f}/s), {stats.lamp_readings:,} lamp readings, {stats.failed_lamps:,} failed lamps{broker}",
                flush=True,
            )
            last[:] = [now, stats.messages]

    try:
        sim.run(duration_s=args.duration, on_tick=progress)
    except KeyboardInterrupt:
        pass
    finally:
        sim.close()
    print(f"simulator stopped: {sim.stats.messages:,} messages, {sim.stats.lamp_readings:,} lamp readings")


def inject_command(ep: Any, args: argparse.Namespace) -> None:
    """Publish a fault injection to the running simulator (`lamplighter simulate` or the demo's)."""
    import json

    from simulator.commands import FAULTS_TOPIC

    order: dict[str, Any]
    if args.action in ("cut", "restore"):
        if len(args.what) != 2 or not args.what[1].isdigit():
            raise LamplighterError(f"{args.action} takes a cabinet id and a circuit number, got {' '.join(args.what)}")
        order = {args.action: {"cabinet": args.what[0], "circuit": int(args.what[1])}}
    else:
        order = {args.action: args.what}
        if args.action == "fail":
            order["code"] = args.code
        if args.action == "degrade":
            order |= {"mode": args.mode, "lifetime": args.lifetime}
    ep.as_("lamplighter-simcontrol").publish_once(FAULTS_TOPIC, json.dumps(order), qos=1)
    if args.action in ("cut", "restore"):
        cabinet, circuit = args.what
        done = {"cut": "cut", "restore": "restored"}[args.action]
        print(f"the simulator was told: circuit {circuit} of cabinet {cabinet} {done}")
    else:
        verb = {
            "fail": f"fail (code {args.code})",
            "repair": "be repaired",
            "leak": "leak",
            "degrade": f"start wearing out ({args.mode})",
        }[args.action]
        print(f"the simulator was told: {', '.join(args.what)} to {verb}")

"""`lamplighter bench …`: the benchmarks' subcommands, declared here beside them and handed to the command line.
Each prints its figures and asserts nothing (docs/benchmarks.md gives the current ones with their commands)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lamplighter.config import Settings

__all__ = ["add_bench_parser", "run_bench"]


def add_bench_parser(sub: Any) -> None:
    """The `bench` command and its subcommands, on the command line's subparsers."""
    p = sub.add_parser("bench", help="benchmarks (print figures, assert nothing)")
    bsub = p.add_subparsers(dest="bench", required=True)
    b = bsub.add_parser("ingest", help="publish at full speed through a private broker into the gateway")
    b.add_argument("--lamps", type=int, default=110_000)
    b.add_argument("--messages", type=int, default=500_000)
    b.add_argument("--publishers", type=int, default=2, help="publisher processes")
    b.add_argument("--gateways", type=int, default=1, help="gateway processes sharing the districts")
    b.add_argument("--runs", type=int, default=3, help="interleaved runs (relay ceiling, then gateway) for medians")
    b = bsub.add_parser("alerts", help="fault rules over a generated city, and the tickets of a district blackout")
    b.add_argument("--lamps", type=int, default=1_000_000)
    b = bsub.add_parser("api", help="/lighting-rate and /tickets latency, idle and while the gateway ingests flat out")
    b.add_argument("--lamps", type=int, default=110_000)
    b.add_argument("--messages", type=int, default=1_000_000, help="lamp reports published during the timing")
    b.add_argument("--publishers", type=int, default=2, help="publisher processes")
    b.add_argument("--clients", type=int, default=20, help="control-room clients polling the API")
    b.add_argument("--every", type=float, default=1.0, help="seconds between one client's rounds of both calls")
    b = bsub.add_parser("map", help="the control room's map in headless Chromium: first render, redraws, sizes")
    b.add_argument("--lamps", type=int, default=1_000_000)
    b.add_argument("--pages", type=int, default=3, help="fresh pages signed in one after another, for the median")
    b = bsub.add_parser("campaign", help="a whole-city command at the default pace to simulated devices")
    b.add_argument("--lamps", type=int, default=110_000)
    b.add_argument("--gateways", type=int, default=1, help="gateways (one leads and sends the commands)")
    b = bsub.add_parser("faults", help="poison, SIGKILLs, a broker restart and many viewers, counted")
    b.add_argument("--lamps", type=int, default=110_000)
    b.add_argument("--messages", type=int, default=300_000, help="lamp reports streamed during the SIGKILLs")
    b.add_argument("--kills", type=int, default=10, help="SIGKILLs of the gateway at random points")
    b.add_argument("--streams", type=int, default=200, help="live ticket streams held open on the API")
    b = bsub.add_parser("provision", help="broker accounts for a generated city, and Mosquitto loading them")
    b.add_argument("--lamps", type=int, default=110_000)
    b.add_argument("--singles", action="store_true", help="every lamp a device of its own (no concentrators)")
    b = bsub.add_parser("energy", help="a night's energy for every lamp and cabinet, computed from its readings")
    b.add_argument("--lamps", type=int, default=110_000)
    b = bsub.add_parser("storage", help="bytes per lamp reading raw and compact, and a lamp's day read back")
    b.add_argument("--lamps", type=int, default=110_000)
    b.add_argument("--days", type=int, default=3, help="whole days of readings, ending yesterday")
    b = bsub.add_parser("predict", help="failure forecasts in a time-split backtest, against fixed thresholds")
    b.add_argument("--lamps", type=int, default=110_000)
    b.add_argument("--days", type=int, default=240, help="days of history generated")
    b.add_argument("--split", type=int, default=170, help="the day training ends and the test period begins")
    b.add_argument("--every", type=int, default=3, help="days between training samples of every lamp")
    b.add_argument("--nightly-lamps", type=int, default=1_000_000, help="lamps of the timed nightly run")
    b = bsub.add_parser("rate", help="lighting-rate recompute and fleet-state updates over a generated city")
    b.add_argument("--lamps", type=int, default=1_000_000)
    b.add_argument("--repeats", type=int, default=30, help="recomputes to take the median of")


def run_bench(args: argparse.Namespace, settings: Settings) -> int:
    """Run the benchmark `args.bench` names; its exit status."""
    if args.bench == "alerts":
        from bench.alerts import run_alerts_bench

        return run_alerts_bench(settings, lamps=args.lamps)
    if args.bench == "api":
        from bench.api import run_api_bench

        return run_api_bench(
            settings,
            lamps=args.lamps,
            messages=args.messages,
            publishers=args.publishers,
            clients=args.clients,
            every_s=args.every,
        )
    if args.bench == "map":
        from bench.map import run_map_bench

        return run_map_bench(settings, lamps=args.lamps, pages=args.pages)
    if args.bench == "campaign":
        from bench.campaign import run_campaign_bench

        return run_campaign_bench(settings, lamps=args.lamps, gateways=args.gateways)
    if args.bench == "faults":
        from bench.faults import run_faults_bench

        return run_faults_bench(
            settings, lamps=args.lamps, messages=args.messages, kills=args.kills, streams=args.streams
        )
    if args.bench == "provision":
        from bench.provision import run_provision_bench

        return run_provision_bench(lamps=args.lamps, singles=args.singles)
    if args.bench == "energy":
        from bench.energy import run_energy_bench

        return run_energy_bench(settings, lamps=args.lamps)
    if args.bench == "storage":
        from bench.storage import run_storage_bench

        return run_storage_bench(settings, lamps=args.lamps, days=args.days)
    if args.bench == "predict":
        from bench.predict import run_predict_bench

        return run_predict_bench(
            lamps=args.lamps, days=args.days, split=args.split, every=args.every, nightly_lamps=args.nightly_lamps
        )
    if args.bench == "rate":
        from bench.rate import run_rate_bench

        return run_rate_bench(lamps=args.lamps, repeats=args.repeats)
    from bench.ingest import run_ingest_bench

    return run_ingest_bench(
        settings,
        lamps=args.lamps,
        messages=args.messages,
        publishers=args.publishers,
        gateways=args.gateways,
        runs=args.runs,
    )

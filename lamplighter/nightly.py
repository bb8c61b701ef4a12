"""The nightly jobs' commands: `lamplighter summarise` (each lamp's day summed up) and `lamplighter forecast`
(failure forecasts), both safe to stop and run again."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from kernel.database import connect
from lamplighter.config import LamplighterError

__all__ = ["forecast_command", "summarise_command"]


def summarise_command(database_url: str, args: argparse.Namespace) -> int:
    """Summarise the days of readings that have no summary yet (telemetry.daily); safe to stop and rerun."""
    from telemetry.daily import summarise_days

    if args.back_days < 1:
        raise LamplighterError("--back-days must be 1 or more")
    before = args.before or datetime.now(UTC).date()
    with connect(database_url) as conn:
        report = summarise_days(conn, before=before, back_days=args.back_days)
    if not report.days:
        print(f"daily summaries: nothing to summarise before {before}")
    else:
        print(
            f"daily summaries: {report.readings:,} readings of {len(report.days)} days ({report.days[0]} to "
            f"{report.days[-1]}) summed up into {report.lamp_days:,} lamp-days in {report.seconds:.1f} s"
        )
    return 0


def forecast_command(database_url: str, args: argparse.Namespace) -> int:
    """Retrain the forecast when due and score every lamp for the night (forecast.nightly)."""
    from forecast.nightly import ForecastError, nightly

    day = args.day or datetime.now(UTC).date()
    try:
        with connect(database_url) as conn:
            report = nightly(conn, day, retrain=args.retrain)
    except ForecastError as exc:  # a new city: no failures to learn from yet, no summaries yet
        print(f"forecast {day}: not run: {exc}")
        return 0
    trained = f"model {report.trained} trained, " if report.trained else ""
    print(
        f"forecast {day}: {trained}{report.lamps:,} lamps scored with model {report.model_id} in "
        f"{report.seconds:.1f} s, {report.at_risk:,} at risk"
    )
    return 0

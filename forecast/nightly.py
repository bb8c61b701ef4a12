"""The forecast's nightly run against the city's own database: retrain on a schedule, score every lamp.

`train`: from the daily summaries (`telemetry.daily`) of the last `history_days` and the failure tickets
(`alerts.queries.lamp_failures`) opened in them, a model (`forecast.backtest.fit_tuned`) of every lamp that failed
and a sample of the others (at most `max_lamps`: memory stays bounded whatever the city's size), stored in
`forecast_models`. `run`: the newest model scores every lamp in service on its last 29 days, 50,000 lamps at a
time (but those with a failure ticket waiting for a crew: the failure is there), and writes the lamps at some risk to
`lamp_forecasts`; a lamp is flagged at risk when its risk stayed over
the model's threshold on this night and the two before (`forecast.backtest.PERSIST`). `nightly` does both: a new
model when there is none or the newest is `retrain_days` old.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from alerts.queries import lamp_failures, waiting_faults
from forecast.backtest import PERSIST, Failures, fit_tuned
from forecast.features import WINDOW, features
from forecast.model import FAULT_MODE, MODES, Forecaster
from inventory.queries import lamp_numbers
from kernel.database import empty_tables
from telemetry.daily import first_summary_day, read_day_table

__all__ = [
    "ForecastError",
    "NightlyReport",
    "forget_inventory",
    "latest_forecasts",
    "nightly",
    "run",
    "store_model",
    "train",
]

logger = logging.getLogger(__name__)

HORIZON = 30
_KEEP_RISK = 0.05  # lamps scored at least this are kept for the night
_CHUNK = 50_000


class ForecastError(Exception):
    """The forecast cannot run: what is missing, said plainly."""


@dataclass
class NightlyReport:
    day: dt.date
    trained: int | None = None  # the new model's id
    model_id: int | None = None
    lamps: int = 0
    at_risk: int = 0
    seconds: float = 0.0


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def train(
    conn: psycopg.Connection,
    today: dt.date,
    *,
    history_days: int = 240,
    max_lamps: int = 40_000,
    seed: int = 1,
) -> int:
    """Train a model on what the city knows by `today`; returns its id. Raises ForecastError when there is too
    little to learn from (too few days of summaries, no failures)."""
    first = today - dt.timedelta(days=history_days)
    lamps = lamp_numbers(conn)
    no_of = {lamp_id: no for no, lamp_id, _ in lamps}
    failures = [(no_of[i], f, o.astimezone(dt.UTC).date()) for i, f, o in
                lamp_failures(conn, list(FAULT_MODE), _day_start(first)) if i in no_of]  # fmt: skip
    if not failures:
        raise ForecastError(f"no lamp failure tickets since {first}: nothing to learn from yet")
    oldest = first_summary_day(conn, first)
    if oldest is None:
        raise ForecastError("no daily summaries yet (`lamplighter summarise`)")
    first = max(first, oldest)
    rng = np.random.default_rng(seed)
    failed = sorted({no for no, _, _ in failures})
    others = np.setdiff1d(np.array([no for no, _, _ in lamps], dtype=np.int64), failed)
    room = max(max_lamps - len(failed), 0)
    sample = rng.choice(others, size=min(room, len(others)), replace=False) if room else others[:0]
    chosen = np.sort(np.concatenate([np.array(failed, dtype=np.int64), sample]))
    table = read_day_table(conn, first, today - dt.timedelta(days=1), chosen.tolist())
    rated = {no: w for no, _, w in lamps}
    rated_w = np.array([rated[int(no)] for no in chosen.tolist()], dtype=np.float32)
    row_of = {int(no): i for i, no in enumerate(chosen.tolist())}
    known = Failures.of([(row_of[no], fault, (day - first).days) for no, fault, day in failures
                         if no in row_of and day >= first])  # fmt: skip
    try:
        model = fit_tuned(table, rated_w, known, known_until=table.days, horizon=HORIZON, seed=seed)
    except ValueError as exc:
        raise ForecastError(f"cannot train yet: {exc}") from None
    model_id = store_model(conn, model, today)
    logger.info("forecast: model %d trained on %d lamps, %s", model_id, len(chosen), model.facts.get("held_out"))
    return model_id


def store_model(conn: psycopg.Connection, model: Forecaster, known_until: dt.date) -> int:
    """Keep a trained model as the newest (one trained here, or elsewhere on a reference fleet's history to start
    a new city with); its id."""
    found = conn.execute(
        "INSERT INTO forecast_models (known_until, horizon_days, threshold, facts, model) "
        "VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (known_until, model.horizon, model.threshold, Jsonb(_plain(model.facts)), model.to_bytes()),
    ).fetchone()
    conn.commit()
    assert found is not None
    return int(found[0])


def _plain(v: Any) -> Any:
    """JSON-ready: numpy numbers as Python's."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _latest_model(conn: psycopg.Connection) -> tuple[int, dt.date, Forecaster] | None:
    row = conn.execute("SELECT id, known_until, model FROM forecast_models ORDER BY id DESC LIMIT 1").fetchone()
    return (int(row[0]), row[1], Forecaster.from_bytes(bytes(row[2]))) if row else None


def run(
    conn: psycopg.Connection, today: dt.date, *, progress: Callable[[int, int], None] | None = None
) -> NightlyReport:
    """Score every lamp in service with the newest model for the night before `today`; raises ForecastError
    without a model."""
    found = _latest_model(conn)
    if found is None:
        raise ForecastError("no forecast model yet: one is trained once there are failures to learn from")
    model_id, _, model = found
    started = time.monotonic()
    report = NightlyReport(day=today, model_id=model_id)
    first = today - dt.timedelta(days=WINDOW + 1)
    last = today - dt.timedelta(days=1)
    everyone = lamp_numbers(conn)
    ticketed = waiting_faults(conn, "lamp", [lamp_id for _, lamp_id, _ in everyone])
    # Lamps with a failure ticket waiting for a crew: the failure is there, nothing to foresee.
    lamps = [lamp for lamp in everyone if not set(ticketed.get(lamp[1], ())) & set(FAULT_MODE)]
    conn.execute("DELETE FROM lamp_forecasts WHERE day = %s", (today,))
    for start in range(0, len(lamps), _CHUNK):
        part = lamps[start : start + _CHUNK]
        nos = [no for no, _, _ in part]
        table = read_day_table(conn, first, last, nos)
        x = features(table, WINDOW, np.array([w for _, _, w in part], dtype=np.float32))
        p = model.predict(x)
        before = {
            int(no)
            for (no,) in conn.execute(
                "SELECT lamp_no FROM lamp_forecasts WHERE day >= %s AND day < %s AND risk >= %s "
                "AND lamp_no = ANY(%s) GROUP BY lamp_no HAVING count(*) = %s",
                (today - dt.timedelta(days=PERSIST - 1), today, model.threshold, nos, PERSIST - 1),
            )
        }
        over = p["risk"] >= model.threshold
        flagged = over & np.fromiter((no in before for no in nos), dtype=bool, count=len(nos))
        keep = np.flatnonzero((p["risk"] >= _KEEP_RISK) | flagged)
        with (
            conn.cursor() as cur,
            cur.copy("COPY lamp_forecasts (day, lamp_no, risk, mode, lo_days, hi_days, at_risk) FROM STDIN") as cp,
        ):
            for i in keep.tolist():
                cp.write_row((today, nos[i], float(p["risk"][i]), MODES[int(p["mode"][i])],
                              float(p["lo_days"][i]), float(p["hi_days"][i]), bool(flagged[i])))  # fmt: skip
        report.lamps += len(nos)
        report.at_risk += int(flagged.sum())
        if progress is not None:
            progress(report.lamps, len(lamps))
    report.seconds = time.monotonic() - started
    conn.execute(
        "INSERT INTO forecast_runs (day, model_id, lamps, at_risk, seconds) VALUES (%s, %s, %s, %s, %s) "
        "ON CONFLICT (day) DO UPDATE SET model_id = EXCLUDED.model_id, lamps = EXCLUDED.lamps, "
        "at_risk = EXCLUDED.at_risk, seconds = EXCLUDED.seconds, ran_at = now()",
        (today, model_id, report.lamps, report.at_risk, report.seconds),
    )
    conn.commit()
    return report


def nightly(conn: psycopg.Connection, today: dt.date, *, retrain_days: int = 7, retrain: bool = False) -> NightlyReport:
    """Retrain when the newest model is `retrain_days` old (or there is none, or `retrain`), then score."""
    found = _latest_model(conn)
    trained = None
    if retrain or found is None or (today - found[1]).days >= retrain_days:
        try:
            trained = train(conn, today)
        except ForecastError as exc:
            if found is None:
                raise
            logger.warning("forecast: keeping model %d: %s", found[0], exc)
    report = run(conn, today)
    report.trained = trained
    return report


def latest_forecasts(
    conn: psycopg.Connection,
    *,
    lamps: Sequence[int] | None = None,
    mode: str | None = None,
    within_days: float | None = None,
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The newest run (day, model, lamps, at risk, its model's threshold and held-out figures) and its lamps at risk,
    riskiest first, filtered to `lamps` (numbers), a `mode` and a failure window opening `within_days`."""
    run_row = conn.execute(
        "SELECT r.day, r.model_id, r.lamps, r.at_risk, r.ran_at, m.threshold, m.facts -> 'held_out', m.known_until "
        "FROM forecast_runs r JOIN forecast_models m ON m.id = r.model_id ORDER BY r.day DESC LIMIT 1"
    ).fetchone()
    if run_row is None:
        return None, []
    keys = ("day", "model_id", "lamps", "at_risk", "ran_at", "threshold", "held_out", "model_known_until")
    head = dict(zip(keys, run_row, strict=True))
    where, args = ["day = %s", "at_risk"], [head["day"]]
    if lamps is not None:
        where.append("lamp_no = ANY(%s)")
        args.append(list(lamps))
    if mode is not None:
        where.append("mode = %s")
        args.append(mode)
    if within_days is not None:
        where.append("lo_days <= %s")
        args.append(within_days)
    rows = conn.execute(
        f"SELECT lamp_no, risk, mode, lo_days, hi_days FROM lamp_forecasts WHERE {' AND '.join(where)} "
        "ORDER BY risk DESC, lamp_no",
        args,
    ).fetchall()
    items = [{"lamp_no": int(n), "risk": round(float(r), 3), "mode": m, "window_days": [round(lo, 1), round(hi, 1)]}
             for n, r, m, lo, hi in rows]  # fmt: skip
    return head, items


def forget_inventory(conn: psycopg.Connection) -> dict[str, int]:
    """Empty the forecasts and the models: they name lamps by number, and learned from a city being replaced."""
    return empty_tables(conn, ("lamp_forecasts", "forecast_runs", "forecast_models"), counted=("lamp_forecasts",))

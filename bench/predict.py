"""`lamplighter bench predict`: how well the failure forecast foresees failures, in a time-split backtest.

1. A city of `--lamps` lamps over `--days` days of daily summaries (`simulator.days`: the degradation physics a
   day at a time, what `telemetry.daily` would compute from the readings), degradations starting at the rates of
   `simulator.degradation.Rates` (docs/forecast.md states them). From the split day on, degradations are drawn
   from other lifetimes (drivers faster and more spread, water faster, relays and photocells slower): the test
   period is not the training period.
2. The forecaster (`forecast.model.Forecaster`) is trained on samples of every lamp every `--every` days up to
   the split less the horizon, labelled by the failure tickets known at the split, negatives subsampled.
3. Every lamp is scored every day of the test period, as the nightly run would; alerts are judged against the
   failure tickets (`forecast.backtest.judge`); the same for the fixed-threshold baseline.
4. The nightly run's cost: features and scores for `--nightly-lamps` lamps, 50,000 at a time, on one core.

Prints a table and, as its last line, one JSON object. Asserts nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import resource
import sys
import time
from typing import Any

import numpy as np

from forecast.backtest import Failures, baseline_at_risk, fit_tuned, judge, persistent, score
from forecast.features import WINDOW, features
from forecast.model import MODES
from forecast.nightly import HORIZON
from simulator.days import CityDays, generate_days
from simulator.degradation import Lifetimes

__all__ = ["TEST_LIFETIMES", "run_predict_bench"]

# The test period's degradations, unlike the training period's (`Lifetimes()`): drivers die sooner and less alike,
# water gets in faster, relays and photocells last longer.
TEST_LIFETIMES = Lifetimes(
    driver=(30.0, 0.5), water=(14.0, 0.5), relay=(50.0, 0.45), photocell=(40.0, 0.45), lumen=(300.0, 0.3)
)
_CHUNK = 50_000


def _nightly(lamps: int, seed: int) -> tuple[float, float]:
    """Seconds and peak MB of a nightly run over `lamps` lamps, 50,000 at a time, with a model trained on a small
    city (the cost is the features and the scoring, not the model's quality)."""
    small = generate_days(20_000, dt.date(2026, 1, 1), 150, seed=seed + 1)
    model = fit_tuned(small.table, small.rated_w, Failures.of(_tickets(small)), known_until=150, horizon=HORIZON)
    total = 0.0
    for start in range(0, lamps, _CHUNK):
        k = min(_CHUNK, lamps - start)
        chunk = generate_days(k, dt.date(2026, 1, 1), WINDOW + 1, seed=seed + 100 + start, lamp_no_start=start + 1)
        started = time.perf_counter()
        model.predict(features(chunk.table, WINDOW, chunk.rated_w))
        total += time.perf_counter() - started
    return total, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _tickets(city: CityDays) -> list[tuple[int, str, int]]:
    return [(t.lamp, t.fault, t.day) for t in city.tickets]


def run_predict_bench(*, lamps: int, days: int, split: int, every: int, nightly_lamps: int, seed: int = 7) -> int:
    if not WINDOW + HORIZON < split < days - HORIZON:
        print(f"the split ({split}) must leave {WINDOW + HORIZON} days before it and {HORIZON} after", file=sys.stderr)
        return 2
    # The nightly run first, so that its peak memory is its own (the backtest's city below holds every day).
    night_s, peak_mb = _nightly(nightly_lamps, seed)
    print(f"a nightly run over {nightly_lamps:,} lamps (features and scores, 50,000 at a time, one core): "
          f"{night_s:.1f} s, peak {peak_mb:.0f} MB for the process")  # fmt: skip
    t0 = time.perf_counter()
    city = generate_days(lamps, dt.date(2026, 1, 1), days, seed=seed, later=(split, TEST_LIFETIMES))
    gen_s = time.perf_counter() - t0
    onsets = [e for e in city.truth if e["event"] == "onset"]
    failed = [e for e in city.truth if e["event"] == "failure"]
    print(f"city: {lamps:,} lamps, {days} days ({gen_s:.1f} s): {len(onsets):,} degradations began, "
          f"{len(failed):,} ended in failure, {len(city.tickets):,} failure tickets")  # fmt: skip
    by_mode = {m: sum(1 for e in failed if e["mode"] == m) for m in ("driver", "water", "relay", "photocell", "lumen")}
    print("  failures by mode: " + ", ".join(f"{m} {n:,}" for m, n in by_mode.items()))

    # Training: what the department knew at the split.
    everything = Failures.of(_tickets(city))
    t0 = time.perf_counter()
    model = fit_tuned(city.table, city.rated_w, everything, known_until=split, horizon=HORIZON, every=every, seed=seed)
    train_s = time.perf_counter() - t0
    facts = model.facts
    print(f"trained on {facts['samples']:,} samples ({facts['failures']:,} before a failure) in {train_s:.1f} s; "
          f"threshold {model.threshold:.2f} (held-out days: {facts['held_out']})")  # fmt: skip

    # The test period, scored every day; a lamp flagged when at risk three nights in a row, for both.
    t0 = time.perf_counter()
    risk, mode, feats = score(model, city.table, city.rated_w, range(split - 2, days))
    per_day_s = (time.perf_counter() - t0) / len(risk)
    verdicts = {t: baseline_at_risk(x) for t, x in feats.items()}
    base_risk = {t: flags.astype(np.float64) for t, (flags, _) in verdicts.items()}
    base_mode = {t: mode for t, (_, mode) in verdicts.items()}
    kw: dict[str, Any] = {"n": lamps, "horizon": HORIZON, "first_day": split, "last_day": days - 1}
    ours = judge(persistent(risk, model.threshold), mode, everything, **kw)
    base = judge(persistent(base_risk, 0.5), base_mode, everything, **kw)
    lumen = sum(1 for e in failed if e["mode"] == "lumen" and e["ts"] >= _ms(split))

    print()
    print(f"{'':34}{'forecast':>12}{'baseline':>12}")
    for key, label in (("precision", "precision"), ("recall", "recall"), ("median_lead_days", "median lead, days"),
                       ("false_alarms_per_10k_lamps_week", "false alarms / 10k lamps / week"),
                       ("alerts", "alerts judged"), ("failures", "failures in the test period")):  # fmt: skip
        print(f"{label:34}{_fmt(ours[key]):>12}{_fmt(base[key]):>12}")
    print()
    print(f"{'mode':12}{'failures':>10}{'recall':>10}{'lead d':>10}{'precision':>11}  baseline recall, lead")
    for m in MODES:
        o, b = ours["per_mode"][m], base["per_mode"][m]
        print(f"{m:12}{o['failures']:>10}{_fmt(o['recall']):>10}{_fmt(o['median_lead_days']):>10}"
              f"{_fmt(o['precision']):>11}  {_fmt(b['recall'])}, {_fmt(b['median_lead_days'])}")  # fmt: skip
    print(f"{'lumen':12}{lumen:>10}{'0 (not observable)':>20}")
    print()
    print(f"scoring a day of {lamps:,} lamps: {per_day_s:.2f} s; training {train_s:.0f} s")
    result = {
        "lamps": lamps,
        "days": days,
        "split_day": split,
        "horizon_days": HORIZON,
        "precision": ours["precision"],
        "recall": ours["recall"],
        "median_lead_days": ours["median_lead_days"],
        "false_alarms_per_10k_lamps_week": ours["false_alarms_per_10k_lamps_week"],
        "baseline_precision": base["precision"],
        "baseline_recall": base["recall"],
        "baseline_median_lead_days": base["median_lead_days"],
        "baseline_false_alarms_per_10k_lamps_week": base["false_alarms_per_10k_lamps_week"],
        "per_mode": ours["per_mode"],
        "baseline_per_mode": base["per_mode"],
        "lumen_failures_unforeseeable": lumen,
        "train_seconds": round(train_s, 1),
        "score_seconds_per_day": round(per_day_s, 2),
        "nightly_lamps": nightly_lamps,
        "nightly_seconds": round(night_s, 1),
        "nightly_peak_mb": round(peak_mb),
    }
    print(json.dumps(result))
    return 0


def _ms(day: int) -> int:
    return int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1000) + day * 86_400_000


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if v < 10 else f"{v:,.1f}"
    return f"{v:,}"

"""How well a forecast foresees failures, judged the way a maintenance department would count it.

Samples (`samples_at`): every lamp on a day, its features, and the first failure ticket its lamp got in the
horizon after; lamps with a failure ticket in the last `settle_days` (failed, or just replaced) are left out, as a
nightly run leaves out lamps with an open failure ticket.

Alerts (`judge`): scored day by day, a lamp's first day at risk (`persistent`: its risk over the threshold three
nights in a row) opens an alert. The alert comes true when a failure
ticket of that lamp opens within the horizon after it (its lead: the days between); it expires, a false alarm, when
none does. A lamp at risk again after its alert closed opens a new one. Precision: alerts that came true over alerts
judged (opened early enough for their whole horizon to be seen); recall: failures foreseen (an alert at least a day
before) over failures in the judged period; false alarms per 10,000 lamps a week.

`baseline_at_risk`: the fixed thresholds a central management system would alarm on (power 5 % over the lamp's
baseline, power factor 0.04 down, leakage over 10 mA, more than 2.5 switch-ons a day, 5 minutes a day of late
burning), for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from forecast.features import FEATURES, WINDOW, features
from forecast.model import FAULT_MODE, MODES, Forecaster, Samples
from telemetry.daily import DayTable

__all__ = [
    "BASELINE_THRESHOLDS",
    "PERSIST",
    "Failures",
    "baseline_at_risk",
    "fit_tuned",
    "judge",
    "persistent",
    "samples_at",
    "score",
]


@dataclass
class Failures:
    """Failure tickets: lamp (row of the table), day index, mode (index into MODES)."""

    lamp: npt.NDArray[np.int64]
    day: npt.NDArray[np.int64]
    mode: npt.NDArray[np.int64]

    @staticmethod
    def of(tickets: Sequence[tuple[int, str, int]]) -> Failures:
        """From (lamp row, fault, day index), keeping the faults a forecast foresees."""
        kept = [(lamp, MODES.index(FAULT_MODE[fault]), day) for lamp, fault, day in tickets if fault in FAULT_MODE]
        return Failures(
            np.array([k[0] for k in kept], dtype=np.int64),
            np.array([k[2] for k in kept], dtype=np.int64),
            np.array([k[1] for k in kept], dtype=np.int64),
        )

    def next_after(self, n: int, t: int, horizon: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int8]]:
        """Per lamp: days from `t` to its first failure in (t, t + horizon] (NaN: none), and its mode (1 + index;
        0: none)."""
        sel = (self.day > t) & (self.day <= t + horizon)
        first = np.full(n, np.inf)
        np.minimum.at(first, self.lamp[sel], self.day[sel].astype(np.float64))
        mode = np.zeros(n, dtype=np.int8)
        hit = sel.copy()
        hit[sel] = self.day[sel] == first[self.lamp[sel]]
        mode[self.lamp[hit]] = self.mode[hit] + 1
        days_to = np.where(np.isfinite(first), first - t, np.nan).astype(np.float32)
        return days_to, mode

    def recent(self, n: int, t: int, settle_days: int) -> npt.NDArray[np.bool_]:
        sel = (self.day <= t) & (self.day > t - settle_days)
        out = np.zeros(n, dtype=bool)
        out[self.lamp[sel]] = True
        return out


def samples_at(
    table: DayTable,
    rated_w: npt.NDArray[np.float32],
    t: int,
    failures: Failures,
    *,
    horizon: int,
    negatives: float = 1.0,
    settle_days: int = 5,
    rng: np.random.Generator | None = None,
) -> tuple[Samples, npt.NDArray[np.int64]]:
    """Labelled samples of every lamp on day `t` (those failed lately left out), negatives kept at `negatives`
    and weighted back; also the rows of the table they came from."""
    n = len(table.lamp_no)
    x = features(table, t, rated_w)
    days_to, mode = failures.next_after(n, t, horizon)
    keep = ~failures.recent(n, t, settle_days)
    weight = np.ones(n, dtype=np.float32)
    if negatives < 1.0:
        rng = rng or np.random.default_rng(t)
        keep &= (mode > 0) | (rng.random(n) < negatives)
        weight[mode == 0] = 1.0 / negatives
    rows = np.flatnonzero(keep)
    s = Samples(x[rows], mode[rows], days_to[rows], np.full(len(rows), t, dtype=np.int32), weight[rows])
    return s, rows


# The baseline's thresholds, each with the mode it names (a driver's two signs first: the last that fires wins).
BASELINE_THRESHOLDS = (
    ("power_rise", 0.05, "driver"),
    ("pf_fall", 0.04, "driver"),
    ("starts_recent", 2.5, "relay"),
    ("late_min", 5.0, "photocell"),
    ("leakage_max", 10.0, "water"),
)


def baseline_at_risk(x: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """The fixed thresholds' verdict on feature rows: whether any fired, and the mode the one that fired names
    (the driver's where none did)."""
    flags = np.zeros(len(x), dtype=bool)
    mode = np.full(len(x), MODES.index("driver"), dtype=np.int64)
    with np.errstate(invalid="ignore"):
        for name, level, named in BASELINE_THRESHOLDS:
            fired = x[:, FEATURES.index(name)] > level
            flags |= fired
            mode[fired] = MODES.index(named)
    return flags, mode


def judge(
    at_risk: dict[int, npt.NDArray[np.bool_]],
    predicted_mode: dict[int, npt.NDArray[np.int64]],
    failures: Failures,
    *,
    n: int,
    horizon: int,
    first_day: int,
    last_day: int,
    warmup: int = 7,
    settle_days: int = 5,
) -> dict[str, Any]:
    """Alerts from `at_risk[t]` (per lamp row, on scored days t) against the failures; see the module's text.
    Alerts are judged when opened in [first_day, last_day − horizon]; failures in [first_day + warmup, last_day]."""
    days = sorted(at_risk)
    open_at = np.full(n, -1, dtype=np.int64)
    alerts: list[tuple[int, int, int]] = []  # (lamp, opened, predicted mode)
    order = np.argsort(failures.day, kind="stable")
    fail_day, fail_lamp = failures.day[order].tolist(), failures.lamp[order].tolist()
    last_fail = np.full(n, -(10**9), dtype=np.int64)
    at = 0
    for t in days:
        while at < len(fail_day) and fail_day[at] <= t:
            last_fail[fail_lamp[at]] = fail_day[at]
            at += 1
        # An alert closes when its lamp's failure came, or when its horizon passed without one.
        live = open_at >= 0
        open_at[live & ((last_fail > open_at) | (t > open_at + horizon))] = -1
        new = at_risk[t] & (open_at < 0) & (t - last_fail >= settle_days)
        idx = np.flatnonzero(new)
        open_at[idx] = t
        alerts.extend(zip(idx.tolist(), [t] * len(idx), predicted_mode[t][idx].tolist(), strict=True))
    by_lamp: dict[int, list[int]] = {}
    for lamp, day in zip(failures.lamp.tolist(), failures.day.tolist(), strict=True):
        by_lamp.setdefault(lamp, []).append(day)
    judged = [(lamp, t, m) for lamp, t, m in alerts if first_day <= t <= last_day - horizon]
    true, leads, tp_mode, fp_mode = 0, [], np.zeros(len(MODES)), np.zeros(len(MODES))
    for lamp, t, m in judged:
        ahead = [d - t for d in by_lamp.get(lamp, []) if t < d <= t + horizon]
        if ahead:
            true += 1
            leads.append(min(ahead))
            tp_mode[m] += 1
        else:
            fp_mode[m] += 1
    seen = (failures.day >= first_day + warmup) & (failures.day <= last_day)
    alert_days: dict[int, list[int]] = {}
    for lamp, t, _ in alerts:
        alert_days.setdefault(lamp, []).append(t)
    foreseen = np.zeros(int(seen.sum()), dtype=bool)
    lead_of = np.full(int(seen.sum()), np.nan)
    for k, (lamp, day) in enumerate(zip(failures.lamp[seen].tolist(), failures.day[seen].tolist(), strict=True)):
        before = [day - t for t in alert_days.get(lamp, []) if day - horizon <= t < day]
        if before:
            foreseen[k] = True
            lead_of[k] = max(before)
    weeks = max(last_day - horizon - first_day + 1, 1) / 7.0
    false_alarms = len(judged) - true
    modes = failures.mode[seen]
    per_mode = {}
    for k, name in enumerate(MODES):
        sel = modes == k
        per_mode[name] = {
            "failures": int(sel.sum()),
            "recall": round(float(foreseen[sel].mean()), 3) if sel.any() else None,
            "median_lead_days": float(np.nanmedian(lead_of[sel & foreseen])) if (sel & foreseen).any() else None,
            "alerts": int(tp_mode[k] + fp_mode[k]),
            "precision": round(float(tp_mode[k] / (tp_mode[k] + fp_mode[k])), 3) if tp_mode[k] + fp_mode[k] else None,
        }
    return {
        "alerts": len(judged),
        "true_alerts": true,
        "precision": round(true / len(judged), 3) if judged else None,
        "failures": int(seen.sum()),
        "foreseen": int(foreseen.sum()),
        "recall": round(float(foreseen.mean()), 3) if len(foreseen) else None,
        "median_lead_days": float(np.median(leads)) if leads else None,
        "false_alarms_per_10k_lamps_week": round(false_alarms / (n / 10_000) / weeks, 2),
        "per_mode": per_mode,
    }


PERSIST = 3  # nights in a row at risk before a lamp is flagged: one noisy night flags nothing


def persistent(risk: dict[int, npt.NDArray[np.float64]], threshold: float, persist: int = PERSIST) -> dict[int, Any]:
    """Per scored day, the lamps whose risk was at or over `threshold` that day and on the `persist` − 1 scored
    days before it."""
    out: dict[int, npt.NDArray[np.bool_]] = {}
    run: npt.NDArray[np.int64] | None = None
    for t in sorted(risk):
        over = risk[t] >= threshold
        run = over.astype(np.int64) if run is None else np.where(over, run + 1, 0)
        out[t] = run >= persist
    return out


def score(
    model: Forecaster, table: DayTable, rated_w: npt.NDArray[np.float32], days: range
) -> tuple[dict[int, npt.NDArray[np.float64]], dict[int, npt.NDArray[np.int64]], dict[int, npt.NDArray[np.float32]]]:
    """The model's risk and predicted mode of every lamp on each of `days`, and the features they came from."""
    risk, mode, feats = {}, {}, {}
    for t in days:
        x = features(table, t, rated_w)
        p = model.predict(x)
        risk[t], mode[t], feats[t] = p["risk"], p["mode"], x
    return risk, mode, feats


def fit_tuned(
    table: DayTable,
    rated_w: npt.NDArray[np.float32],
    failures: Failures,
    *,
    known_until: int,
    horizon: int,
    every: int = 3,
    negatives: float = 0.05,
    target_precision: float = 0.85,
    held_out_days: int = 21,
    seed: int = 1,
) -> Forecaster:
    """A forecaster trained on what is known by day `known_until` (failures before it; samples whose horizon ends
    by then), its threshold chosen the way it will be judged: a probe trained on all but the last
    `held_out_days` + horizon days alerts (persistently) over those held-out days, and the lowest threshold whose
    alerts there reach `target_precision` wins (else the best balance leaning to precision)."""
    rng = np.random.default_rng(seed)
    known = Failures(*(a[failures.day < known_until] for a in (failures.lamp, failures.day, failures.mode)))
    last = known_until - horizon
    cut = last - held_out_days
    if cut - horizon < WINDOW + every:
        raise ValueError(f"{known_until} days of history are too few to train and tune on")
    n = len(table.lamp_no)
    parts = [samples_at(table, rated_w, t, known, horizon=horizon, negatives=negatives, rng=rng)[0]
             for t in range(WINDOW, last + 1, every)]  # fmt: skip
    samples = Samples.concat(parts)
    probe = Forecaster.fit(samples.take(samples.day <= cut - horizon), horizon=horizon, seed=seed)
    risk, mode, _ = score(probe, table, rated_w, range(cut - PERSIST + 1, known_until))
    chosen: tuple[float, dict[str, Any]] | None = None
    best: tuple[float, dict[str, Any], float] = (0.5, {}, -1.0)
    curve = []
    for threshold in [*np.round(np.arange(0.05, 0.96, 0.05), 2).tolist(), 0.97, 0.98, 0.99]:
        r = judge(persistent(risk, threshold), mode, known, n=n, horizon=horizon, first_day=cut,
                  last_day=known_until - 1)  # fmt: skip
        precision, recall = r["precision"] or 0.0, r["recall"] or 0.0
        curve.append((threshold, precision, recall))
        f = 1.25 * precision * recall / (0.25 * precision + recall) if precision + recall else 0.0
        if chosen is None and precision >= target_precision and r["alerts"] > 0:
            chosen = (threshold, r)
        if f > best[2]:
            best = (threshold, r, f)
    threshold, held = chosen or best[:2]
    model = Forecaster.fit(samples, horizon=horizon, threshold=threshold, seed=seed)
    model.facts["held_out"] = {
        "days": [cut, last],
        "precision": held.get("precision"),
        "recall": held.get("recall"),
        "alerts": held.get("alerts"),
        "reached_target": chosen is not None,
        "curve": [(t, round(p, 3), round(r, 3)) for t, p, r in curve],
    }
    return model

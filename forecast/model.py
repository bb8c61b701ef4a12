"""The failure forecast's model: which lamps will fail within the horizon, of what, and when.

Learned from the fleet's own history: every lamp on a set of past days is a sample (its features that day,
`forecast.features`), labelled by the first failure ticket its lamp got in the `horizon` days after (the faults in
`FAULT_MODE`), or none. Three parts, all scikit-learn's histogram gradient boosting (missing figures taken as
missing, a million samples trained in well under a minute on one core):

- the risk: P(a failure ticket within the horizon), a binary classifier, its risk rising with every sign of wear
  (monotonic constraints); a lamp is at risk at `threshold` (chosen by `forecast.backtest.fit_tuned`);
- the mode: which failure, a classifier over the modes, trained on the samples that failed;
- the window: the 10th and 90th percentiles of the days until the failure (quantile regression on the same).

Negatives are subsampled for speed and weighted back, so the risk stays a probability.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from forecast.features import FEATURES

__all__ = ["FAULT_MODE", "MODES", "Forecaster", "Samples"]

# The failures a forecast foresees, by the fault its ticket carries. Lumen depreciation opens no ticket and shows
# in no electrical figure: no model of these data can foresee it (docs/forecast.md).
FAULT_MODE = {
    "driver_failure": "driver",
    "leakage_current": "water",
    "relay_failure": "relay",
    "day_burning": "photocell",
}
MODES = ("driver", "water", "relay", "photocell")
# The feature that says how many days a mode's trend needs to reach its failure level.
_DAYS_LEFT = {"driver": "power_days_left", "water": "leakage_days_left", "photocell": "late_days_left"}


@dataclass
class Samples:
    """Feature rows with their labels: `mode` 0 for none, else 1 + index into MODES; `days_to` the days until
    that failure (NaN for none); `day` the day index each row was taken on (for time-ordered splits)."""

    x: npt.NDArray[np.float32]
    mode: npt.NDArray[np.int8]
    days_to: npt.NDArray[np.float32]
    day: npt.NDArray[np.int32]
    weight: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.mode)

    def take(self, sel: npt.NDArray[Any]) -> Samples:
        return Samples(self.x[sel], self.mode[sel], self.days_to[sel], self.day[sel], self.weight[sel])

    @staticmethod
    def concat(parts: list[Samples]) -> Samples:
        return Samples(
            np.concatenate([p.x for p in parts]) if parts else np.zeros((0, len(FEATURES)), dtype=np.float32),
            np.concatenate([p.mode for p in parts]) if parts else np.zeros(0, dtype=np.int8),
            np.concatenate([p.days_to for p in parts]) if parts else np.zeros(0, dtype=np.float32),
            np.concatenate([p.day for p in parts]) if parts else np.zeros(0, dtype=np.int32),
            np.concatenate([p.weight for p in parts]) if parts else np.zeros(0, dtype=np.float32),
        )


# The risk can only grow with each sign of wear, and fall with more days left before a failure level: constraints
# that keep the model from learning noise, and carry it over to a period whose lamps wear at other paces.
_RISK_RISES_WITH = {
    "power_rise": 1, "power_slope": 1, "spread_rise": 1, "pf_fall": 1, "pf_slope": -1, "driver_temp_rise": 1,
    "leakage_max": 1, "leakage_rise": 1, "leakage_slope": 1, "starts_recent": 1, "starts_rise": 1,
    "late_min": 1, "late_slope": 1, "power_days_left": -1, "pf_days_left": -1, "leakage_days_left": -1,
    "late_days_left": -1,
}  # fmt: skip


def _classifier(seed: int, *, monotonic: bool = False) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(
        max_iter=150, learning_rate=0.1, max_leaf_nodes=31, min_samples_leaf=40, l2_regularization=1.0,
        early_stopping=False, random_state=seed,
        monotonic_cst=[_RISK_RISES_WITH.get(f, 0) for f in FEATURES] if monotonic else None,
    )  # fmt: skip


def _quantile(q: float, seed: int) -> HistGradientBoostingRegressor:
    return HistGradientBoostingRegressor(
        loss="quantile", quantile=q, max_iter=100, max_leaf_nodes=15, early_stopping=False, random_state=seed
    )


@dataclass
class Forecaster:
    risk: HistGradientBoostingClassifier
    mode: HistGradientBoostingClassifier | None
    lo: HistGradientBoostingRegressor | None
    hi: HistGradientBoostingRegressor | None
    threshold: float
    horizon: int
    facts: dict[str, Any] = field(default_factory=dict)  # what it was trained on, and how it did on held-out days

    @classmethod
    def fit(cls, samples: Samples, *, horizon: int, threshold: float = 0.5, seed: int = 1) -> Forecaster:
        """Train on `samples`; a lamp is at risk at `threshold` (`forecast.backtest.fit_tuned` chooses it)."""
        if len(samples) == 0 or not (samples.mode > 0).any():
            raise ValueError("no failure among the samples: nothing to learn from")
        risk = _classifier(seed, monotonic=True).fit(samples.x, samples.mode > 0, sample_weight=samples.weight)
        failed = samples.take(samples.mode > 0)
        mode = _classifier(seed).fit(failed.x, failed.mode) if len(np.unique(failed.mode)) > 1 else None
        lo = _quantile(0.1, seed).fit(failed.x, failed.days_to) if len(failed) >= 20 else None
        hi = _quantile(0.9, seed).fit(failed.x, failed.days_to) if len(failed) >= 20 else None
        facts = {
            "samples": len(samples),
            "failures": int((samples.mode > 0).sum()),
            "by_mode": {m: int((samples.mode == k + 1).sum()) for k, m in enumerate(MODES)},
            "horizon_days": horizon,
            "threshold": threshold,
            "features": list(FEATURES),
            "only_mode": int(failed.mode[0]) if mode is None else 0,
        }
        return cls(risk, mode, lo, hi, threshold, horizon, facts)

    def risk_of(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Each row's probability of a failure within the horizon."""
        if len(x) == 0:
            return np.zeros(0)
        p: npt.NDArray[np.float64] = self.risk.predict_proba(x)[:, 1]
        return p

    def predict(self, x: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[Any]]:
        """Each row's `risk` (probability of a failure within the horizon; 0 when the trend of the mode foreseen
        does not reach its failure level within it), `model_risk` (the probability alone), `at_risk` (risk ≥
        threshold), most likely `mode` (index into MODES) and window `lo_days` … `hi_days` until the failure."""
        n = len(x)
        if n == 0:
            empty = np.zeros(0)
            return {"risk": empty, "model_risk": empty, "at_risk": empty.astype(bool), "mode": empty.astype(int),
                    "lo_days": empty, "hi_days": empty}  # fmt: skip
        risk = self.risk_of(x)
        if self.mode is not None:
            mode = self.mode.predict(x).astype(int) - 1
        else:
            mode = np.full(n, int(self.facts.get("only_mode", 1)) - 1)
        # A lamp is at risk only when its own trend, extrapolated, reaches the failure level of the mode foreseen
        # within the horizon (a relay's wear has no such level): what keeps a slower wear than the fleet has known
        # from being called too early.
        left = np.full(n, -1.0)
        for k, name in enumerate(MODES):
            column = _DAYS_LEFT.get(name)
            if column is not None:
                left = np.where(mode == k, x[:, FEATURES.index(column)], left)
        gated = np.where(left <= self.horizon, risk, 0.0)
        lo = np.clip(self.lo.predict(x), 0, self.horizon) if self.lo is not None else np.zeros(n)
        hi = np.clip(self.hi.predict(x), 1, self.horizon) if self.hi is not None else np.full(n, float(self.horizon))
        return {"risk": gated, "model_risk": risk, "at_risk": gated >= self.threshold, "mode": mode, "lo_days": lo,
                "hi_days": np.maximum(hi, lo + 1)}  # fmt: skip

    def to_bytes(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def from_bytes(data: bytes) -> Forecaster:
        """A model this project stored itself (in its own database): never bytes from elsewhere."""
        model = pickle.loads(data)
        if not isinstance(model, Forecaster):
            raise ValueError("the stored forecast model is not one")
        return model

"""What energy costs and emits: an electricity tariff, flat or by time of use, and a grid emission factor.

A tariff is written as one price per kWh (`0.60`) or as local time-of-use periods that cover the day exactly once,
each `HH:MM-HH:MM=price`, separated by `;` or `,` (`08:00-22:00=0.82;22:00-08:00=0.35`; a period may run past
midnight). Boundaries fall on the quarter-hour, the finest the energy figures keep. The price of a quarter-hour
is the price of its period at its local start.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from energy.errors import EnergyError

__all__ = ["DEFAULT_CO2_KG_PER_KWH", "Tariff", "TariffError"]

# China's national average electricity CO2 emission factor for 2022, 0.5366 kg CO2 per kWh, published by the
# Ministry of Ecology and Environment and the National Bureau of Statistics on 2024-12-26 (docs/using.md,
# "Energy and savings").
DEFAULT_CO2_KG_PER_KWH: Final = 0.5366
_QUARTERS = 96
_PERIOD = re.compile(r"^\s*(\d{2}):(\d{2})\s*-\s*(\d{2}):(\d{2})\s*=\s*([0-9]+(?:\.[0-9]+)?)\s*$")


class TariffError(EnergyError):
    """A tariff that cannot be used as written; the message says which part and why."""


def _quarter(hh: str, mm: str, text: str) -> int:
    h, m = int(hh), int(mm)
    if h > 24 or m > 59 or (h == 24 and m):
        raise TariffError(f"{text!r}: {hh}:{mm} is not a time of day")
    if m % 15:
        raise TariffError(f"{text!r}: periods start and end on the quarter-hour, not at {hh}:{mm}")
    return (h * 60 + m) // 15


@dataclass(frozen=True)
class Tariff:
    """Price per kWh of each local quarter-hour of the day (96 of them)."""

    prices: tuple[float, ...]
    text: str

    @classmethod
    def parse(cls, text: str) -> Tariff:
        text = text.strip()
        try:
            flat = float(text)
        except ValueError:
            pass
        else:
            if not 0 <= flat < 1e6 or flat != flat:
                raise TariffError(f"a price per kWh is 0 or more, got {text!r}")
            return cls((flat,) * _QUARTERS, text)
        owner: list[str | None] = [None] * _QUARTERS
        prices = [0.0] * _QUARTERS
        parts = [p for p in re.split(r"[;,]", text) if p.strip()]
        if not parts:
            raise TariffError("a tariff is a price per kWh (0.60) or periods such as 08:00-22:00=0.82;22:00-08:00=0.35")
        for part in parts:
            m = _PERIOD.fullmatch(part)
            if m is None:
                raise TariffError(f"{part.strip()!r} is not a period HH:MM-HH:MM=price")
            a, b = _quarter(m[1], m[2], part), _quarter(m[3], m[4], part)
            if a == b:
                raise TariffError(f"{part.strip()!r} is empty: it starts where it ends")
            span = _QUARTERS if b - a == _QUARTERS else (b - a) % _QUARTERS  # 00:00-24:00 is the whole day
            for k in range(span):
                q = (a + k) % _QUARTERS
                if owner[q] is not None:
                    raise TariffError(f"{part.strip()!r} overlaps {owner[q]!r}")
                owner[q] = part.strip()
                prices[q] = float(m[5])
        missing = [i for i, o in enumerate(owner) if o is None]
        if missing:
            at = f"{missing[0] * 15 // 60:02d}:{missing[0] * 15 % 60:02d}"
            raise TariffError(f"the periods leave {len(missing) * 15} minutes of the day without a price, from {at}")
        return cls(tuple(prices), text)

    @property
    def flat(self) -> bool:
        return len(set(self.prices)) == 1

    def bucket_prices(self, start_ms: int, buckets: int, bucket_ms: int, tz: ZoneInfo) -> npt.NDArray[np.float64]:
        """The price of each bucket of `bucket_ms` from `start_ms`, by the local time at its start."""
        out = np.empty(buckets)
        for i in range(buckets):
            local = dt.datetime.fromtimestamp((start_ms + i * bucket_ms) / 1000, tz)
            out[i] = self.prices[(local.hour * 60 + local.minute) // 15]
        return out

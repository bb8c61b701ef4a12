"""The clock seam: real time by default, or a compressed clock so a whole night passes in minutes.

Backend and simulator given the same `start` and `speed` agree on the time within the start-up skew of the
processes, because both derive it from the wall clock at a shared origin.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from kernel.errors import Problem

__all__ = ["Clock", "night_bounds"]


@dataclass(frozen=True)
class Clock:
    """`now_ms()` in Unix epoch milliseconds. With `start`, time runs from `start` at `speed`× from `origin`."""

    start: datetime | None = None
    speed: float = 1.0
    # Wall-clock instant (epoch seconds) at which the compressed clock reads `start`; set once per process group.
    origin: float = 0.0

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise Problem(f"clock speed must be positive, got {self.speed}")
        if self.start is not None and self.start.tzinfo is None:
            raise Problem(f"clock start must carry a time zone, got {self.start.isoformat()}")
        if self.start is not None and self.origin == 0.0:
            object.__setattr__(self, "origin", time.time())

    @property
    def compressed(self) -> bool:
        return self.start is not None

    def now_ms(self) -> int:
        if self.start is None:
            return time.time_ns() // 1_000_000
        elapsed = (time.time() - self.origin) * self.speed
        return int((self.start.timestamp() + elapsed) * 1000)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_ms() / 1000, tz=UTC)


def night_bounds(night: dt.date, tz: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """The night of `night` as the rooms count it (rate, reports, energy): local noon to the next local noon."""
    return (
        dt.datetime.combine(night, dt.time(12), tz),
        dt.datetime.combine(night + dt.timedelta(days=1), dt.time(12), tz),
    )

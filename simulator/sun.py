"""Sunrise and sunset for the simulator's switching rule (NOAA's low-precision formulas, about a minute off).

The backend's schedule engine has its own solar module; this one only decides when simulated lamps switch.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

__all__ = ["is_night", "sun_times"]


def sun_times(day: date, lat: float, lon: float) -> tuple[datetime, datetime]:
    """(sunrise, sunset) in UTC for `day` at the position, using the -0.833° horizon."""
    n = day.timetuple().tm_yday
    gamma = 2 * math.pi / 365 * (n - 1)
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * math.cos(gamma)
        - 0.032077 * math.sin(gamma)
        - 0.014615 * math.cos(2 * gamma)
        - 0.040849 * math.sin(2 * gamma)
    )
    decl = (
        0.006918
        - 0.399912 * math.cos(gamma)
        + 0.070257 * math.sin(gamma)
        - 0.006758 * math.cos(2 * gamma)
        + 0.000907 * math.sin(2 * gamma)
        - 0.002697 * math.cos(3 * gamma)
        + 0.00148 * math.sin(3 * gamma)
    )
    phi = math.radians(lat)
    cos_ha = (math.cos(math.radians(90.833)) / (math.cos(phi) * math.cos(decl))) - math.tan(phi) * math.tan(decl)
    ha = math.degrees(math.acos(max(-1.0, min(1.0, cos_ha))))
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    sunrise = midnight + timedelta(minutes=720 - 4 * (lon + ha) - eqtime)
    sunset = midnight + timedelta(minutes=720 - 4 * (lon - ha) - eqtime)
    return sunrise, sunset


def is_night(t: datetime, lat: float, lon: float, *, on_offset_min: float = 10, off_offset_min: float = -10) -> bool:
    """Whether lamps on an astronomical rule (on at sunset + 10 min, off at sunrise - 10 min) are on at `t`."""
    # Local solar day: check the UTC days either side, since sunset in Xining falls around 10:00-12:00 UTC.
    for d in (t.date() - timedelta(days=1), t.date(), t.date() + timedelta(days=1)):
        _, sunset = sun_times(d, lat, lon)
        sunrise_next, _ = sun_times(d + timedelta(days=1), lat, lon)
        if sunset + timedelta(minutes=on_offset_min) <= t < sunrise_next + timedelta(minutes=off_offset_min):
            return True
    return False

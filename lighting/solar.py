"""Sunrise, sunset and civil twilight for any positions and dates: the NOAA solar equations, vectorised.

Pure numpy. The sun's declination and the equation of time follow the low-precision series of the NOAA solar
calculator (after Meeus, *Astronomical Algorithms*); each event is then refined by evaluating the sun at the
event's own time, which keeps the result within a few seconds of the calculator at the latitudes of cities.

Sunrise and sunset are the instants the sun's centre is 0.833° below the horizon (refraction plus the solar
semi-diameter, as NOAA does, with no correction for the observer's altitude); civil dawn and dusk are at 6°
below. Where an event does not happen that day (polar day or night) the result is NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["CIVIL_TWILIGHT_DEG", "SUNRISE_DEG", "SunTimes", "sun_events", "sun_times"]

FloatArray = npt.NDArray[np.float64]

SUNRISE_DEG = -0.833
CIVIL_TWILIGHT_DEG = -6.0

_J2000 = 2451545.0
_UNIX_EPOCH_JD = 2440587.5
_MS_PER_DAY = 86_400_000.0


@dataclass(frozen=True)
class SunTimes:
    """Event instants in Unix epoch milliseconds (float; NaN where the event does not occur)."""

    dawn: FloatArray
    sunrise: FloatArray
    sunset: FloatArray
    dusk: FloatArray


def _declination_and_eot(jd: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The sun's apparent declination (radians) and the equation of time (minutes) at Julian day `jd`."""
    t = (jd - _J2000) / 36525.0  # Julian centuries since J2000.0
    mean_long = np.radians(np.mod(280.46646 + t * (36000.76983 + t * 0.0003032), 360.0))
    anomaly = np.radians(357.52911 + t * (35999.05029 - 0.0001537 * t))
    ecc = 0.016708634 - t * (0.000042037 + 0.0000001267 * t)
    centre = (
        np.sin(anomaly) * (1.914602 - t * (0.004817 + 0.000014 * t))
        + np.sin(2 * anomaly) * (0.019993 - 0.000101 * t)
        + np.sin(3 * anomaly) * 0.000289
    )
    omega = np.radians(125.04 - 1934.136 * t)
    apparent_long = np.radians(np.degrees(mean_long) + centre - 0.00569 - 0.00478 * np.sin(omega))
    seconds = 21.448 - t * (46.815 + t * (0.00059 - t * 0.001813))
    obliquity = np.radians(23.0 + (26.0 + seconds / 60.0) / 60.0 + 0.00256 * np.cos(omega))
    declination = np.arcsin(np.sin(obliquity) * np.sin(apparent_long))
    y = np.tan(obliquity / 2) ** 2
    eot_rad = (
        y * np.sin(2 * mean_long)
        - 2 * ecc * np.sin(anomaly)
        + 4 * ecc * y * np.sin(anomaly) * np.cos(2 * mean_long)
        - 0.5 * y * y * np.sin(4 * mean_long)
        - 1.25 * ecc * ecc * np.sin(2 * anomaly)
    )
    return declination, 4.0 * np.degrees(eot_rad)


def _event(
    day_jd: FloatArray, lat: FloatArray, lon: FloatArray, noon_guess: FloatArray, altitude_deg: float, sign: int
) -> FloatArray:
    """Minutes after 0h UTC of `day_jd` at which the sun crosses `altitude_deg` (sign −1 rising, +1 setting)."""
    lat_r = np.radians(lat)
    sin_h0 = np.sin(np.radians(altitude_deg))
    minutes = noon_guess + sign * 360.0  # start six hours from noon, then refine at the event's own time
    with np.errstate(invalid="ignore"):
        for _ in range(3):
            decl, eot = _declination_and_eot(day_jd + minutes / 1440.0)
            noon = 720.0 - 4.0 * lon - eot
            noon += 1440.0 * np.round((noon_guess - noon) / 1440.0)
            cos_h = (sin_h0 - np.sin(lat_r) * np.sin(decl)) / (np.cos(lat_r) * np.cos(decl))
            hour_angle = np.degrees(np.arccos(cos_h))  # NaN when |cos_h| > 1: no such event that day
            minutes = noon + sign * 4.0 * hour_angle
    return minutes


def sun_events(
    lat: npt.ArrayLike,
    lon: npt.ArrayLike,
    day: npt.ArrayLike,
    *,
    utc_offset_min: npt.ArrayLike = 0,
    altitude_deg: float,
) -> tuple[FloatArray, FloatArray]:
    """(rising, setting) in epoch ms when the sun's centre crosses `altitude_deg` on local calendar day `day`.

    `day` is a `datetime64[D]` array (or anything numpy turns into one) of local dates; `utc_offset_min` the
    local time zone's offset from UTC on those dates (480 for Asia/Shanghai). All inputs broadcast together.
    """
    days = np.asarray(day, dtype="datetime64[D]")
    lat_a = np.asarray(lat, dtype=np.float64)
    lon_a = np.asarray(lon, dtype=np.float64)
    offset = np.asarray(utc_offset_min, dtype=np.float64)
    day_jd = days.astype(np.int64).astype(np.float64) + _UNIX_EPOCH_JD  # Julian day at 0h UTC of the date
    local_noon = 720.0 - offset  # local noon, in minutes after 0h UTC of the same date
    lat_a, lon_a, day_jd, local_noon = np.broadcast_arrays(lat_a, lon_a, day_jd, local_noon)
    base_ms = (day_jd - _UNIX_EPOCH_JD) * _MS_PER_DAY
    rising = _event(day_jd, lat_a, lon_a, local_noon, altitude_deg, -1)
    setting = _event(day_jd, lat_a, lon_a, local_noon, altitude_deg, +1)
    return base_ms + rising * 60_000.0, base_ms + setting * 60_000.0


def sun_times(lat: npt.ArrayLike, lon: npt.ArrayLike, day: Any, *, utc_offset_min: npt.ArrayLike = 0) -> SunTimes:
    """Civil dawn, sunrise, sunset and civil dusk (epoch ms) for positions and local dates; see `sun_events`."""
    if isinstance(day, date):
        day = np.datetime64(day, "D")
    sunrise, sunset = sun_events(lat, lon, day, utc_offset_min=utc_offset_min, altitude_deg=SUNRISE_DEG)
    dawn, dusk = sun_events(lat, lon, day, utc_offset_min=utc_offset_min, altitude_deg=CIVIL_TWILIGHT_DEG)
    return SunTimes(dawn=dawn, sunrise=sunrise, sunset=sunset, dusk=dusk)

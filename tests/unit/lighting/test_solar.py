"""Solar times against PyEphem, an independent astronomy library (VSOP87 theory, not the NOAA series)."""

from __future__ import annotations

import datetime as dt

import ephem
import numpy as np
import pytest

from lighting.solar import sun_times

XINING = (36.62, 101.78)
EVENTS = [  # (attribute, horizon for ephem, rising?)
    ("sunrise", "-0:50", True),  # 0.833°: NOAA's refraction + semi-diameter, taken at the sun's centre
    ("sunset", "-0:50", False),
    ("dawn", "-6", True),
    ("dusk", "-6", False),
]


def _ephem_events(
    lat: float, lon: float, days: np.ndarray, horizon: str, rising: bool, utc_offset_h: int
) -> np.ndarray:
    obs = ephem.Observer()
    obs.lat, obs.lon, obs.pressure, obs.elevation, obs.horizon = str(lat), str(lon), 0, 0, horizon
    sun = ephem.Sun()
    out = []
    for d in days:
        obs.date = ephem.Date(dt.datetime.fromisoformat(str(d)) - dt.timedelta(hours=utc_offset_h))
        event = obs.next_rising(sun, use_center=True) if rising else obs.next_setting(sun, use_center=True)
        out.append(event.datetime().replace(tzinfo=dt.UTC).timestamp() * 1000)
    return np.array(out)


@pytest.mark.parametrize(("attr", "horizon", "rising"), EVENTS)
def test_xining_every_day_of_a_year_within_a_minute(attr: str, horizon: str, rising: bool) -> None:
    days = np.arange(np.datetime64("2026-01-01"), np.datetime64("2027-01-01"))
    ours = getattr(sun_times(*XINING, days, utc_offset_min=480), attr)
    reference = _ephem_events(*XINING, days, horizon, rising, 8)
    worst = np.abs(ours - reference).max() / 1000
    assert worst < 60, f"{attr}: worst difference {worst:.1f} s"


def test_many_positions_at_once_and_their_local_date() -> None:
    # Vectorised over positions: a lamp 1° further west sees the sun set about 4 minutes later.
    lat = np.array([36.62, 36.62, 36.62])
    lon = np.array([101.78, 100.78, 102.78])
    st = sun_times(lat, lon, dt.date(2026, 12, 21), utc_offset_min=480)
    assert 230_000 < st.sunset[1] - st.sunset[0] < 250_000
    assert 230_000 < st.sunset[0] - st.sunset[2] < 250_000
    # Events fall on the asked local date in Asia/Shanghai: dawn before sunrise, sunset before dusk.
    local = [dt.datetime.fromtimestamp(x / 1000, dt.timezone(dt.timedelta(hours=8))) for x in st.sunrise]
    assert all(t.date() == dt.date(2026, 12, 21) for t in local)
    assert (st.dawn < st.sunrise).all() and (st.sunrise < st.sunset).all() and (st.sunset < st.dusk).all()


def test_polar_night_and_midnight_sun_have_no_events() -> None:
    st = sun_times([78.2, -78.2], [15.6, 15.6], dt.date(2026, 12, 21), utc_offset_min=60)
    assert np.isnan(st.sunrise[0]) and np.isnan(st.sunset[0])  # Svalbard in December: the sun never rises
    assert np.isnan(st.sunrise[1]) and np.isnan(st.sunset[1])  # Antarctica then: it never sets

"""Expected state: for every lamp at time t, whether it is due, at which level, or left out (window, service).

Pure numpy over a `FleetIndex` and the schedule documents by scope. Each lamp takes the most specific profile
and the most specific unexpired override; windows (planned outages, maintenance) from every scope containing
the lamp exclude it. On/off instants per lamp are computed per local night and cached, so evaluating the whole
fleet at a time t is a handful of vector comparisons.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from inventory.index import FleetIndex
from lighting.errors import LightingError
from lighting.schedules import DEFAULT_CITY_PROFILE, Profile, ScheduleDoc, minutes_of
from lighting.solar import SUNRISE_DEG, sun_events

__all__ = ["Expected", "ExpectedState", "ScopeKey", "UnknownScope"]

ScopeKey = tuple[str, str]  # (scope, key): ("city", "all"), ("district", "cd"), ("road", "17"), ...
_DAY_MS = 86_400_000


class UnknownScope(LightingError):
    """A schedule names a district, road, cabinet or lamp that is not in the inventory."""

    kind = "not_found"


@dataclass(frozen=True)
class ExpectedState:
    """Per lamp at one instant: due, level (percent), excluded (out of service or inside a window)."""

    ts_ms: int
    due: npt.NDArray[np.bool_]
    level: npt.NDArray[np.int16]
    excluded: npt.NDArray[np.bool_]


def _ms(value: dt.datetime) -> int:
    return int(value.timestamp() * 1000)


class Expected:
    """Schedules resolved over one fleet; `at(t)` evaluates them."""

    def __init__(self, index: FleetIndex, docs: Mapping[ScopeKey, ScheduleDoc], *, strict: bool = True) -> None:
        """`strict`: a document for a scope not in the inventory raises UnknownScope; otherwise it is dropped."""
        self.index = index
        self.docs = dict(docs)
        self.dropped: list[ScopeKey] = []
        self._masks: dict[ScopeKey, npt.NDArray[np.bool_] | npt.NDArray[np.intp]] = {}
        if not strict:
            for sk in list(self.docs):
                try:
                    self._lamps(*sk)
                except UnknownScope:
                    del self.docs[sk]
                    self.dropped.append(sk)
        n = index.n
        self.profiles: list[Profile] = []
        self.profile = np.zeros(n, dtype=np.int16)  # per lamp → self.profiles
        city = self.docs.get(("city", "all"))
        self.profiles.append(city.profile if city and city.profile else DEFAULT_CITY_PROFILE)
        for scope, key, doc in self._in_specificity_order():
            if doc.profile is not None and scope != "city":
                self.profiles.append(doc.profile)
                self.profile[self._lamps(scope, key)] = len(self.profiles) - 1
        self._nights: dict[tuple[int, dt.date], tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = {}
        self._merged: dict[tuple[dt.date, ...], tuple[npt.NDArray[np.float64], ...]] = {}
        self._out_of_service = ~index.in_service
        self._out_of_service.flags.writeable = False
        self._any_out_of_service = bool(self._out_of_service.any())

    def _in_specificity_order(self) -> list[tuple[str, str, ScheduleDoc]]:
        order = {"city": 0, "district": 1, "road": 2, "cabinet": 3, "lamp": 4}
        return sorted(((s, k, d) for (s, k), d in self.docs.items()), key=lambda x: (order[x[0]], x[1]))

    def _lamps(self, scope: str, key: str) -> npt.NDArray[np.bool_] | npt.NDArray[np.intp]:
        """Boolean mask (or slot array) of the lamps a scope covers."""
        cached = self._masks.get((scope, key))
        if cached is not None:
            return cached
        ix = self.index
        mask: npt.NDArray[np.bool_] | npt.NDArray[np.intp]
        try:
            if scope == "city":
                mask = np.ones(ix.n, dtype=np.bool_)
            elif scope == "district":
                mask = ix.lamp_district == ix.district_of[key]
            elif scope == "road":
                mask = ix.lamp_road == ix.road_of[int(key)]
            elif scope == "cabinet":
                mask = ix.lamp_cabinet == ix.cabinet_of[key]
            elif scope == "lamp":
                mask = np.array([ix.slot_of_id[key]], dtype=np.intp)
            else:
                raise UnknownScope(f"unknown scope {scope!r}")
        except (KeyError, ValueError):
            raise UnknownScope(f"no {scope} {key!r} in the inventory") from None
        self._masks[(scope, key)] = mask
        return mask

    # -- nights -------------------------------------------------------------------------------------------

    def _night(self, p: int, night: dt.date) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(on, off) epoch ms for the lamps of profile p, for the night that begins on local date `night`.

        Arrays cover the whole fleet (NaN for other profiles' lamps); `always` gives (−inf, +inf).
        """
        cached = self._nights.get((p, night))
        if cached is not None:
            return cached
        prof = self.profiles[p]
        ix = self.index
        lamps = self.profile == p
        on = np.full(ix.n, np.nan)
        off = np.full(ix.n, np.nan)
        exception = next((e for e in prof.exceptions if e.date == night), None)
        if exception is not None and exception.off:
            pass  # not lit this night: on and off stay NaN, so never due
        elif prof.mode == "always":
            on[lamps], off[lamps] = -np.inf, np.inf
        elif prof.mode == "fixed":
            tz = ZoneInfo(prof.timezone)
            on_min = minutes_of(prof.on_at or "", "on_at")
            off_min = minutes_of(prof.off_at or "", "off_at")
            start = dt.datetime.combine(night, dt.time(on_min // 60, on_min % 60), tz)
            end_day = night + dt.timedelta(days=1) if off_min <= on_min else night
            end = dt.datetime.combine(end_day, dt.time(off_min // 60, off_min % 60), tz)
            on[lamps], off[lamps] = _ms(start), _ms(end)
        else:  # astro: sunset of this date + offset, to sunrise of the next + offset
            tz = ZoneInfo(prof.timezone)
            offsets = []
            for d in (night, night + dt.timedelta(days=1)):
                delta = tz.utcoffset(dt.datetime.combine(d, dt.time(12)))
                offsets.append(delta.total_seconds() / 60 if delta is not None else 0.0)
            # The sun is computed once per 0.01° cell (about 1 km; sunset moves by under 3 s across one).
            lat_cell = np.round((ix.lat[lamps] + 90.0) * 100).astype(np.int64)
            lon_cell = np.round((ix.lon[lamps] + 180.0) * 100).astype(np.int64)
            cells, cell_of = np.unique(lat_cell * 100_000 + lon_cell, return_inverse=True)
            lat, lon = (cells // 100_000) / 100.0 - 90.0, (cells % 100_000) / 100.0 - 180.0
            today, tomorrow = np.datetime64(night, "D"), np.datetime64(night + dt.timedelta(days=1), "D")
            _, sunset = sun_events(lat, lon, today, utc_offset_min=offsets[0], altitude_deg=SUNRISE_DEG)
            sunrise, _ = sun_events(lat, lon, tomorrow, utc_offset_min=offsets[1], altitude_deg=SUNRISE_DEG)
            on[lamps] = sunset[cell_of] + prof.on_offset_min * 60_000
            off[lamps] = sunrise[cell_of] + prof.off_offset_min * 60_000
        if len(self._nights) > 64:
            self._nights.clear()
        self._nights[(p, night)] = (on, off)
        return on, off

    def _level(self, p: int, t: dt.datetime) -> int:
        """The profile's level at local time t: the night's exception, else the latest dimming step passed."""
        prof = self.profiles[p]
        local = t.astimezone(ZoneInfo(prof.timezone))
        night = local.date() if local.hour >= 12 else local.date() - dt.timedelta(days=1)
        exception = next((e for e in prof.exceptions if e.date == night), None)
        if exception is not None and exception.level is not None:
            return exception.level
        if not prof.steps:
            return prof.level
        # Order the clock from noon to noon, so steps after midnight come after evening ones.
        now = (local.hour * 60 + local.minute - 720) % 1440
        level = prof.level
        best = -1
        for s in prof.steps:
            at = (minutes_of(s.at, "at") - 720) % 1440
            if best < at <= now:
                best, level = at, s.level
        return level

    # -- evaluation ---------------------------------------------------------------------------------------

    def _windows(self, t: dt.datetime) -> tuple[npt.NDArray[np.float64], ...]:
        """(on, off) of the previous and the current local night for every lamp, merged over the profiles."""
        dates = tuple(t.astimezone(ZoneInfo(p.timezone)).date() for p in self.profiles)
        cached = self._merged.get(dates)
        if cached is not None:
            return cached
        n = self.index.n
        merged = tuple(np.full(n, np.nan) for _ in range(4))
        for p, local_date in enumerate(dates):
            lamps = self.profile == p
            for k, night in enumerate((local_date - dt.timedelta(days=1), local_date)):
                on, off = self._night(p, night)
                merged[2 * k][lamps] = on[lamps]
                merged[2 * k + 1][lamps] = off[lamps]
        if len(self._merged) > 8:
            self._merged.clear()
        self._merged[dates] = merged
        return merged

    def next_event(self, ts_ms: int, slots: npt.NDArray[np.intp]) -> int | None:
        """The first instant after `ts_ms` at which one of these lamps' profiles switches (None: never, `always`)."""
        v = self._switchings(ts_ms, slots)
        return int(v.min()) if len(v) else None

    def switch_times(self, ts_ms: int, slots: npt.NDArray[np.intp]) -> npt.NDArray[np.int64]:
        """Every distinct instant after `ts_ms`, through the next day, at which one of these lamps' profiles
        switches on or off, in order: one computation to answer `next_event` for many instants."""
        # Rounded up: at the announced millisecond the switching has happened.
        return np.unique(np.ceil(self._switchings(ts_ms, slots)).astype(np.int64))

    def _switchings(self, ts_ms: int, slots: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
        """The on and off instants (epoch ms) of these lamps after `ts_ms`, today's and the next day's windows."""
        t = dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)
        parts = [arr[slots] for day in (t, t + dt.timedelta(days=1)) for arr in self._windows(day)]
        v = np.concatenate(parts)
        return v[np.isfinite(v) & (v > ts_ms)]

    def at(self, ts_ms: int) -> ExpectedState:
        """Due, level and excluded for every lamp at `ts_ms` (epoch ms)."""
        ix = self.index
        t = dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)
        on0, off0, on1, off1 = self._windows(t)
        with np.errstate(invalid="ignore"):
            due = (on0 <= ts_ms) & (off0 > ts_ms)
            due |= (on1 <= ts_ms) & (off1 > ts_ms)
        levels = np.array([self._level(p, t) for p in range(len(self.profiles))], dtype=np.int16)
        level = np.full(ix.n, levels[0], dtype=np.int16) if len(levels) == 1 else levels[self.profile]
        # Overrides: the most specific unexpired one decides on/off and level.
        for scope, key, doc in self._in_specificity_order():
            o = doc.override
            if o is not None and ts_ms < _ms(o.until):
                lamps_o = self._lamps(scope, key)
                if o.on is None:
                    level[lamps_o] = o.level
                else:
                    due[lamps_o] = o.on
                    level[lamps_o] = o.level if o.on else 0
        active = [
            (scope, key)
            for (scope, key), doc in self.docs.items()
            for w in doc.windows
            if _ms(w.start) <= ts_ms < _ms(w.end)
        ]
        excluded = self._out_of_service
        if active:
            excluded = excluded.copy()
            for scope, key in active:
                excluded[self._lamps(scope, key)] = True
        if active or self._any_out_of_service:
            due &= ~excluded
        level *= due
        return ExpectedState(ts_ms=ts_ms, due=due, level=level, excluded=excluded)

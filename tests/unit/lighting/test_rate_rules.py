"""Every docs/domain.md rule of expected state and the lighting rate, table-driven over a small hand-built fleet."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lighting.expected import Expected, UnknownScope
from lighting.rate import CONDITIONS, Breakdown, Counts, breakdown, conditions, road_verdicts
from lighting.sampling import BelowTarget
from lighting.schedules import (
    DateException,
    Override,
    Profile,
    ScheduleDoc,
    ScheduleError,
    Step,
    Window,
    decode_doc,
)
from telemetry.fleet import FleetState
from tests.support.rates import CST, NIGHT, fleet, ms, report

NOON = dt.datetime(2026, 12, 1, 12, 0, tzinfo=CST)


# (case, report kwargs, report age, evaluated at, expected condition)
CASES = [
    ("lit: on, full power", {}, 60, NIGHT, "lit"),
    ("lit: no power reported", {"power": None}, 60, NIGHT, "lit"),
    ("lit: exactly 20 % of rated × dim", {"dim": 50, "power": 10.0}, 60, NIGHT, "lit"),
    ("dark: under 20 % of rated × dim", {"dim": 50, "power": 9.9}, 60, NIGHT, "dark"),
    ("dark: reports off while due", {"on": False, "dim": 0, "power": 0.0}, 60, NIGHT, "dark"),
    ("dark: on with dim 0", {"dim": 0, "power": None}, 60, NIGHT, "dark"),
    ("dark: lamp_failure", {"faults": ("lamp_failure",)}, 60, NIGHT, "dark"),
    ("dark: driver_failure", {"faults": ("driver_failure",)}, 60, NIGHT, "dark"),
    ("dark: relay_failure", {"faults": ("relay_failure",)}, 60, NIGHT, "dark"),
    ("dark: supply_loss", {"faults": ("supply_loss",)}, 60, NIGHT, "dark"),
    ("lit: a non-output fault", {"faults": ("meter_failure", "over_temperature")}, 60, NIGHT, "lit"),
    ("lit: fresh at 2 intervals + 60 s", {}, 660, NIGHT, "lit"),
    ("unknown: stale past 2 intervals + 60 s", {}, 661, NIGHT, "unknown"),
    ("off: daytime, reports off", {"on": False, "dim": 0, "power": 0.0}, 60, NOON, "off"),
    ("day_burning: daytime, on", {}, 60, NOON, "day_burning"),
    ("off: daytime, on but stale", {}, 3600, NOON, "off"),
]


@pytest.mark.parametrize(("case", "kwargs", "age_s", "at", "want"), CASES, ids=[c[0] for c in CASES])
def test_condition_of_one_lamp(case: str, kwargs: dict[str, object], age_s: int, at: dt.datetime, want: str) -> None:
    ix = fleet([("arterial", 1)])
    state = FleetState(ix)
    report(state, 0, at - dt.timedelta(seconds=age_s), **kwargs)  # type: ignore[arg-type]
    expected = Expected(ix, {}).at(ms(at))
    assert CONDITIONS[conditions(ix, state, expected)[0]] == want


def test_never_reported_is_unknown_at_night() -> None:
    ix = fleet([("arterial", 1)])
    assert CONDITIONS[conditions(ix, FleetState(ix), Expected(ix, {}).at(ms(NIGHT)))[0]] == "unknown"


def test_rate_counts_and_null_by_day() -> None:
    ix = fleet([("arterial", 50)])
    state = FleetState(ix)
    for i in range(47):
        report(state, i, NIGHT - dt.timedelta(seconds=30))
    report(state, 47, NIGHT - dt.timedelta(seconds=30), faults=("lamp_failure",))  # 48 dark; 49, 50 unknown
    b = breakdown(ix, state, Expected(ix, {}).at(ms(NIGHT)))
    row = b.city.rows()[0]
    assert (row["due"], row["lit"], row["dark"], row["unknown"], row["rate"]) == (50, 47, 1, 2, 94.0)
    assert row["meets_target"] is False and row["target"] == 98.0
    next_noon = NOON + dt.timedelta(days=1)
    day = breakdown(ix, state, Expected(ix, {}).at(ms(next_noon))).city.rows()[0]
    assert day["due"] == 0 and day["rate"] is None and day["meets_target"] is None
    assert day["day_burning"] == 0  # the night reports are stale by noon


def test_maintenance_window_leaves_lamps_out_of_both_sides() -> None:
    ix = fleet([("arterial", 10)])
    state = FleetState(ix)
    for i in range(10):
        report(state, i, NIGHT - dt.timedelta(seconds=30), on=i < 5, dim=100 if i < 5 else 0)
    window = Window("maintenance", NIGHT - dt.timedelta(hours=1), NIGHT + dt.timedelta(hours=1), "cable repair")
    docs = {("cabinet", "C000"): ScheduleDoc(windows=[window])}
    assert breakdown(ix, state, Expected(ix, docs).at(ms(NIGHT))).city.rows()[0]["due"] == 0
    # A window on five lamps only: those five dark ones leave, the rate becomes 100 %.
    docs = {("lamp", f"L{i:04d}"): ScheduleDoc(windows=[window]) for i in range(5, 10)}
    row = breakdown(ix, state, Expected(ix, docs).at(ms(NIGHT))).city.rows()[0]
    assert (row["due"], row["lit"], row["rate"]) == (5, 5, 100.0)
    # After the window ends they are due again.
    after = NIGHT + dt.timedelta(hours=1, minutes=1)
    assert breakdown(ix, state, Expected(ix, docs).at(ms(after))).city.rows()[0]["due"] == 10


def test_most_specific_schedule_wins() -> None:
    ix = fleet([("arterial", 3), ("branch", 3)])
    docs = {
        ("city", "all"): ScheduleDoc(profile=Profile(mode="astro")),
        ("district", "cd"): ScheduleDoc(profile=Profile(mode="fixed", on_at="20:00", off_at="05:00")),
        ("road", "101"): ScheduleDoc(profile=Profile(mode="fixed", on_at="19:00", off_at="23:00")),
        ("cabinet", "C001"): ScheduleDoc(profile=Profile(mode="fixed", on_at="21:00", off_at="04:00")),
        ("lamp", "L0005"): ScheduleDoc(profile=Profile(mode="always")),
    }
    e = Expected(ix, docs)
    at = lambda h, m=0: ms(dt.datetime(2026, 12, 1, h, m, tzinfo=CST))  # noqa: E731
    # Lamps 0–2: the district's fixed 20:00–05:00 beats the city's astro (which would be on by 19:00).
    assert not e.at(at(19, 30)).due[:3].any() and e.at(at(20, 0)).due[:3].all()
    # Lamps 3–4: the cabinet beats the road: off at 20:30 (road says on), on at 23:30 (road says off).
    assert not e.at(at(20, 30)).due[3:5].any() and e.at(at(23, 30)).due[3:5].all()
    # Lamp 5 is a tunnel lamp: due at noon too.
    assert e.at(at(12)).due.tolist() == [False] * 5 + [True]


def test_astro_offsets_follow_the_sun() -> None:
    ix = fleet([("arterial", 1)])
    e = Expected(ix, {("city", "all"): ScheduleDoc(profile=Profile(mode="astro", on_offset_min=10))})
    # PyEphem puts Xining's sunset on 2026-12-01 at 17:57:14 local: due from 18:07:14, so from minute 18:08.
    t = dt.datetime(2026, 12, 1, 17, 50, tzinfo=CST)
    due = [bool(e.at(ms(t + dt.timedelta(minutes=m))).due[0]) for m in range(0, 40)]
    first = due.index(True)
    assert first == 18 and all(due[first:])
    # Sunrise on 2026-12-02 at 08:07:01 local (PyEphem): off from 07:57:01.
    assert e.at(ms(dt.datetime(2026, 12, 2, 7, 50, tzinfo=CST))).due[0]
    assert not e.at(ms(dt.datetime(2026, 12, 2, 8, 0, tzinfo=CST))).due[0]


def test_switch_times_are_the_instants_lamps_change_at() -> None:
    """What the simulated devices are told to wake for: each instant, and the lamps' state flips right there."""
    ix = fleet([("arterial", 3)])
    e = Expected(ix, {("city", "all"): ScheduleDoc(profile=Profile(mode="astro", on_offset_min=10))})
    start = ms(dt.datetime(2026, 12, 1, 12, 0, tzinfo=CST))
    slots = np.arange(3)
    times = e.switch_times(start, slots)
    assert len(times) >= 2 and np.all(np.diff(times) > 0) and times[0] > start
    first = e.next_event(start, slots)
    assert first is not None and 0 <= times[0] - first <= 1  # next_event's instant, rounded up to the millisecond
    on = times[0]
    assert not e.at(on - 1).due.any() and e.at(on).due.all()  # on at the announced instant, not a moment later
    off = times[times > on][0]
    assert e.at(off - 1).due.all() and not e.at(off).due.any()


def test_override_holds_until_its_time_then_the_schedule_resumes() -> None:
    ix = fleet([("arterial", 2)])
    until = NOON + dt.timedelta(hours=1)
    docs = {("lamp", "L0001"): ScheduleDoc(override=Override(on=True, level=60, until=until))}
    e = Expected(ix, docs)
    during = e.at(ms(NOON))
    assert during.due.tolist() == [False, True] and during.level.tolist() == [0, 60]
    assert e.at(ms(until)).due.tolist() == [False, False]  # expired: back to the astro profile
    off = {("road", "100"): ScheduleDoc(override=Override(on=False, until=NIGHT + dt.timedelta(minutes=5)))}
    assert not Expected(ix, off).at(ms(NIGHT)).due.any()  # switched off at night: not due


def test_dimming_steps_and_calendar_exceptions() -> None:
    ix = fleet([("arterial", 1)])
    steps = [Step("00:00", 50), Step("05:00", 80)]
    prof = Profile(mode="astro", steps=steps, exceptions=[DateException(dt.date(2026, 12, 31), level=100)])
    e = Expected(ix, {("city", "all"): ScheduleDoc(profile=prof)})
    at = lambda d, h: ms(dt.datetime(2026, 12, d, h, 0, tzinfo=CST))  # noqa: E731
    assert [int(e.at(at(1, 22)).level[0]), int(e.at(at(2, 1)).level[0]), int(e.at(at(2, 6)).level[0])] == [100, 50, 80]
    assert int(e.at(ms(dt.datetime(2027, 1, 1, 2, 0, tzinfo=CST))).level[0]) == 100  # New Year's Eve: full all night
    dark_night = Profile(mode="astro", exceptions=[DateException(dt.date(2026, 12, 1), off=True)])
    e2 = Expected(ix, {("city", "all"): ScheduleDoc(profile=dark_night)})
    assert not e2.at(at(1, 22)).due[0] and e2.at(at(2, 22)).due[0]


def test_out_of_service_lamps_are_excluded() -> None:
    ix = fleet([("arterial", 2)])
    ix.in_service[1] = False
    ex = Expected(ix, {}).at(ms(NIGHT))
    assert ex.due.tolist() == [True, False] and ex.excluded.tolist() == [False, True]


# (road class, lamps on the road, dark lamps, passes)
ROADS = [
    ("branch", 99, 2, True),
    ("branch", 99, 3, False),
    ("secondary", 120, 3, True),
    ("secondary", 120, 4, False),
    ("arterial", 199, 4, True),
    ("arterial", 199, 5, False),
    ("arterial", 200, 6, True),  # 97.0 %
    ("arterial", 200, 7, False),  # 96.5 %
    ("branch", 200, 10, True),  # 95.0 %
    ("branch", 200, 11, False),
]


@pytest.mark.parametrize(("cls", "lamps", "dark", "passes"), ROADS)
def test_per_road_assessment(cls: str, lamps: int, dark: int, passes: bool) -> None:
    ix = fleet([(cls, lamps)])
    state = FleetState(ix)
    for i in range(lamps):
        report(state, i, NIGHT - dt.timedelta(seconds=30), faults=("lamp_failure",) if i < dark else ())
    verdict = road_verdicts(ix, breakdown(ix, state, Expected(ix, {}).at(ms(NIGHT))).road).rows()[0]
    assert verdict["passes"] is passes
    assert verdict["rule"] == ("rate" if lamps >= 200 else "dark_cap")


def test_groupings_and_integrity() -> None:
    ix = fleet([("arterial", 10), ("branch", 10)])
    state = FleetState(ix)
    for i in range(20):
        report(state, i, NIGHT - dt.timedelta(seconds=30), faults=("lamp_failure",) if i in (0, 15) else ())
    b = breakdown(ix, state, Expected(ix, {}).at(ms(NIGHT)))
    classes = {r["key"]: r for r in b.road_class.rows()}
    assert classes["arterial"]["rate"] == 90.0 and classes["arterial"]["target"] == 98.0
    assert classes["branch"]["rate"] == 90.0 and classes["branch"]["target"] == 96.0
    assert classes["expressway"]["rate"] is None
    assert [r["dark"] for r in b.cabinet.rows()] == [1, 1]
    assert b.district.rows()[0]["lit"] == 18 and b.integrity == 90.0


def test_newest_report_wins_and_unknown_lamps_are_skipped() -> None:
    ix = fleet([("arterial", 2)])
    state = FleetState(ix)
    t = ms(NIGHT)
    changed = state.apply(
        np.array([0, 0, -1, 1], dtype=np.int32),
        np.array([t, t - 1000, t, t], dtype=np.int64),
        np.array([True, False, True, False]),
        np.array([100, 0, 100, 0], dtype=np.int16),
        np.full(4, np.nan, dtype=np.float32),
        np.zeros(4, dtype=np.uint16),
    )
    assert changed == 2 and state.on.tolist() == [True, False]
    report(state, 0, NIGHT - dt.timedelta(minutes=1), on=False)  # older than what is held: ignored
    assert state.on[0]


def test_schedule_documents_are_checked() -> None:
    doc = decode_doc(b'{"profile": {"mode": "fixed", "on_at": "18:30", "off_at": "06:15", "level": 90}}')
    assert doc.profile is not None and doc.profile.level == 90
    bad = [
        (b'{"profile": {"mode": "sometimes"}}', "profile.mode"),
        (b'{"profile": {"mode": "fixed", "on_at": "25:00", "off_at": "06:00"}}', "profile.on_at"),
        (b'{"profile": {"mode": "fixed"}}', "profile.on_at"),
        (b'{"profile": {"mode": "astro", "level": 120}}', "profile.level"),
        (b'{"profile": {"mode": "astro", "timezone": "Mars/Olympus"}}', "profile.timezone"),
        (
            b'{"windows": [{"kind": "outage", "start": "2026-12-01T10:00:00+08:00", '
            b'"end": "2026-12-01T09:00:00+08:00"}]}',
            "windows[0].end",
        ),
        (b'{"override": {"on": true, "until": "2026-12-01T10:00:00"}}', "override.until"),
        (b'{"colour": "red"}', "colour"),
    ]
    for raw, field in bad:
        with pytest.raises(ScheduleError) as err:
            decode_doc(raw)
        assert err.value.field == field, (raw, str(err.value))


def test_schedule_times_take_epoch_milliseconds_as_the_protocol_writes_them() -> None:
    start, end = dt.datetime(2026, 12, 1, 21, tzinfo=CST), dt.datetime(2026, 12, 1, 23, 30, tzinfo=CST)
    iso = decode_doc(
        b'{"windows": [{"kind": "outage", "start": "%s", "end": "%s"}], "override": {"until": "%s"}}'
        % (start.isoformat().encode(), end.isoformat().encode(), end.isoformat().encode())
    )
    epoch = decode_doc(
        b'{"windows": [{"kind": "outage", "start": %d, "end": %d}], "override": {"until": %d}}'
        % (ms(start), ms(end), ms(end))
    )
    assert epoch == iso and epoch.windows[0].start.utcoffset() == dt.timedelta(0)
    for raw, field in (
        (b'{"override": {"until": -1}}', "override.until"),  # before 1970: not a protocol time
        (b'{"override": {"until": 1.5e12}}', "override.until"),  # milliseconds are whole
        (b'{"override": {"until": true}}', "override.until"),
        (b'{"profile": {"mode": "astro", "level": 1764547200000}}', "profile.level"),  # only times become times
    ):
        with pytest.raises(ScheduleError) as err:
            decode_doc(raw)
        assert err.value.field == field, (raw, str(err.value))


@given(st.integers(min_value=-(2**63), max_value=2**63))
def test_any_integer_time_is_a_utc_instant_or_a_clear_error(value: int) -> None:
    from kernel.instants import MAX_EPOCH_MS, from_epoch_ms

    raw = b'{"override": {"until": %d}}' % value
    if 0 <= value <= MAX_EPOCH_MS:
        doc = decode_doc(raw)
        assert doc.override is not None and doc.override.until == from_epoch_ms(value)
    else:
        with pytest.raises(ScheduleError) as err:
            decode_doc(raw)
        assert err.value.field == "override.until"


def test_a_schedule_for_an_unknown_scope_is_refused() -> None:
    ix = fleet([("arterial", 1)])
    with pytest.raises(UnknownScope):
        Expected(ix, {("district", "zz"): ScheduleDoc(profile=Profile(mode="always"))})


def _city_at(ts_ms: int, lit: int, dark: int) -> Breakdown:
    def counts(keys: list[str]) -> Counts:
        by = np.zeros((len(keys), len(CONDITIONS)), dtype=np.int64)
        by[:, CONDITIONS.index("lit")], by[:, CONDITIONS.index("dark")] = lit, dark
        return Counts(keys, by, np.full(len(keys), 98.0))

    empty = counts([])
    return Breakdown(ts_ms, counts(["all"]), empty, empty, empty, empty, None)


def test_a_city_below_target_for_more_than_ten_minutes_raises_one_alert_and_clears_it() -> None:
    watch, t0 = BelowTarget(), ms(NIGHT)
    events = [e for m in range(12) for e in watch.update(_city_at(t0 + m * 60_000, 95, 5))]
    assert [(e.kind, e.grouping, e.key, e.since) for e in events] == [
        ("raised", "city", "all", dt.datetime.fromtimestamp(t0 / 1000, dt.UTC))
    ]
    assert events[0].ts == dt.datetime.fromtimestamp((t0 + 11 * 60_000) / 1000, dt.UTC) and events[0].rate == 95.0
    assert [e.kind for e in watch.update(_city_at(t0 + 12 * 60_000, 99, 1))] == ["cleared"]


def test_minutes_sampled_late_cannot_date_a_fall_back_before_the_reports_that_show_it() -> None:
    """The process stalled at 18:45 and samples 18:46-18:59 at 19:01 from devices that went dark at 19:00: the
    spell below target starts at 19:01, so the alert comes at 19:12 (the backfilled minutes alone raised one)."""
    at = ms(dt.datetime(2026, 12, 1, 18, 46, tzinfo=CST))
    now = ms(dt.datetime(2026, 12, 1, 19, 1, tzinfo=CST))
    watch = BelowTarget()
    late = [e for m in range(14) for e in watch.update(_city_at(at + m * 60_000, 90, 10), evidence_ms=now)]
    assert late == []
    on_time = [e for m in range(15, 27) for e in watch.update(_city_at(at + m * 60_000, 90, 10))]
    assert [(e.kind, e.since) for e in on_time] == [("raised", dt.datetime.fromtimestamp(now / 1000, dt.UTC))]
    assert on_time[0].ts == dt.datetime.fromtimestamp((now + 11 * 60_000) / 1000, dt.UTC)

"""The compact history: old days of lamp readings packed one row per lamp and day, read back exactly as stored,
moved without losing or repeating a reading even when the compaction is killed halfway."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.app import create_app
from gateway.codec import Message
from kernel.clock import Clock
from kernel.database import Database
from lamplighter.runtime import Endpoints
from telemetry.cabinetday import pack_cabinet_day, unpack_cabinet_day
from telemetry.daypack import LampDay, pack, pack_many, unpack
from telemetry.history import compact_day, read_cabinet
from telemetry.schema import has_timescaledb
from telemetry.upkeep import Upkeep
from tests.support.auth import sign_in
from tests.support.factories import load_generated
from tests.support.history import (
    KEPT_DAYS,
    OLD_DAYS,
    TODAY,
    city_messages,
    compact,
    compacted,
    ingest,
    midnight,
    report_times,
)


def _stored(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    """Every reading in either form, as (lamp_no, ts µs, seq, rest of the row)."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    out: list[tuple[Any, ...]] = []
    for row in conn.execute(
        "SELECT lamp_no, ts, seq, is_on, dim, power_w, voltage_v, current_a, power_factor, energy_wh, temp_c, lux, "
        "rssi_dbm, burn_h, starts, driver_temp_c, leakage_ma, mode, faults, received_at FROM lamp_readings"
    ):
        ts, received = row[1], row[-1]
        us = (ts - epoch) // timedelta(microseconds=1)
        out.append((row[0], us, *row[2:-1], (received - epoch) // timedelta(microseconds=1)))
    for lamp_no, data in conn.execute("SELECT lamp_no, data FROM lamp_history"):
        out += [(lamp_no, *r) for r in unpack(data).rows()]
    return out


def _cabinet_report(rng: random.Random, ts_ms: int, seq: int) -> bytes:
    """A cabinet state report, with what may be missing missing and now and then a fault or an open door."""
    circuits = rng.choice([2, 3, 4])
    body: dict[str, Any] = {
        "ts": ts_ms,
        "seq": seq,
        "door_open": rng.random() < 0.05,
        "contactors": [rng.random() < 0.9 for _ in range(circuits)],
        "faults": rng.sample(["door_open", "leakage_current", "phase_loss"], 1) if rng.random() < 0.05 else [],
    }
    if rng.random() < 0.9:
        body["phase_voltage_v"] = [round(rng.gauss(220, 2), 1) for _ in range(3)]
    if rng.random() < 0.8:
        body["circuit_current_a"] = [rng.uniform(0, 12) for _ in range(circuits)]  # full float precision
    if rng.random() < 0.7:
        body["leakage_ma"] = round(rng.uniform(1, 9), 2)
    if rng.random() < 0.9:
        body["energy_wh"] = 5_000_000 + ts_ms // 1000
    return json.dumps(body).encode()


def _cabinets(endpoints: Endpoints, cabinets: int, step: timedelta = timedelta(minutes=20)) -> list[Message]:
    """State reports of the first `cabinets` cabinets on the old days and today."""
    with psycopg.connect(endpoints.database_url) as conn:
        ids = conn.execute("SELECT id, district FROM cabinets ORDER BY no LIMIT %s", (cabinets,)).fetchall()
    rng = random.Random(11)
    out: list[Message] = []
    for cabinet, district in ids:
        for seq, ts in enumerate(report_times(rng, step)):
            body = _cabinet_report(rng, ts, seq)
            out.append(Message(f"sl/{district}/cabinet/{cabinet}/state", body, ts + rng.randint(5, 900)))
    return out


def _cabinets_stored(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    """Every cabinet reading in either form, as (cabinet_no, ts µs, seq, the rest, received µs)."""
    us = "(extract(epoch FROM {}) * 1000000)::bigint"
    out = [
        tuple(r)
        for r in conn.execute(
            f"SELECT cabinet_no, {us.format('ts')}, seq, door_open, contactors, phase_voltage_v, circuit_current_a, "
            f"leakage_ma, energy_wh, faults, lamp_count, {us.format('received_at')} FROM cabinet_readings"
        )
    ]
    for cabinet_no, data in conn.execute("SELECT cabinet_no, data FROM cabinet_history"):
        out += [(cabinet_no, *r) for r in unpack_cabinet_day(data)]
    return out


@pytest.fixture
def city(endpoints: Endpoints) -> Iterator[Endpoints]:
    with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
        if has_timescaledb(conn):
            pytest.skip("TimescaleDB compresses the history itself (tests/integration/telemetry/test_timescaledb.py)")
    load_generated(endpoints.database_url, 1000, seed=3)
    yield endpoints


@pytest.mark.services
@pytest.mark.asyncio
async def test_old_days_are_packed_small_and_read_back_exactly_as_stored(city: Endpoints) -> None:
    await ingest(city, city_messages(city, lamps=12))
    app = create_app(database_url=city.database_url, broker=city.as_("lamplighter-api"))
    frm = datetime.combine(OLD_DAYS[0] - timedelta(days=1), datetime.min.time(), UTC).isoformat()
    pages = [(10_000, 0), (50, 0), (50, 90), (7, 280)]
    with TestClient(app) as c:
        sign_in(c, city.database_url, "viewer")

        def telemetry(lamp: str, limit: int, offset: int) -> list[dict[str, Any]]:
            r = c.get(f"/api/v1/lamps/{lamp}/telemetry", params={"from": frm, "limit": limit, "offset": offset})
            assert r.status_code == 200, r.text
            items: list[dict[str, Any]] = r.json()["items"]
            return items

        lamps = ["XN-CD-000001", "XN-CD-000005", "XN-CD-000012"]
        before = {(lamp, p): telemetry(lamp, *p) for lamp in lamps for p in pages}
        assert len(before[("XN-CD-000001", (10_000, 0))]) > 2 * 96
        with psycopg.connect(city.database_url) as conn:
            stored_before = sorted(_stored(conn), key=repr)

        out = compacted(city)
        assert "readings of 2 days" in out and "into 24 lamp-days" in out, out

        with psycopg.connect(city.database_url) as conn:
            assert sorted(_stored(conn), key=repr) == stored_before  # every bit of every reading, once
            raw_days = conn.execute(
                "SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM lamp_readings ORDER BY 1"
            ).fetchall()
            assert [d for (d,) in raw_days] == KEPT_DAYS
            history = conn.execute("SELECT day, count(*), sum(readings) FROM lamp_history GROUP BY day ORDER BY day")
            assert [(d, n) for d, n, _ in history] == [(day, 12) for day in OLD_DAYS]
        for key, items in before.items():
            assert telemetry(key[0], *key[1]) == items, key

        assert "nothing to compact" in compacted(city)


@pytest.mark.services
@pytest.mark.asyncio
async def test_cabinet_days_are_packed_and_read_back_as_stored_late_readings_once(city: Endpoints) -> None:
    messages = _cabinets(city, 5)
    await ingest(city, messages)
    start = datetime.combine(OLD_DAYS[0] - timedelta(days=1), datetime.min.time(), UTC)
    end = datetime.now(UTC) + timedelta(hours=1)
    with psycopg.connect(city.database_url) as conn:
        stored_before = sorted(_cabinets_stored(conn), key=repr)
        pages = {(no, limit, offset): read_cabinet(conn, no, start, end, limit=limit, offset=offset)
                 for no in (1, 4) for limit, offset in ((10_000, 0), (30, 60), (5, 140))}  # fmt: skip
    assert len(pages[(1, 10_000, 0)]) > 2 * 72

    out = compacted(city)
    assert "into 10 cabinet-days" in out, out
    with psycopg.connect(city.database_url) as conn:
        assert sorted(_cabinets_stored(conn), key=repr) == stored_before  # every value of every reading, once
        raw_days = conn.execute("SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM cabinet_readings").fetchall()
        assert [d for (d,) in raw_days] == KEPT_DAYS
        rows = conn.execute("SELECT day, count(*), sum(readings) FROM cabinet_history GROUP BY day ORDER BY day")
        assert [(d, n, int(r)) for d, n, r in rows] == [(day, 5, 5 * 72) for day in OLD_DAYS]
        for (no, limit, offset), items in pages.items():
            assert read_cabinet(conn, no, start, end, limit=limit, offset=offset) == items, (no, limit, offset)
        size = conn.execute("SELECT sum(pg_column_size(data)) / sum(readings)::float FROM cabinet_history")
        assert (size.fetchone() or (99,))[0] < 40  # bytes a reading packed (about 240 raw)

    # A redelivered reading of a packed day, and one that came late: the next run merges them in, each once.
    late_ts = int(datetime.combine(OLD_DAYS[1], datetime.min.time(), UTC).timestamp() * 1000) + 5 * 60_000
    second = messages[len(messages) // 5 + 1].topic  # the second cabinet's
    late = Message(second, _cabinet_report(random.Random(3), late_ts, 9999), late_ts)
    old = next(m for m in messages if m.topic == second)  # its first, on the first packed day
    await ingest(city, [old, late])
    compacted(city)
    with psycopg.connect(city.database_url) as conn:
        after = _cabinets_stored(conn)
        assert len(after) == len(stored_before) + 1
        assert sorted(set(map(repr, after))) == sorted(map(repr, after))  # none twice
        assert conn.execute(
            "SELECT count(*) FROM cabinet_readings WHERE ts < %s", (start + timedelta(days=3),)
        ).fetchone() == (0,)


@pytest.mark.services
@pytest.mark.asyncio
async def test_a_compaction_killed_halfway_loses_and_repeats_nothing(city: Endpoints) -> None:
    await ingest(city, city_messages(city, lamps=150, per_lamp_step=timedelta(minutes=30)))
    with psycopg.connect(city.database_url) as conn:
        original = sorted(_stored(conn), key=repr)
    run = compact(city, "--chunk-lamps", "1")  # one lamp per transaction: hundreds of them
    deadline = time.monotonic() + 60
    with psycopg.connect(city.database_url, autocommit=True) as conn:
        while conn.execute("SELECT count(*) FROM lamp_history").fetchone() == (0,):
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        run.send_signal(signal.SIGKILL)
        run.communicate()
        packed = conn.execute("SELECT count(*) FROM lamp_history").fetchone()
        old_raw = conn.execute("SELECT count(*) FROM lamp_readings WHERE ts < %s", (midnight(TODAY),)).fetchone()
        assert packed and packed[0] > 0 and old_raw and old_raw[0] > 0, "killed after it had finished"
        # The day being packed is in both forms until its last step: every reading there, alike in both.
        halfway = _stored(conn)
        assert sorted({repr(r): r for r in halfway}.values(), key=repr) == original
        assert len(halfway) > len(original), "killed before any lamp-day was packed, or after the day was done"

    compacted(city, "--chunk-lamps", "40")
    with psycopg.connect(city.database_url) as conn:
        assert sorted(_stored(conn), key=repr) == original  # each once
        assert conn.execute("SELECT count(*) FROM lamp_readings WHERE ts < %s", (midnight(TODAY),)).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM lamp_history").fetchone() == (2 * 150,)


@pytest.mark.services
@pytest.mark.asyncio
async def test_a_reading_written_while_its_day_is_packed_is_kept(city: Endpoints) -> None:
    messages = city_messages(city, lamps=20)
    await ingest(city, messages)
    day = OLD_DAYS[0]
    late = Message(
        "sl/cd/lamp/XN-CD-000001/state",
        json.dumps(
            {"ts": int(midnight(day).timestamp() * 1000) + 7, "seq": 99_999, "on": True, "dim": 100, "faults": []}
        ).encode(),
        int(datetime.now(UTC).timestamp() * 1000),
    )
    with psycopg.connect(city.database_url) as conn:
        lamp_no = conn.execute("SELECT no FROM lamps WHERE id = 'XN-CD-000001'").fetchone()
        assert lamp_no is not None
        sent = []

        def progress(done: int, total: int) -> None:  # between two ranges: lamp 1's range is packed already
            if not sent:
                sent.append(asyncio.run_coroutine_threadsafe(ingest(city, [late]), loop).result(30))

        loop = asyncio.get_running_loop()
        await asyncio.to_thread(compact_day, conn, day, chunk_lamps=1, progress=progress)
        assert sent
        assert conn.execute(
            "SELECT count(*) FROM lamp_readings WHERE ts < %s", (midnight(day + timedelta(days=1)),)
        ).fetchone() == (0,)
        (data,) = conn.execute(
            "SELECT data FROM lamp_history WHERE lamp_no = %s AND day = %s", (lamp_no[0], day)
        ).fetchone() or (b"",)
        assert 99_999 in unpack(data).seq.tolist()


@pytest.mark.services
@pytest.mark.asyncio
async def test_late_and_redelivered_readings_of_a_packed_day_show_once(city: Endpoints) -> None:
    messages = city_messages(city, lamps=2)
    await ingest(city, messages)
    compacted(city)
    old = next(m for m in messages if m.topic.endswith("XN-CD-000001/state"))
    first = json.loads(old.payload)
    late = dict(first, ts=first["ts"] + 60_000, seq=10_000)  # buffered by the device, sent days later
    await ingest(city, [old, Message(old.topic, json.dumps(late).encode(), old.received_ms)])

    app = create_app(database_url=city.database_url, broker=city.as_("lamplighter-api"))
    with TestClient(app) as c:
        sign_in(c, city.database_url, "viewer")
        frm = midnight(OLD_DAYS[0]).isoformat()
        to = (midnight(OLD_DAYS[0]) + timedelta(hours=1)).isoformat()
        items = c.get("/api/v1/lamps/XN-CD-000001/telemetry", params={"from": frm, "to": to}).json()["items"]
        assert [i["seq"] for i in items] == [0, 10_000, 1, 2, 3]

        compacted(city)
        again = c.get("/api/v1/lamps/XN-CD-000001/telemetry", params={"from": frm, "to": to}).json()["items"]
        assert again == items
    with psycopg.connect(city.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM lamp_readings WHERE ts < %s", (midnight(TODAY),)).fetchone() == (0,)
        stored = _stored(conn)
        assert len(stored) == len(messages) + 1


# -- the codec alone ---------------------------------------------------------------------------------------------

_f32 = st.floats(width=32, allow_nan=False)


@st.composite
def _days(draw: st.DrawFn) -> LampDay:
    n = draw(st.integers(1, 60))
    keys = sorted(set(draw(st.lists(st.tuples(st.integers(0, 2**50), st.integers(0, 2**31 - 1)), min_size=n))))
    n = len(keys)

    def nullable(values: st.SearchStrategy[Any], dtype: Any) -> tuple[Any, Any]:
        v = np.array(draw(st.lists(values, min_size=n, max_size=n)), dtype=dtype)
        present = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
        return np.where(present, v, 0).astype(dtype), present

    words = st.text(max_size=12)
    return LampDay(
        ts_us=np.array([k[0] for k in keys], dtype=np.int64),
        seq=np.array([k[1] for k in keys], dtype=np.int64),
        is_on=np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool),
        dim=np.array(draw(st.lists(st.integers(-(2**15), 2**15 - 1), min_size=n, max_size=n)), dtype=np.int64),
        power_w=nullable(_f32, np.float32),
        voltage_v=nullable(_f32, np.float32),
        current_a=nullable(st.sampled_from([0.0, -0.0, 0.001, 1.5, 3.25, 1e-7]), np.float32),
        power_factor=nullable(_f32, np.float32),
        energy_wh=nullable(st.integers(-(2**63), 2**63 - 1), np.int64),
        temp_c=nullable(st.floats(-40, 60, width=32), np.float32),
        lux=nullable(_f32, np.float32),
        rssi_dbm=nullable(st.integers(-(2**15), 2**15 - 1), np.int64),
        mode=draw(st.lists(st.one_of(st.none(), words), min_size=n, max_size=n)),
        faults=[tuple(f) for f in draw(st.lists(st.lists(words, max_size=3), min_size=n, max_size=n))],
        received_us=np.array(draw(st.lists(st.integers(0, 2**50), min_size=n, max_size=n)), dtype=np.int64),
        burn_h=nullable(st.integers(0, 2**31 - 1), np.int64),
        starts=nullable(st.integers(0, 2**31 - 1), np.int64),
        driver_temp_c=nullable(st.floats(-40, 120, width=32), np.float32),
        leakage_ma=nullable(_f32, np.float32),
    )


@given(_days())
@settings(max_examples=120, deadline=None)
def test_a_packed_day_unpacks_to_the_same_bits(day: LampDay) -> None:
    back = unpack(pack(day))
    for name in ("power_w", "voltage_v", "current_a", "power_factor", "temp_c", "lux", "driver_temp_c", "leakage_ma"):
        values, present = getattr(day, name)
        got, got_present = getattr(back, name)
        assert (got_present == present).all()
        assert (got[present].view(np.int32) == values[present].view(np.int32)).all(), name  # -0.0 stays -0.0
    assert back.rows() == day.rows()


# A day packed by codec 1 (before the forecasting fields), made by that version of the code: still read, float for
# float, with the four later fields absent.
_CODEC_1_DAY = bytes.fromhex(
    "28b52ffd20ff85050092c9212d70c549077ce83c7ac17896f96d15e75da87e45b606fc8fbaf56193314555f4bff6a4e395a86e0a6f25"
    "9bdd4906edf7059418081fc4a26192186954b2883d6b829621fb850f8bda24666f7a948b169fd5b6907fc7b951f45de60f8aef04d59d"
    "af23a712548ef8123673f93c0002791bf0d7f57d7099df41fb95a46dab2ae8764d0163a06d9f0311002f84aaa2432a020400821115b4"
    "200f302298880b1164f8546d33f703dc0cc0068ca2004d"
)


def test_a_day_packed_before_the_forecasting_fields_reads_back_as_it_was() -> None:
    t0 = 1_764_950_400_000_000
    absent = (None, None, None, None)
    assert unpack(_CODEC_1_DAY).rows() == [
        (t0, 7, True, 100, 97.5, 221.3, 0.45, 0.96, 123456, -12.5, None, -87, *absent, "auto", [], t0 + 120_000),
        (t0 + 900_000_000, 8, True, 50, 48.2, 219.8, 0.23, 0.95, 123480, -13.0, None, -88, *absent, "auto", [],
         t0 + 900_250_000),
        (t0 + 1_800_000_000, 9, False, 0, 0.0, None, 0.0, 0.0, 123491, -13.5, None, -87, *absent, "manual",
         ["lamp_failure"], t0 + 1_800_090_000),
    ]  # fmt: skip


@given(st.lists(_days(), min_size=1, max_size=4))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
def test_many_days_packed_at_once_are_the_bytes_of_each_packed_alone(days: list[LampDay]) -> None:
    assert pack_many(LampDay.joined(days), [len(d) for d in days]) == [pack(d) for d in days]


_cabinet_rows = st.lists(
    st.tuples(
        st.integers(0, 2**50),
        st.integers(0, 2**31 - 1),
        st.booleans(),
        st.lists(st.booleans(), min_size=1, max_size=6),
        st.one_of(st.none(), st.lists(_f32, min_size=3, max_size=3)),
        st.one_of(st.none(), st.lists(_f32, max_size=6)),
        st.one_of(st.none(), _f32),
        st.one_of(st.none(), st.integers(0, 2**62)),
        st.lists(st.sampled_from(["door_open", "phase_loss", "mains_loss", "x" * 64]), max_size=3, unique=True),
        st.integers(0, 10_000),
        st.integers(0, 2**50),
    ),
    max_size=60,
    unique_by=lambda r: (r[0], r[1]),
).map(lambda rows: sorted(rows, key=lambda r: (r[0], r[1])))


@given(_cabinet_rows)
@settings(max_examples=120, deadline=None)
def test_a_packed_cabinet_day_unpacks_to_the_same_values(rows: list[tuple[Any, ...]]) -> None:
    def shown(v: Any) -> Any:  # a real as PostgreSQL shows it, the way unpack gives it
        if isinstance(v, float):
            return float(str(np.float32(v)))
        if isinstance(v, list):
            return [shown(x) for x in v]
        return v

    # Compared as text: -0.0 == 0.0 in Python, and -0.0 must come back -0.0 (a leakage of -0.0 once came back +0.0).
    assert repr(unpack_cabinet_day(pack_cabinet_day(rows))) == repr([tuple(shown(v) for v in r) for r in rows])


@pytest.mark.services
@pytest.mark.asyncio
async def test_the_leaders_upkeep_packs_old_days_by_itself(city: Endpoints) -> None:
    """What the leading gateway runs: days older than `compact_after_days` are found and packed by the command it
    starts as a child, readings kept exactly; today's stay raw."""
    await ingest(city, city_messages(city, lamps=30))
    with psycopg.connect(city.database_url) as conn:
        original = sorted(_stored(conn), key=repr)
    db = Database(city.database_url, name="test-upkeep")
    await db.open()
    upkeep = Upkeep(
        db,
        Clock(),
        quarantine_days=30,
        quarantine_rows=100_000,
        compact_after_days=2,
        compact=[sys.executable, "-m", "lamplighter", "compact"],
        env={**os.environ, **city.env()},
        compact_first_s=0.0,
        compact_every_s=0.5,
    )
    task = asyncio.create_task(upkeep.run())
    try:
        with psycopg.connect(city.database_url, autocommit=True) as conn:
            deadline = time.monotonic() + 120
            while conn.execute("SELECT count(*) FROM lamp_history").fetchone() != (2 * 30,):
                assert not task.done() and time.monotonic() < deadline, "the old days were not packed"
                await asyncio.sleep(0.2)
            while conn.execute("SELECT count(*) FROM lamp_readings WHERE ts < %s", (midnight(TODAY),)).fetchone() != (
                0,
            ):
                assert time.monotonic() < deadline, "the packed days' raw readings stayed"
                await asyncio.sleep(0.2)
            assert sorted(_stored(conn), key=repr) == original
            today = conn.execute("SELECT count(*) FROM lamp_readings WHERE ts >= %s", (midnight(TODAY),)).fetchone()
            assert today is not None and today[0] > 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await db.close()

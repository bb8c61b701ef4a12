"""What the gateway and the followers (the API, the leading gateway for other gateways' districts) read of the
inventory and of the stored latest state."""

from __future__ import annotations

import datetime as dt

import numpy as np
import psycopg
import pytest

from inventory.index import load_index
from inventory.registry import load_registry
from telemetry.fleet import FAULT_BITS, fault_mask, fetch_latest
from tests.support.factories import load_generated

pytestmark = pytest.mark.services


def _store(conn: psycopg.Connection, no: int, ts: dt.datetime, power: float | None, faults: list[str]) -> None:
    conn.execute(
        "INSERT INTO lamp_latest (lamp_no, ts, seq, is_on, dim, power_w, faults, received_at) "
        "VALUES (%s, %s, 1, true, 70, %s, %s, now())",
        (no, ts, power, faults),
    )


def test_a_follower_reads_each_lamps_state_its_faults_and_only_what_it_asks_for(database_url: str) -> None:
    load_generated(database_url, 300, seed=3)
    with psycopg.connect(database_url, autocommit=True) as conn:
        index = load_index(conn)
        ts = dt.datetime(2026, 12, 1, 20, 0, tzinfo=dt.UTC)
        _store(conn, 1, ts, 41.5, [])
        _store(conn, 2, ts, None, ["lamp_failure", "driver_failure"])
        _store(conn, 3, ts, 12.0, ["some_future_code"])
        empty, newest = fetch_latest(conn, index, since=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
        assert len(empty.slots) == 0 and newest is None

        cols, newest = fetch_latest(conn, index)
        assert newest is not None
        by_no = {int(no): i for i, no in enumerate(index.lamp_no[cols.slots])}
        assert set(by_no) == {1, 2, 3}
        one, two, three = by_no[1], by_no[2], by_no[3]
        assert cols.ts_ms[one] == int(ts.timestamp() * 1000) and bool(cols.on[one]) and cols.dim[one] == 70
        assert cols.power_w[one] == pytest.approx(41.5) and np.isnan(cols.power_w[two])
        assert cols.faults[one] == 0
        assert cols.faults[two] == FAULT_BITS["lamp_failure"] | FAULT_BITS["driver_failure"]
        assert cols.faults[three] == fault_mask(["some_future_code"]) != 0  # a code it does not know still counts

        district = conn.execute("SELECT district FROM lamps WHERE no = 2").fetchone()
        assert district is not None
        mine, _ = fetch_latest(conn, index, districts=[district[0]])
        others = conn.execute("SELECT count(*) FROM lamps WHERE no IN (1, 2, 3) AND district = %s", district).fetchone()
        assert others is not None and len(mine.slots) == others[0]
        none, _ = fetch_latest(conn, index, districts=[])
        assert len(none.slots) == 0


def test_the_registry_knows_every_device_by_its_id(database_url: str) -> None:
    load_generated(database_url, 300, seed=3)
    with psycopg.connect(database_url, autocommit=True) as conn:
        registry = load_registry(conn)
        lamps = conn.execute("SELECT id, no, district FROM lamps").fetchall()
        cabinets = conn.execute("SELECT id, no, district FROM cabinets").fetchall()
    assert len(registry.lamps) == len(lamps) == 300 and len(registry.cabinets) == len(cabinets)
    assert {k: registry.lamps[k] for k in registry.lamps} == {i: (n, d) for i, n, d in lamps}
    assert all(registry.cabinets.get(i) == (n, d) for i, n, d in cabinets)
    assert registry.lamps.get("XN-ZZ-999999") is None and "XN-ZZ-999999" not in registry.lamps

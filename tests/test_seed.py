"""The seed inventory: deterministic, shaped as docs/domain.md says, loaded idempotently."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from seeds.generator import DISTRICTS, generate
from seeds.loader import Replaced, SeedError, load, summary


def test_default_city_shape() -> None:
    inv = generate()
    assert inv.lamps >= 110_000
    assert {d.code for d in inv.districts} == {"cd", "cz", "cx", "cb", "hz", "dt", "hy"}
    sizes = np.bincount(inv.lamp_cabinet)
    assert sizes.min() >= 50 and sizes.max() <= 250
    assert set(np.unique(inv.cabinet_circuits)) <= set(range(1, 7))
    assert (inv.lamp_circuit <= inv.cabinet_circuits[inv.lamp_cabinet]).all()
    assert 0.65 <= inv.lamp_concentrator.mean() <= 0.75
    assert set(inv.road_class) == {"expressway", "arterial", "secondary", "branch"}
    assert len(set(inv.lamp_id)) == inv.lamps and len(set(inv.cabinet_id)) == len(inv.cabinet_id)
    # Every lamp lies within its district's radius plus half its road's length (expressways run ~28 km).
    centre = {d.code: (d.lat, d.lon) for d in DISTRICTS}
    lat0 = np.array([centre[d][0] for d in inv.lamp_district])
    assert np.abs(inv.lamp_lat - lat0).max() < 0.25


def test_same_seed_same_city_other_seed_other_city() -> None:
    a, b, c = generate(5000, seed=4), generate(5000, seed=4), generate(5000, seed=5)
    assert a.lamp_id == b.lamp_id and np.array_equal(a.lamp_lat, b.lamp_lat)
    assert np.array_equal(a.lamp_rated_w, b.lamp_rated_w) and a.road_name_zh == b.road_name_zh
    assert not np.array_equal(a.lamp_lat, c.lamp_lat)


@pytest.mark.services
def test_load_is_idempotent_and_refuses_a_different_city(owner_url: str) -> None:
    with psycopg.connect(owner_url, autocommit=True) as conn:
        assert load(conn, generate(3000, seed=2), progress=False) is True
        assert load(conn, generate(3000, seed=2), progress=False) is False
        with pytest.raises(SeedError, match="--replace"):
            load(conn, generate(4000, seed=2), progress=False)
        rows = summary(conn)
        assert sum(r.lamps for r in rows) == 3000 and len(rows) == 7
        assert isinstance(load(conn, generate(4000, seed=2), replace=True, progress=False), Replaced)
        assert conn.execute("SELECT count(*) FROM lamps").fetchone() == (4000,)


@pytest.mark.services
def test_replace_always_replaces_and_clears_what_referred_to_the_old_city(owner_url: str) -> None:
    import datetime as dt

    from alerts.tickets import open_ticket
    from telemetry.lighting import put_schedule
    from telemetry.schedules import decode_doc

    now = dt.datetime(2026, 11, 30, 20, tzinfo=dt.UTC)
    with psycopg.connect(owner_url, autocommit=True) as conn:
        assert load(conn, generate(3000, seed=2), progress=False) is True
        lamp, district = conn.execute("SELECT id, district FROM lamps ORDER BY no LIMIT 1").fetchone()  # type: ignore[misc]
        open_ticket(
            conn, priority="P3", fault="lamp_failure", asset_type="lamp", asset_id=lamp, district=district,
            source="backend", first_seen=now, now=now,
        )  # fmt: skip
        put_schedule(conn, "lamp", lamp, decode_doc('{"profile": {"mode": "always"}}'))
        conn.execute(
            "INSERT INTO commands (id, op, params, target, actor, status, pace, total, created_at, expires_at) "
            "VALUES ('cmd00000001', 'switch', '{}', '{}', 'test', 'done', 1, 1, %s, %s)",
            (now, now),
        )

        # The same size and seed: replaced all the same, and what referred to the old lamps is gone.
        out = load(conn, generate(3000, seed=2), replace=True, progress=False)
        assert isinstance(out, Replaced)
        assert (out.lamps, out.seed) == (3000, 2)
        assert out.counts["tickets"] == 1 and out.counts["commands"] == 1 and out.counts["schedules"] >= 1
        text = out.describe()
        assert "1 tickets" in text and "1 commands" in text and "reading" in text
        for table in ("tickets", "ticket_events", "commands", "lamp_history", "cabinet_history"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
        assert conn.execute("SELECT scope FROM schedules").fetchall() == [("city",)]  # the city's own document stays
        assert conn.execute("SELECT count(*) FROM lamps").fetchone() == (3000,)
        # Without --replace the same city is still left alone.
        assert load(conn, generate(3000, seed=2), progress=False) is False

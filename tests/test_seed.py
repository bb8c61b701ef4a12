"""The seed inventory: deterministic, shaped as DOMAIN.md says, loaded idempotently."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from seeds.generator import DISTRICTS, generate
from seeds.loader import SeedError, load, summary


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
        assert load(conn, generate(4000, seed=2), replace=True, progress=False) is True
        assert conn.execute("SELECT count(*) FROM lamps").fetchone() == (4000,)

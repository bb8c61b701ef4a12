"""The city generator: deterministic, shaped as docs/domain.md says."""

from __future__ import annotations

import numpy as np
import pytest

from inventory.city import Inventory
from seeds.generator import ROAD_CLASSES, generate
from seeds.geography import Proximity, inside, to_xy

_SPACING = {"expressway": 40.0, "arterial": 35.0, "secondary": 30.0, "branch": 25.0}


def test_default_city_shape() -> None:
    inv = generate()
    assert inv.lamps >= 110_000
    assert {d.code for d in inv.districts} == {"cd", "cz", "cx", "cb", "hz", "dt", "hy"}
    sizes = np.bincount(inv.lamp_cabinet)
    # 50-250 lamps a cabinet; only a stretch of road out of town, away from the rest, has a smaller one.
    assert sizes.max() <= 250 and (sizes >= 50).mean() > 0.95
    assert set(np.unique(inv.cabinet_circuits)) <= set(range(1, 7))
    assert (inv.lamp_circuit <= inv.cabinet_circuits[inv.lamp_cabinet]).all()
    assert 0.65 <= inv.lamp_concentrator.mean() <= 0.75
    assert set(inv.road_class) == {"expressway", "arterial", "secondary", "branch"}
    assert len(set(inv.lamp_id)) == inv.lamps and len(set(inv.cabinet_id)) == len(inv.cabinet_id)
    assert len(inv.road_path) == len(inv.road_id) and len(inv.district_boundary) == len(inv.districts)
    assert {w[0] for w in inv.waterways} == {"huangshui", "beichuan", "nanchuan"}


def _plane(lonlat: np.ndarray) -> np.ndarray:
    return to_xy(lonlat[:, 1], lonlat[:, 0])


def _along(path: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each point's distance along the polyline (to its foot) and signed offset from it (left positive)."""
    a, b = path[:-1], path[1:]
    ab = b - a
    seg_len = np.hypot(ab[:, 0], ab[:, 1])
    t = np.clip(((q[:, None, :] - a) * ab).sum(axis=2) / seg_len**2, 0, 1)
    foot = a + t[..., None] * ab
    dist = np.hypot(*(q[:, None, :] - foot).transpose(2, 0, 1))
    k = dist.argmin(axis=1)
    rows = np.arange(len(q))
    s = np.concatenate([[0], np.cumsum(seg_len)])[k] + t[rows, k] * seg_len[k]
    rel = q - a[k]
    cross = ab[k, 0] * rel[:, 1] - ab[k, 1] * rel[:, 0]
    return s, np.sign(cross) * dist[rows, k]


def _check_streets(inv: Inventory) -> None:
    lamps = to_xy(inv.lamp_lat, inv.lamp_lon)
    # Districts are proper territories: each lamp and each centre inside its own district's border and no other's.
    owner = np.array([d.code for d in inv.districts])
    within = np.column_stack([inside(lamps, _plane(b)) for b in inv.district_boundary])
    assert (within.sum(axis=1) == 1).all(), "a lamp outside every district or in two"
    assert (owner[within.argmax(axis=1)] == np.array(inv.lamp_district)).all()
    centres = to_xy([d.lat for d in inv.districts], [d.lon for d in inv.districts])
    for i, b in enumerate(inv.district_boundary):
        assert inside(centres, _plane(b)).tolist() == [j == i for j in range(len(centres))]
    # Lamps stand along their road, 25-40 m apart by class, on one side of a branch road and both of the others.
    spacings: dict[str, list[float]] = {c: [] for c in ROAD_CLASSES}
    for r, path in enumerate(inv.road_path):
        mine = np.flatnonzero(inv.lamp_road == r + 1)
        assert len(mine), f"road {r + 1} has no lamp"
        s, off = _along(_plane(path), lamps[mine])
        cls = inv.road_class[r]
        assert np.abs(off).max() < 25, (cls, np.abs(off).max())
        assert np.abs(off).min() > 3
        sides = np.unique(np.sign(off))
        assert len(sides) == (1 if cls == "branch" else 2) or len(mine) < 4, (cls, sides)
        for side in sides:
            spacings[cls].extend(np.diff(np.sort(s[np.sign(off) == side])).tolist())
    for cls, found in spacings.items():
        if found:
            assert np.median(found) == pytest.approx(_SPACING[cls], abs=1.0), cls
            assert min(found) > 0.9 * _SPACING[cls], cls
    # Cabinets stand near their lamps.
    cabs = to_xy(inv.cabinet_lat, inv.cabinet_lon)
    feed = np.hypot(*(lamps - cabs[inv.lamp_cabinet]).T)
    assert np.median(feed) < 400 and np.percentile(feed, 99) < 1500 and feed.max() < 2500, np.percentile(feed, 99)
    # No lamp stands in a river: only the lamps of bridges (main roads crossing it) come near one.
    near = Proximity([_plane(w[3]) for w in inv.waterways], 40.0, lamps)(lamps)
    classes = {inv.road_class[r - 1] for r in inv.lamp_road[near].tolist()}
    assert classes <= {"expressway", "arterial", "secondary"}, classes


def test_the_city_lies_along_streets_rivers_and_borders() -> None:
    for lamps, seed in ((110_000, 1), (2_000, 7)):
        inv = generate(lamps, seed)
        assert inv.lamps == lamps
        _check_streets(inv)
        counts = {c: int((np.array(inv.road_class)[inv.lamp_road - 1] == c).sum()) for c in ROAD_CLASSES}
        assert all(counts.values()), counts


def test_same_seed_same_city_other_seed_other_city() -> None:
    a, b, c = generate(5000, seed=4), generate(5000, seed=4), generate(5000, seed=5)
    assert a.lamp_id == b.lamp_id and np.array_equal(a.lamp_lat, b.lamp_lat)
    assert np.array_equal(a.lamp_rated_w, b.lamp_rated_w) and a.road_name_zh == b.road_name_zh
    assert not np.array_equal(a.lamp_lat, c.lamp_lat)

"""The generated city's fixed geography: a local metric plane, Xining's three rivers, and each district's territory.

Everything here is the same for every seed and size; `seeds.generator` lays the streets and lamps on it. Plane
coordinates are metres east (x) and north (y) of `ORIGIN`; over the city's 80 km the flat-earth error stays below
0.1%, far under a lamp's spacing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "ORIGIN",
    "RIVERS",
    "Points",
    "Proximity",
    "River",
    "arc_lengths",
    "chaikin",
    "courses",
    "inside",
    "offset_polyline",
    "resample",
    "territories",
    "to_latlon",
    "to_xy",
]

Points = npt.NDArray[np.float64]  # (n, 2): x, y in metres

ORIGIN = (36.62, 101.77)  # lat, lon: the confluence of the Huangshui, Beichuan and Nanchuan rivers
_M_PER_DEG_LAT = 111_320.0
_M_PER_DEG_LON = _M_PER_DEG_LAT * math.cos(math.radians(ORIGIN[0]))


def to_xy(lat: npt.ArrayLike, lon: npt.ArrayLike) -> Points:
    """Latitudes and longitudes to plane points (n, 2)."""
    la, lo = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    return np.column_stack([(lo - ORIGIN[1]) * _M_PER_DEG_LON, (la - ORIGIN[0]) * _M_PER_DEG_LAT])


def to_latlon(p: Points) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Plane points (n, 2) to (latitudes, longitudes)."""
    return ORIGIN[0] + p[:, 1] / _M_PER_DEG_LAT, ORIGIN[1] + p[:, 0] / _M_PER_DEG_LON


@dataclass(frozen=True)
class River:
    code: str
    name_zh: str
    name_en: str
    course: tuple[tuple[float, float], ...]  # (lat, lon) downstream, approximate

    def line(self, step_m: float = 20.0) -> Points:
        """The river's smoothed course in the plane, sampled every `step_m` metres (`courses` joins tributaries)."""
        lat, lon = zip(*self.course, strict=True)
        return resample(chaikin(to_xy(lat, lon), 4), step_m)


# The Huangshui runs east down its valley through Huangyuan and Xining; the Beichuan comes down from Datong in
# the north and the Nanchuan from Huangzhong in the south-west, both joining it in the city centre.
RIVERS: tuple[River, ...] = (
    River(
        "huangshui",
        "湟水",
        "Huangshui River",
        (
            (36.800, 101.130),
            (36.725, 101.215),
            (36.684, 101.262),
            (36.660, 101.350),
            (36.636, 101.460),
            (36.620, 101.560),
            (36.626, 101.660),
            (36.628, 101.720),
            (36.621, 101.770),
            (36.611, 101.820),
            (36.594, 101.880),
            (36.560, 101.960),
        ),
    ),
    River(
        "beichuan",
        "北川河",
        "Beichuan River",
        (
            (37.010, 101.655),
            (36.935, 101.688),
            (36.850, 101.702),
            (36.760, 101.730),
            (36.690, 101.752),
            (36.645, 101.764),
            (36.623, 101.768),
        ),
    ),
    River(
        "nanchuan",
        "南川河",
        "Nanchuan River",
        (
            (36.430, 101.545),
            (36.495, 101.575),
            (36.540, 101.650),
            (36.572, 101.720),
            (36.600, 101.760),
            (36.619, 101.771),
        ),
    ),
)


def courses(step_m: float = 20.0) -> dict[str, Points]:
    """Each river's course in the plane; a tributary (every river after the first) ends on the first one, at the
    point of its course nearest the tributary's last point."""
    main = RIVERS[0].line(step_m)
    lines = {RIVERS[0].code: main}
    for r in RIVERS[1:]:
        lat, lon = zip(*r.course, strict=True)
        pts = to_xy(lat, lon)
        pts[-1] = main[int(np.argmin(np.hypot(*(main - pts[-1]).T)))]
        lines[r.code] = resample(chaikin(pts, 4), step_m)
    return lines


def chaikin(p: Points, iterations: int) -> Points:
    """Corner cutting: a smooth curve through the middle of the polyline's segments, ends kept."""
    for _ in range(iterations):
        a, b = p[:-1], p[1:]
        mid = np.empty((2 * len(a), 2))
        mid[0::2] = 0.75 * a + 0.25 * b
        mid[1::2] = 0.25 * a + 0.75 * b
        p = np.vstack([p[:1], mid, p[-1:]])
    return p


def arc_lengths(p: Points) -> npt.NDArray[np.float64]:
    return np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(p, axis=0).T))])


def resample(p: Points, step_m: float) -> Points:
    """The polyline with vertices every `step_m` metres along it (the last one at its end)."""
    s = arc_lengths(p)
    at = np.append(np.arange(0.0, s[-1], step_m), s[-1])
    return np.column_stack([np.interp(at, s, p[:, 0]), np.interp(at, s, p[:, 1])])


def offset_polyline(p: Points, d: float) -> Points:
    """The polyline moved `d` metres to its left (right when negative), along each vertex's normal."""
    t = np.gradient(p, axis=0)
    t /= np.hypot(t[:, 0], t[:, 1])[:, None]
    return p + d * np.column_stack([-t[:, 1], t[:, 0]])


class Proximity:
    """Whether points lie within `radius` metres of any of the polylines, to within one raster cell (`cell` m):
    a mask painted once, then a lookup per point, for the millions of candidate lamps of a large city."""

    def __init__(self, lines: list[Points], radius: float, bounds: Points, cell: float = 20.0):
        self.cell = cell
        self.origin = bounds.min(axis=0) - radius - cell
        size = np.ceil((bounds.max(axis=0) + radius + cell - self.origin) / cell).astype(int) + 1
        self.mask = np.zeros((int(size[1]), int(size[0])), dtype=np.bool_)
        k = math.ceil(radius / cell)
        dx, dy = np.meshgrid(np.arange(-k, k + 1), np.arange(-k, k + 1))
        disc = np.hypot(dx, dy) * cell <= radius
        for line in lines:
            if len(line) < 2:
                continue
            ij = np.unique(self._cells(resample(line, cell / 2)), axis=0)
            ij = ij[((ij >= -k) & (ij < size + k)).all(axis=1)]
            for ox, oy in zip(dx[disc], dy[disc], strict=True):
                x, y = ij[:, 0] + ox, ij[:, 1] + oy
                ok = (x >= 0) & (y >= 0) & (x < size[0]) & (y < size[1])
                self.mask[y[ok], x[ok]] = True

    def _cells(self, q: Points) -> npt.NDArray[np.int64]:
        cells: npt.NDArray[np.int64] = np.floor((q - self.origin) / self.cell).astype(np.int64)
        return cells

    def __call__(self, q: Points) -> npt.NDArray[np.bool_]:
        ij = self._cells(q)
        h, w = self.mask.shape
        ok = (ij[:, 0] >= 0) & (ij[:, 1] >= 0) & (ij[:, 0] < w) & (ij[:, 1] < h)
        out = np.zeros(len(q), dtype=np.bool_)
        out[ok] = self.mask[ij[ok, 1], ij[ok, 0]]
        return out


def inside(q: Points, polygon: Points) -> npt.NDArray[np.bool_]:
    """Even-odd test of each point against a closed polygon (its last vertex joins its first)."""
    x, y = q[:, 0], q[:, 1]
    res = np.zeros(len(q), dtype=np.bool_)
    px, py = polygon[:, 0], polygon[:, 1]
    qx, qy = np.roll(px, 1), np.roll(py, 1)
    for x1, y1, x2, y2 in zip(px, py, qx, qy, strict=True):
        crosses = (y1 > y) != (y2 > y)
        if not crosses.any():
            continue
        xi = x1 + (y - y1) * (x2 - x1) / ((y2 - y1) or 1e-12)
        res ^= crosses & (x < xi)
    return res


def _clip(poly: Points, a: npt.NDArray[np.float64], b: float) -> Points:
    """The part of the polygon where a·x <= b (Sutherland-Hodgman against one half-plane)."""
    out: list[npt.NDArray[np.float64]] = []
    n = len(poly)
    for i in range(n):
        p, q = poly[i], poly[(i + 1) % n]
        fp, fq = float(a @ p) - b, float(a @ q) - b
        if fp <= 0:
            out.append(p)
        if (fp < 0 < fq) or (fq < 0 < fp):
            out.append(p + (q - p) * (fp / (fp - fq)))
    return np.array(out) if out else np.empty((0, 2))


def territories(centres: Points, power_m: npt.NDArray[np.float64], reach_m: npt.NDArray[np.float64]) -> list[Points]:
    """Each district's territory: its cell of the power diagram of the centres (weights `power_m`, so a county's
    border lies farther out than an urban district's), within an irregular outer limit about `reach_m` from its
    centre. Neighbours share their border exactly; no two territories overlap."""
    out = []
    angles = np.linspace(0.0, 2 * math.pi, 96, endpoint=False)
    for i, c in enumerate(centres):
        # The outer limit wavers with the angle, as hills and valleys would bend it; fixed per district.
        wobble = 1 + 0.14 * np.sin(3 * angles + 1.7 * i) + 0.07 * np.sin(7 * angles + 0.9 * i)
        poly = c + reach_m[i] * wobble[:, None] * np.column_stack([np.cos(angles), np.sin(angles)])
        for j, other in enumerate(centres):
            if j == i:
                continue
            # |x - c|² - w_c² <= |x - o|² - w_o²  ⇔  2 x·(o - c) <= |o|² - |c|² + w_c² - w_o²
            a = 2 * (other - c)
            b = float(other @ other - c @ c + power_m[i] ** 2 - power_m[j] ** 2)
            poly = _clip(poly, a, b)
        out.append(poly)
    return out

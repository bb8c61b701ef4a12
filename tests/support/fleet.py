"""A small simulated fleet's inventory, built in memory for the simulator's own tests."""

from __future__ import annotations

import numpy as np

from simulator.fleet import FleetSpec

__all__ = ["single_lamps"]


def single_lamps(n: int = 4) -> FleetSpec:
    """`n` single-lamp controllers of 100 W (XN-CD-000001 …) on one cabinet without a concentrator."""
    return FleetSpec(
        lamp_id=[f"XN-CD-{i:06d}" for i in range(1, n + 1)],
        lamp_district=["cd"] * n,
        lamp_cabinet=np.zeros(n, dtype=np.int32),
        lamp_concentrator=np.zeros(n, dtype=np.bool_),
        lamp_rated_w=np.full(n, 100.0, dtype=np.float32),
        lamp_led=np.ones(n, dtype=np.bool_),
        cabinet_id=["XN-CD-C0001"],
        cabinet_district=["cd"],
        cabinet_circuits=np.array([1], dtype=np.int16),
        cabinet_concentrator=np.zeros(1, dtype=np.bool_),
    )

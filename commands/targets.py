"""What a command's target means in lamps, and the schedule scopes its override is written to.

Targets: `{"lamps": [...]}`, `{"cabinet": id, "circuit"?: n}`, `{"road": id}`, `{"district": code}`,
`{"road_class": name}`, `{"all": true}`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from commands.model import CommandError
from inventory.index import ROAD_CLASSES, FleetIndex

__all__ = ["resolve"]


def resolve(index: FleetIndex, target: dict[str, Any]) -> tuple[npt.NDArray[np.intp], list[tuple[str, str]]]:
    """Lamp slots of a target, and the schedule scopes its override is written to."""
    keys = set(target)
    if len(keys - {"circuit"}) != 1:
        raise CommandError(
            "target names exactly one of lamps, cabinet (and circuit), road, district, road_class, all", "target"
        )
    ix = index
    if "lamps" in target:
        ids = target["lamps"]
        if not isinstance(ids, list) or not ids or not all(isinstance(x, str) for x in ids):
            raise CommandError("target.lamps must be a non-empty list of lamp ids", "target.lamps")
        unknown = [x for x in ids if x not in ix.slot_of_id]
        if unknown:
            raise CommandError(
                f"unknown lamps: {', '.join(unknown[:5])}" + (" …" if len(unknown) > 5 else ""), "target.lamps"
            )
        slots = np.array(sorted({ix.slot_of_id[x] for x in ids}), dtype=np.intp)
        return slots, [("lamp", ix.lamp_id[i]) for i in slots.tolist()]
    if "cabinet" in target:
        cab = ix.cabinet_of.get(str(target["cabinet"]))
        if cab is None:
            raise CommandError(f"unknown cabinet {target['cabinet']!r}", "target.cabinet")
        slots = ix.lamps_of_cabinet(cab)
        if "circuit" in target:
            assert ix.lamp_circuit is not None
            circuit = target["circuit"]
            if not isinstance(circuit, int) or not 1 <= circuit <= 6:
                raise CommandError("target.circuit must be 1–6", "target.circuit")
            slots = slots[ix.lamp_circuit[slots] == circuit]
            if not len(slots):
                raise CommandError(f"cabinet {target['cabinet']} has no lamps on circuit {circuit}", "target.circuit")
            return np.sort(slots), [("lamp", ix.lamp_id[i]) for i in np.sort(slots).tolist()]
        return np.sort(slots), [("cabinet", ix.cabinet_ids[cab])]
    if "road" in target:
        raw = target["road"]
        number = str(raw) if isinstance(raw, int | str) and not isinstance(raw, bool) else ""
        road = ix.road_of.get(int(number)) if number.isascii() and number.isdigit() else None
        if road is None:
            raise CommandError(f"unknown road {target['road']!r}", "target.road")
        return np.flatnonzero(ix.lamp_road == road), [("road", str(int(ix.road_ids[road])))]
    if "district" in target:
        d = ix.district_of.get(str(target["district"]))
        if d is None:
            raise CommandError(f"unknown district {target['district']!r}", "target.district")
        return np.flatnonzero(ix.lamp_district == d), [("district", ix.districts[d])]
    if "road_class" in target:
        name = str(target["road_class"])
        if name not in ROAD_CLASSES:
            raise CommandError(f"road_class must be one of {', '.join(ROAD_CLASSES)}", "target.road_class")
        cls = ROAD_CLASSES.index(name)
        roads = np.flatnonzero(ix.road_class == cls)
        return np.flatnonzero(ix.lamp_class == cls), [("road", str(int(ix.road_ids[r]))) for r in roads.tolist()]
    if target.get("all") is True:
        return np.arange(ix.n, dtype=np.intp), [("city", "all")]
    raise CommandError(f"unknown target {sorted(keys)}", "target")

"""Open data: the inventory and its latest state as FIWARE Smart Data Models street-lighting entities (NGSI-LD).

Three entity types, from the models' `dataModel.Streetlighting`:

- `Streetlight`: one per lamp: position, circuit, rated power, the latest report (power state, level, power,
  voltage, current, power factor, the energy counter) and a status from its faults;
- `StreetlightControlCabinet`: one per cabinet: position, its groups, working mode, features, the meter's reading;
- `StreetlightGroup`: one per circuit of a cabinet (the lamps that one contactor switches together): its lamps
  and their positions, its cabinet, its contactor's state.

Entity ids are URNs, `urn:ngsi-ld:{type}:{id}` (a group: `{cabinet}-C{circuit}`). An entity is built in the
models' simplified form (NGSI-LD `keyValues`), which their JSON Schemas describe; `normalized` turns it into the
NGSI-LD normalised form (each attribute a Property, GeoProperty or Relationship). Pure: rows in, JSON out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Final

__all__ = [
    "CONTEXT",
    "TYPES",
    "cabinet_entity",
    "entity_urn",
    "group_entity",
    "lamp_status",
    "normalized",
    "split_urn",
    "streetlight_entity",
]

# The Smart Data Models' street-lighting @context, then the NGSI-LD core context.
CONTEXT: Final = [
    "https://smart-data-models.github.io/dataModel.Streetlighting/context.jsonld",
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
]
TYPES: Final = ("Streetlight", "StreetlightControlCabinet", "StreetlightGroup")
PROVIDER: Final = "lamplighter"

# Attributes that name other entities: Relationships in the normalised form.
_RELATIONSHIPS = frozenset(
    {"refStreetlightGroup", "refStreetlightControlCabinet", "refStreetlight", "refDevice", "refStreetlightModel"}
)
# Attributes that are the time of an observation: the normalised form adds it as `observedAt` to the measured ones.
_MEASURED = frozenset(
    {"powerState", "illuminanceLevel", "powerConsumption", "voltage", "current", "powerFactor", "status"}
    | {"lifetimePowerConsumption", "lastMeterReading", "energyConsumed", "workingMode"}
)
# A lamp's device faults, as the model's status: the lantern (lamp, driver, relay…) or the column (pole, leakage).
_COLUMN_FAULTS = frozenset({"tilt", "leakage_current"})
_LANTERN_FAULTS = frozenset(
    {"lamp_failure", "driver_failure", "relay_failure", "dimming_failure", "over_temperature", "night_out"}
)


def entity_urn(kind: str, key: str) -> str:
    return f"urn:ngsi-ld:{kind}:{key}"


def split_urn(urn: str) -> tuple[str, str] | None:
    """`urn:ngsi-ld:{type}:{id}` → (type, id); None for anything else."""
    parts = urn.split(":", 3)
    if len(parts) != 4 or parts[:2] != ["urn", "ngsi-ld"] or parts[2] not in TYPES or not parts[3]:
        return None
    return parts[2], parts[3]


def group_key(cabinet: str, circuit: int) -> str:
    return f"{cabinet}-C{circuit}"


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def lamp_status(faults: Sequence[str]) -> str:
    """The model's `status` from a lamp's faults (device-reported and live tickets'): `columnIssue` for the pole
    (struck, leaning, leaking current), `defectiveLamp` for the lantern, `ok` otherwise."""
    codes = set(faults)
    if codes & _COLUMN_FAULTS:
        return "columnIssue"
    if codes & _LANTERN_FAULTS:
        return "defectiveLamp"
    return "ok"


def _power_state(on: bool | None, dim: int | None) -> str | None:
    if on is None:
        return None
    if not on or dim == 0:
        return "off"
    return "low" if dim is not None and dim < 100 else "on"


def _drop_none(entity: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entity.items() if v is not None}


def _point(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [round(lon, 7), round(lat, 7)]}


def _service_started(installed_on: dt.date | None, timezone: dt.tzinfo) -> str | None:
    if installed_on is None:
        return None
    return _iso(dt.datetime.combine(installed_on, dt.time(0), timezone))


def streetlight_entity(lamp: dict[str, Any], timezone: dt.tzinfo, city: str) -> dict[str, Any]:
    """A lamp row (inventory, road and district names, latest report, live faults) as a `Streetlight`."""
    on, dim = lamp.get("on"), lamp.get("dim")
    energy = lamp.get("energy_wh")
    return _drop_none(
        {
            "id": entity_urn("Streetlight", lamp["id"]),
            "type": "Streetlight",
            "name": lamp["id"],
            "description": f"{lamp['technology']} street lamp, {lamp['rated_w']:g} W, on {lamp['road_name_en']}",
            "location": _point(lamp["lon"], lamp["lat"]),
            "areaServed": lamp["road_name_en"],
            "address": {
                "addressLocality": city,
                "addressRegion": lamp["district_name_en"],
                "streetAddress": lamp["road_name_en"],
            },
            "municipalityInfo": {"cityName": city, "district": lamp["district_name_en"], "zoneId": lamp["district"]},
            "dataProvider": PROVIDER,
            "status": lamp_status(lamp.get("faults") or ()),
            "powerState": _power_state(on, dim),
            "illuminanceLevel": None if dim is None else dim / 100,
            "circuit": f"{lamp['cabinet_id']}/{lamp['circuit']}",
            "controllingMethod": "individual",  # every lamp takes commands of its own, alone or through its cabinet
            "locationCategory": "road",
            "powerRating": float(lamp["rated_w"]),
            "powerConsumption": lamp.get("power_w"),
            "voltage": lamp.get("voltage_v"),
            "current": lamp.get("current_a"),
            "powerFactor": lamp.get("power_factor"),
            "lifetimePowerConsumption": None if energy is None else energy / 1000,  # kWh, the lamp's own counter
            "observationDateTime": _iso(lamp.get("ts")),
            "dateServiceStarted": _service_started(lamp.get("installed_on"), timezone),
            "refStreetlightControlCabinet": entity_urn("StreetlightControlCabinet", lamp["cabinet_id"]),
            "refStreetlightGroup": entity_urn("StreetlightGroup", group_key(lamp["cabinet_id"], lamp["circuit"])),
        }
    )


def cabinet_entity(cab: dict[str, Any], city: str) -> dict[str, Any]:
    """A cabinet row (inventory, circuits with lamps, latest report, whether an operator holds it) as a
    `StreetlightControlCabinet`."""
    groups = [entity_urn("StreetlightGroup", group_key(cab["id"], c)) for c in cab["circuits_used"]]
    energy = cab.get("energy_wh")
    return _drop_none(
        {
            "id": entity_urn("StreetlightControlCabinet", cab["id"]),
            "type": "StreetlightControlCabinet",
            "name": cab["id"],
            "description": (
                f"distribution cabinet, {cab['circuits']} circuit(s), {cab['lamps']} lamps"
                + (", with a concentrator" if cab["concentrator"] else "")
            ),
            "location": _point(cab["lon"], cab["lat"]),
            "areaServed": cab["road_name_en"],
            "address": {
                "addressLocality": city,
                "addressRegion": cab["district_name_en"],
                "streetAddress": cab["road_name_en"],
            },
            "dataProvider": PROVIDER,
            "refStreetlightGroup": groups,
            # Following its lamps' schedule, unless an operator's override holds the cabinet now.
            "workingMode": "manual" if cab.get("held") else "automatic",
            "features": ["astronomicalClock", "individualControl"] if cab["concentrator"] else ["astronomicalClock"],
            "energyConsumed": None if energy is None else energy / 1000,  # kWh since the meter started
            "lastMeterReading": None if energy is None else energy / 1000,
        }
    )


def group_entity(group: dict[str, Any]) -> dict[str, Any]:
    """One circuit of a cabinet (its lamps, their positions, the contactor's latest state) as a
    `StreetlightGroup`."""
    closed = group.get("contactor")
    points = [[round(x, 7), round(y, 7)] for x, y in zip(group["lons"], group["lats"], strict=True)]
    return _drop_none(
        {
            "id": entity_urn("StreetlightGroup", group_key(group["cabinet_id"], group["circuit"])),
            "type": "StreetlightGroup",
            "name": f"{group['cabinet_id']} circuit {group['circuit']}",
            "location": {"type": "MultiPoint", "coordinates": points}
            if len(points) > 1
            else {"type": "Point", "coordinates": points[0]},
            "areaServed": group["road_name_en"],
            "dataProvider": PROVIDER,
            "circuitId": str(group["circuit"]),
            "powerState": None if closed is None else ("on" if closed else "off"),
            "refStreetlightControlCabinet": entity_urn("StreetlightControlCabinet", group["cabinet_id"]),
            "refStreetlight": [entity_urn("Streetlight", lamp) for lamp in group["lamp_ids"]],
        }
    )


def normalized(entity: dict[str, Any]) -> dict[str, Any]:
    """The simplified entity in NGSI-LD's normalised form: `location` a GeoProperty, references Relationships
    (`object`), the rest Properties (`value`), the measured ones with `observedAt`."""
    observed = entity.get("observationDateTime")
    out: dict[str, Any] = {"id": entity["id"], "type": entity["type"]}
    for name, value in entity.items():
        if name in ("id", "type"):
            continue
        if name == "location":
            out[name] = {"type": "GeoProperty", "value": value}
        elif name in _RELATIONSHIPS:
            out[name] = {"type": "Relationship", "object": value}
        else:
            attr: dict[str, Any] = {"type": "Property", "value": value}
            if observed is not None and name in _MEASURED:
                attr["observedAt"] = observed
            out[name] = attr
    return out

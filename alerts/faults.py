"""The fault catalogue of docs/domain.md: every fault a lamp or a cabinet can have, its priority and its source.

Lamp faults are bits of a uint32 mask, so rules can be evaluated over a whole fleet at once: the device codes
keep the bit they have in `telemetry.fleet.FAULT_BITS` (unknown codes share bit 11), the faults the backend
derives follow. Cabinet faults are bits of a second mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from telemetry.fleet import FAULT_BITS

__all__ = [
    "CABINET_FAULTS",
    "LAMP_FAULTS",
    "OUTAGE_FAMILY",
    "PRIORITIES",
    "FaultKind",
    "cabinet_bit",
    "lamp_bit",
    "lamp_device_mask",
    "names_of",
]

PRIORITIES = ("P1", "P2", "P3", "P4")


@dataclass(frozen=True)
class FaultKind:
    code: str
    priority: str
    source: str  # "device" or "backend"


_DEVICE_PRIORITY = {
    "lamp_failure": "P3",
    "driver_failure": "P3",
    "relay_failure": "P3",
    "supply_loss": "P3",
    "dimming_failure": "P3",
    "over_voltage": "P3",
    "under_voltage": "P3",
    "over_temperature": "P3",
    "leakage_current": "P1",
    "tilt": "P1",
    "meter_failure": "P4",
}
_DEVICE_CODES = sorted(FAULT_BITS, key=FAULT_BITS.__getitem__)

LAMP_FAULTS: tuple[FaultKind, ...] = (
    *(FaultKind(code, _DEVICE_PRIORITY[code], "device") for code in _DEVICE_CODES),
    FaultKind("unknown_fault", "P4", "device"),  # a code the protocol does not name: shown, never dropped
    FaultKind("night_out", "P3", "backend"),
    FaultKind("day_burning", "P3", "backend"),
    FaultKind("comm_loss", "P3", "backend"),
    FaultKind("power_anomaly", "P3", "backend"),
    FaultKind("cycling", "P3", "backend"),
)
_LAMP_BIT = {k.code: i for i, k in enumerate(LAMP_FAULTS)}

CABINET_FAULTS: tuple[FaultKind, ...] = (
    FaultKind("leakage_current", "P1", "device"),
    FaultKind("door_open", "P1", "device"),
    FaultKind("cabinet_outage", "P2", "device"),  # mains_loss, phase_loss, circuit_open, contactor_failure
    FaultKind("comm_loss", "P2", "backend"),  # the concentrator went silent: its whole cabinet is unknown
    FaultKind("lamps_out", "P2", "backend"),  # most of a cabinet's or circuit's due lamps dark or silent at once
)
_CABINET_BIT = {k.code: i for i, k in enumerate(CABINET_FAULTS)}
# Cabinet fault codes (docs/protocol.md) that mean its lamps are without supply.
CABINET_OUTAGE_CODES = ("mains_loss", "phase_loss", "circuit_open", "contactor_failure")

# Lamp faults that a cabinet outage explains: the lamps behind it get no tickets of their own for these.
OUTAGE_FAMILY = (1 << _LAMP_BIT["night_out"]) | (1 << _LAMP_BIT["comm_loss"]) | (1 << _LAMP_BIT["supply_loss"])


def lamp_bit(code: str) -> int:
    return 1 << _LAMP_BIT[code]


def cabinet_bit(code: str) -> int:
    return 1 << _CABINET_BIT[code]


def lamp_device_mask(device_bits: npt.NDArray[np.uint16]) -> npt.NDArray[np.uint32]:
    """FleetState's device fault bits → lamp fault mask bits (unknown codes move from bit 15 to their own)."""
    mask = (device_bits & 0x7FF).astype(np.uint32)
    mask |= ((device_bits >> 15) & 1).astype(np.uint32) << _LAMP_BIT["unknown_fault"]
    return mask


def names_of(mask: int, kinds: tuple[FaultKind, ...]) -> list[str]:
    return [k.code for i, k in enumerate(kinds) if mask >> i & 1]

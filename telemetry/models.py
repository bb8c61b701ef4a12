"""Shared shapes of decoded telemetry: what the gateway's codec produces and the store writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from msgspec import UNSET as _UNSET

__all__ = ["Batch", "CabinetRow", "LampRows", "Reject", "StatusRow"]


@dataclass(frozen=True, slots=True)
class Reject:
    topic: str
    payload: bytes  # first QUARANTINE_BYTES only
    reason: str
    detail: str
    received_ms: int


@dataclass
class LampRows:
    """Columnar lamp readings, in the order of the `lamp_readings` table."""

    ts: list[int] = field(default_factory=list)
    lamp_no: list[int] = field(default_factory=list)
    seq: list[int] = field(default_factory=list)
    on: list[bool] = field(default_factory=list)
    dim: list[int] = field(default_factory=list)
    power_w: list[float | None] = field(default_factory=list)
    voltage_v: list[float | None] = field(default_factory=list)
    current_a: list[float | None] = field(default_factory=list)
    power_factor: list[float | None] = field(default_factory=list)
    energy_wh: list[int | None] = field(default_factory=list)
    temp_c: list[float | None] = field(default_factory=list)
    lux: list[float | None] = field(default_factory=list)
    rssi_dbm: list[int | None] = field(default_factory=list)
    mode: list[str | None] = field(default_factory=list)
    burn_h: list[int | None] = field(default_factory=list)
    starts: list[int | None] = field(default_factory=list)
    driver_temp_c: list[float | None] = field(default_factory=list)
    leakage_ma: list[float | None] = field(default_factory=list)
    faults: list[list[str]] = field(default_factory=list)
    received_ms: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ts)

    def truncate(self, n: int) -> None:
        """Keep the first `n` readings."""
        for column in self.__dict__.values():
            del column[n:]

    def append(self, lamp_no: int, s: Any, received_ms: int) -> None:
        """Append one decoded lamp report (any object with the report's attributes; unset ones are UNSET)."""
        self.ts.append(s.ts)
        self.lamp_no.append(lamp_no)
        self.seq.append(s.seq)
        self.on.append(s.on)
        self.dim.append(s.dim)
        self.power_w.append(None if s.power_w is _UNSET else s.power_w)
        self.voltage_v.append(None if s.voltage_v is _UNSET else s.voltage_v)
        self.current_a.append(None if s.current_a is _UNSET else s.current_a)
        self.power_factor.append(None if s.power_factor is _UNSET else s.power_factor)
        self.energy_wh.append(None if s.energy_wh is _UNSET else s.energy_wh)
        self.temp_c.append(None if s.temp_c is _UNSET else s.temp_c)
        self.lux.append(None if s.lux is _UNSET else s.lux)
        self.rssi_dbm.append(None if s.rssi_dbm is _UNSET else s.rssi_dbm)
        self.mode.append(None if s.mode is _UNSET else s.mode)
        self.burn_h.append(None if s.burn_h is _UNSET else s.burn_h)
        self.starts.append(None if s.starts is _UNSET else s.starts)
        self.driver_temp_c.append(None if s.driver_temp_c is _UNSET else s.driver_temp_c)
        self.leakage_ma.append(None if s.leakage_ma is _UNSET else s.leakage_ma)
        self.faults.append(s.faults)
        self.received_ms.append(received_ms)


@dataclass(frozen=True, slots=True)
class CabinetRow:
    ts: int
    cabinet_no: int
    seq: int
    door_open: bool
    contactors: list[bool]
    phase_voltage_v: list[float] | None
    circuit_current_a: list[float] | None
    leakage_ma: float | None
    energy_wh: int | None
    faults: list[str]
    lamp_count: int
    received_ms: int


@dataclass(frozen=True, slots=True)
class StatusRow:
    kind: str
    device: str
    online: bool
    ts: int


@dataclass
class Batch:
    """What one batch of messages decoded into."""

    lamps: LampRows = field(default_factory=LampRows)
    cabinets: list[CabinetRow] = field(default_factory=list)
    statuses: list[StatusRow] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    # The gateway's clock when the batch was decoded. A device's latest state held from later than this (its
    # clock ran ahead, or a demo ran on a later clock) gives way to what it reports now.
    now_ms: int | None = None

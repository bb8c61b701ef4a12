"""Field protocol v1 codec: MQTT topic and payload bytes → validated readings, or a reject with its reason.

Pure: no I/O, no clock (the caller passes `now_ms`), no MQTT client. `decode_batch` turns a batch of raw
messages into columnar readings for the COPY writer plus the rejects for the quarantine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Final, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from telemetry.models import Batch, CabinetRow, Registry, Reject, StatusRow

__all__ = [
    "MAX_PAYLOAD",
    "REASONS",
    "Batch",
    "CabinetState",
    "LampState",
    "Message",
    "Registry",
    "Reject",
    "Status",
    "Topic",
    "decode_batch",
    "parse_topic",
]

MAX_PAYLOAD: Final = 4096  # PROTOCOL.md: a lamp state report is at most 4 KiB
# A cabinet report carries up to 250 lamps of up to ~300 bytes each in practice.
MAX_CABINET_PAYLOAD: Final = 256 * 1024
FUTURE_TOLERANCE_MS: Final = 5 * 60 * 1000
QUARANTINE_BYTES: Final = 1024
SEQ_MAX: Final = 2**31 - 1

REASONS: Final = (
    "bad_topic",
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "out_of_range",
    "too_large",
    "unknown_device",
    "district_mismatch",
    "ts_in_future",
    "ts_too_old",
)

NonNeg = Annotated[float, Meta(ge=0)]
FaultCode = Annotated[str, Meta(min_length=1, max_length=64)]
Seq = Annotated[int, Meta(ge=0, le=SEQ_MAX)]
Ts = Annotated[int, Meta(ge=0)]


class LampState(msgspec.Struct, forbid_unknown_fields=False):
    """A lamp state report (unknown fields are ignored, as the protocol asks)."""

    ts: Ts
    seq: Seq
    on: bool
    dim: Annotated[int, Meta(ge=0, le=100)]
    faults: list[FaultCode]
    power_w: NonNeg | UnsetType = UNSET
    voltage_v: NonNeg | UnsetType = UNSET
    current_a: NonNeg | UnsetType = UNSET
    power_factor: Annotated[float, Meta(ge=0, le=1)] | UnsetType = UNSET
    energy_wh: Annotated[int, Meta(ge=0)] | UnsetType = UNSET
    temp_c: float | UnsetType = UNSET
    lux: NonNeg | UnsetType = UNSET
    rssi_dbm: Annotated[int, Meta(ge=-32768, le=32767)] | UnsetType = UNSET
    mode: Literal["auto", "manual"] | UnsetType = UNSET


class CabinetLamp(LampState, kw_only=True):
    id: Annotated[str, Meta(pattern=r"^[A-Z0-9][A-Z0-9-]{3,31}$")]


class CabinetState(msgspec.Struct):
    ts: Ts
    seq: Seq
    door_open: bool
    contactors: Annotated[list[bool], Meta(min_length=1, max_length=6)]
    faults: list[FaultCode]
    phase_voltage_v: Annotated[list[NonNeg], Meta(min_length=3, max_length=3)] | UnsetType = UNSET
    circuit_current_a: Annotated[list[NonNeg], Meta(max_length=6)] | UnsetType = UNSET
    leakage_ma: NonNeg | UnsetType = UNSET
    energy_wh: Annotated[int, Meta(ge=0)] | UnsetType = UNSET
    # Decoded one by one, so one bad lamp does not cost the other 249 their readings.
    lamps: list[msgspec.Raw] | UnsetType = UNSET


class Status(msgspec.Struct):
    online: bool
    ts: Ts


_lamp_decoder = msgspec.json.Decoder(LampState)
_cab_lamp_decoder = msgspec.json.Decoder(CabinetLamp)
_cabinet_decoder = msgspec.json.Decoder(CabinetState)
_status_decoder = msgspec.json.Decoder(Status)


@dataclass(frozen=True, slots=True)
class Topic:
    district: str
    kind: Literal["lamp", "cabinet"]
    device: str
    channel: Literal["state", "status"]


def parse_topic(topic: str) -> Topic | None:
    """`sl/{district}/{lamp|cabinet}/{id}/{state|status}` → Topic; None for anything else."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != "sl":
        return None
    _, district, kind, device, channel = parts
    if kind not in ("lamp", "cabinet") or channel not in ("state", "status") or not district or not device:
        return None
    return Topic(district, kind, device, channel)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT message as received; `token` is whatever the transport needs to acknowledge it."""

    topic: str
    payload: bytes
    received_ms: int
    token: object = None


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _classify(exc: msgspec.DecodeError) -> _Rejected:
    """Map msgspec's error text onto the protocol's reject reasons, keeping its message as the detail."""
    msg = str(exc)
    if not isinstance(exc, msgspec.ValidationError):
        return _Rejected("not_json", msg)
    if "missing required field" in msg:
        return _Rejected("missing_field", msg)
    if msg.startswith("Expected `object`") and ("at `$`" in msg or " - at " not in msg):
        return _Rejected("not_object", msg)
    if "Expected `" in msg and ", got `" in msg:
        return _Rejected("wrong_type", msg)
    return _Rejected("out_of_range", msg)


def _check_ts(ts: int, now_ms: int, oldest_ms: int) -> None:
    if ts > now_ms + FUTURE_TOLERANCE_MS:
        raise _Rejected("ts_in_future", f"ts {ts} is {(ts - now_ms) / 1000:.0f} s ahead of the gateway clock")
    if ts < oldest_ms:
        raise _Rejected("ts_too_old", f"ts {ts} is older than the retention window (oldest accepted {oldest_ms})")


def decode_batch(messages: Sequence[Message], registry: Registry, *, now_ms: int, retention_ms: int) -> Batch:
    """Decode and validate every message; nothing raises, every problem becomes a Reject."""
    out = Batch()
    oldest = now_ms - retention_ms
    for m in messages:
        try:
            _decode_one(m, registry, now_ms, oldest, out)
        except _Rejected as r:
            out.rejects.append(Reject(m.topic, m.payload[:QUARANTINE_BYTES], r.reason, r.detail, m.received_ms))
    return out


def _decode_one(m: Message, reg: Registry, now_ms: int, oldest: int, out: Batch) -> None:
    t = parse_topic(m.topic)
    if t is None:
        raise _Rejected(
            "bad_topic", f"topic {m.topic!r} is not sl/{{district}}/{{lamp|cabinet}}/{{id}}/{{state|status}}"
        )
    limit = MAX_CABINET_PAYLOAD if (t.kind == "cabinet" and t.channel == "state") else MAX_PAYLOAD
    if len(m.payload) > limit:
        raise _Rejected("too_large", f"payload of {len(m.payload)} bytes exceeds the {limit}-byte limit")
    known = (reg.lamps if t.kind == "lamp" else reg.cabinets).get(t.device)
    if known is None:
        raise _Rejected("unknown_device", f"{t.kind} {t.device!r} is not in the registry")
    number, district = known
    if district != t.district:
        raise _Rejected(
            "district_mismatch", f"{t.kind} {t.device!r} belongs to district {district!r}, topic says {t.district!r}"
        )
    try:
        if t.channel == "status":
            st = _status_decoder.decode(m.payload)
            out.statuses.append(StatusRow(t.kind, t.device, st.online, st.ts))
            return
        if t.kind == "lamp":
            lamp = _lamp_decoder.decode(m.payload)
            _check_ts(lamp.ts, now_ms, oldest)
            out.lamps.append(number, lamp, m.received_ms)
            return
        cab = _cabinet_decoder.decode(m.payload)
    except msgspec.DecodeError as exc:
        raise _classify(exc) from None
    _check_ts(cab.ts, now_ms, oldest)
    lamps = [] if cab.lamps is UNSET else cab.lamps
    for raw in lamps:
        _decode_cabinet_lamp(m, bytes(raw), reg, t.district, now_ms, oldest, out)
    out.cabinets.append(
        CabinetRow(
            cab.ts,
            number,
            cab.seq,
            cab.door_open,
            cab.contactors,
            None if cab.phase_voltage_v is UNSET else cab.phase_voltage_v,
            None if cab.circuit_current_a is UNSET else cab.circuit_current_a,
            None if cab.leakage_ma is UNSET else cab.leakage_ma,
            None if cab.energy_wh is UNSET else cab.energy_wh,
            cab.faults,
            len(lamps),
            m.received_ms,
        )
    )


def _decode_cabinet_lamp(
    m: Message, raw: bytes, reg: Registry, district: str, now_ms: int, oldest: int, out: Batch
) -> None:
    """A lamp inside a cabinet report: rejected on its own (quarantined with the cabinet's topic)."""
    try:
        try:
            lamp = _cab_lamp_decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise _classify(exc) from None
        known = reg.lamps.get(lamp.id)
        if known is None:
            raise _Rejected("unknown_device", f"lamp {lamp.id!r} is not in the registry")
        if known[1] != district:
            raise _Rejected(
                "district_mismatch", f"lamp {lamp.id!r} belongs to district {known[1]!r}, topic says {district!r}"
            )
        _check_ts(lamp.ts, now_ms, oldest)
        out.lamps.append(known[0], lamp, m.received_ms)
    except _Rejected as r:
        out.rejects.append(Reject(m.topic, raw[:QUARANTINE_BYTES], r.reason, r.detail, m.received_ms))

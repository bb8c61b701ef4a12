"""The protocol's messages, decoded and encoded side by side, with their limits (docs/protocol.md).

A device's report (`LampState`; a concentrator's `CabinetState` carrying its lamps' `CabinetLamp`s), its
`Status`, the backend's command (`encode_command`, and `decode_command` as a device reads it) and the device's
acknowledgement (`encode_ack`, `decode_ack`). Pure: no I/O, no clock (the caller passes `now_ms`).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Final, Literal

import msgspec
import numpy as np
from msgspec import UNSET, Meta, UnsetType

__all__ = [
    "BIGINT_MAX",
    "FUTURE_TOLERANCE_MS",
    "MAX_CABINET_PAYLOAD",
    "MAX_DEPTH",
    "MAX_FAULTS",
    "MAX_PAYLOAD",
    "SEQ_MAX",
    "Ack",
    "CabinetLamp",
    "CabinetState",
    "LampState",
    "Status",
    "clean_text",
    "decode_ack",
    "decode_command",
    "encode_ack",
    "encode_command",
    "nesting_depth",
]

MAX_PAYLOAD: Final = 4096  # docs/protocol.md: a lamp state report is at most 4 KiB
# A cabinet report carries up to 250 lamps of up to ~300 bytes each in practice.
MAX_CABINET_PAYLOAD: Final = 256 * 1024
FUTURE_TOLERANCE_MS: Final = 5 * 60 * 1000
SEQ_MAX: Final = 2**31 - 1
# Nesting bound, checked before parsing: a report is 2 deep, a cabinet report 4; unknown fields get room to spare.
MAX_DEPTH: Final = 32
MAX_FAULTS: Final = 32

# Every number is checked against docs/protocol.md and against its column (`real` is float4, `bigint` 64 bits), so the
# database never sees a value it refuses or stores as Infinity; the limits are physical, with room to spare.
BIGINT_MAX: Final = 2**63 - 1
Ts = Annotated[int, Meta(ge=0, le=BIGINT_MAX)]
Seq = Annotated[int, Meta(ge=0, le=SEQ_MAX)]
Watts = Annotated[float, Meta(ge=0, le=1e6)]
Volts = Annotated[float, Meta(ge=0, le=1e6)]
Amps = Annotated[float, Meta(ge=0, le=1e6)]
Lux = Annotated[float, Meta(ge=0, le=1e7)]
Celsius = Annotated[float, Meta(ge=-273.15, le=1e4)]
Milliamps = Annotated[float, Meta(ge=0, le=1e9)]
Meter = Annotated[int, Meta(ge=0, le=BIGINT_MAX)]
Counter = Annotated[int, Meta(ge=0, le=SEQ_MAX)]  # an `integer` column: 2^31 hours are 245,000 years
# PostgreSQL's text holds any Unicode but U+0000.
FaultCode = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[^\x00]+$")]
Faults = Annotated[list[FaultCode], Meta(max_length=MAX_FAULTS)]


class LampState(msgspec.Struct, forbid_unknown_fields=False):
    """A lamp state report (unknown fields are ignored, as the protocol asks)."""

    ts: Ts
    seq: Seq
    on: bool
    dim: Annotated[int, Meta(ge=0, le=100)]
    faults: Faults
    power_w: Watts | UnsetType = UNSET
    voltage_v: Volts | UnsetType = UNSET
    current_a: Amps | UnsetType = UNSET
    power_factor: Annotated[float, Meta(ge=0, le=1)] | UnsetType = UNSET
    energy_wh: Meter | UnsetType = UNSET
    temp_c: Celsius | UnsetType = UNSET
    lux: Lux | UnsetType = UNSET
    rssi_dbm: Annotated[int, Meta(ge=-32768, le=32767)] | UnsetType = UNSET
    mode: Literal["auto", "manual"] | UnsetType = UNSET
    burn_h: Counter | UnsetType = UNSET
    starts: Counter | UnsetType = UNSET
    driver_temp_c: Celsius | UnsetType = UNSET
    leakage_ma: Milliamps | UnsetType = UNSET


class CabinetLamp(LampState, kw_only=True):
    id: Annotated[str, Meta(pattern=r"^[A-Z0-9][A-Z0-9-]{3,31}$")]


class CabinetState(msgspec.Struct):
    ts: Ts
    seq: Seq
    door_open: bool
    contactors: Annotated[list[bool], Meta(min_length=1, max_length=6)]
    faults: Faults
    phase_voltage_v: Annotated[list[Volts], Meta(min_length=3, max_length=3)] | UnsetType = UNSET
    circuit_current_a: Annotated[list[Amps], Meta(max_length=6)] | UnsetType = UNSET
    leakage_ma: Milliamps | UnsetType = UNSET
    energy_wh: Meter | UnsetType = UNSET
    # Decoded one by one, so one bad lamp does not cost the other 249 their readings.
    lamps: Annotated[list[msgspec.Raw], Meta(max_length=1000)] | UnsetType = UNSET


class Status(msgspec.Struct):
    online: bool
    ts: Ts


class Ack(msgspec.Struct):
    id: Annotated[str, Meta(max_length=64)]
    ok: bool
    ts: Annotated[int, Meta(ge=0, le=BIGINT_MAX)]
    error: str | None = None


_ACK_MAX_BYTES = 8192  # an ack may carry a lamp state report (at most 4 KiB) besides its own fields
_ERROR_CHARS = 200


def decode_ack(payload: bytes, now_ms: int, retention_ms: int = 90 * 86_400_000) -> Ack:
    """An acknowledgement, checked as the codec checks a report (its `ts` in the same window: at most 5 minutes
    ahead of the clock, not older than the retention); raises ValueError naming what is wrong."""
    if len(payload) > _ACK_MAX_BYTES:
        raise ValueError(f"payload of {len(payload)} bytes exceeds the {_ACK_MAX_BYTES}-byte limit")
    if (depth := nesting_depth(payload)) > MAX_DEPTH:
        raise ValueError(f"arrays and objects nest {depth} deep; at most {MAX_DEPTH} are accepted")
    try:
        ack = msgspec.json.decode(payload, type=Ack)
    except (msgspec.MsgspecError, RecursionError) as exc:
        raise ValueError(str(exc)) from None
    if ack.ts > now_ms + FUTURE_TOLERANCE_MS:
        raise ValueError(f"ts {ack.ts} is {(ack.ts - now_ms) / 1000:.0f} s ahead of the gateway clock")
    if ack.ts < now_ms - retention_ms:
        raise ValueError(f"ts {ack.ts} is older than the retention window (oldest accepted {now_ms - retention_ms})")
    if ack.error is not None:
        ack.error = clean_text(ack.error, _ERROR_CHARS)  # stored with the lamp's outcome
    return ack


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_OPENERS = frozenset(b"[{")


def nesting_depth(payload: bytes) -> int:
    """How deep arrays and objects nest in a JSON text (brackets inside strings do not count); at C speed, so it
    runs on every message before the parser, whose recursion a hostile payload could otherwise exhaust."""
    if payload.count(b"[") + payload.count(b"{") <= MAX_DEPTH:
        return 0  # cannot be deeper than the bound: the common case, two scans of the bytes
    brackets = np.frombuffer(_STRING.sub(b"", payload).translate(None, _NOT_BRACKET), dtype=np.uint8)
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)
    return int(np.cumsum(steps, dtype=np.int64).max(initial=0))


def clean_text(text: str, limit: int) -> str:
    """Text as PostgreSQL takes it: no U+0000, no lone surrogates, at most `limit` characters."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    if "\x00" in text:
        text = text.replace("\x00", "\\u0000")
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode(errors="backslashreplace").decode()
    return text


def encode_command(device_id: str, op: str, ts_ms: int, expires_ms: int, params: dict[str, Any]) -> bytes:
    """A command as the backend sends it: `id` (what the device answers with), `op`, `ts`, `expires` and the
    operation's own fields."""
    body = {"id": device_id, "op": op, "ts": ts_ms, "expires": expires_ms, **params}
    return json.dumps(body, separators=(",", ":")).encode()


def decode_command(payload: bytes) -> dict[str, Any]:
    """A command as a device reads it: a JSON object with a string `id` at least; raises ValueError otherwise
    (a device ignores what it cannot read)."""
    try:
        cmd = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(cmd, dict) or not isinstance(cmd.get("id"), str | int):
        raise ValueError("a command is an object with an id")
    cmd["id"] = str(cmd["id"])
    return cmd


def encode_ack(command_id: str, ok: bool, ts_ms: int, error: str | None = None) -> bytes:
    """A device's acknowledgement of the command `command_id`."""
    return json.dumps({"id": command_id, "ok": ok, "error": error, "ts": ts_ms}).encode()

"""Field protocol v1 codec: MQTT topic and payload bytes → validated readings, or a reject with its reason.

Pure: no I/O, no clock (the caller passes `now_ms`), no MQTT client. `decode_batch` turns a batch of raw
messages into columnar readings for the COPY writer plus the rejects for the quarantine.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import msgspec
from msgspec import UNSET

from inventory.registry import Registry
from protocol.messages import (
    FUTURE_TOLERANCE_MS,
    MAX_CABINET_PAYLOAD,
    MAX_DEPTH,
    MAX_PAYLOAD,
    CabinetLamp,
    CabinetState,
    LampState,
    Status,
    clean_text,
    nesting_depth,
)
from protocol.topics import split_report_topic
from telemetry.models import Batch, CabinetRow, Reject, StatusRow

logger = logging.getLogger(__name__)

__all__ = [
    "INTERNAL_REASONS",
    "REASONS",
    "Batch",
    "Message",
    "Registry",
    "Reject",
    "decode_batch",
    "reject",
]

QUARANTINE_BYTES: Final = 1024
QUARANTINE_TOPIC_CHARS: Final = 256
QUARANTINE_DETAIL_CHARS: Final = 1000

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
    "cabinet_mismatch",
    "ts_in_future",
    "ts_too_old",
)
# Last lines of defence, never expected: the decoder itself failed, or the database refused what it accepted.
INTERNAL_REASONS: Final = ("decode_error", "db_refused")

_lamp_decoder = msgspec.json.Decoder(LampState)
_cab_lamp_decoder = msgspec.json.Decoder(CabinetLamp)
_cabinet_decoder = msgspec.json.Decoder(CabinetState)
_status_decoder = msgspec.json.Decoder(Status)


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, three times the cost,
# paid once per message (py-spy put dataclass __init__s at 11 % of the receive path).
@dataclass(slots=True)
class Message:
    """One MQTT message as received; `token` is whatever the transport needs to acknowledge it."""

    topic: str
    payload: bytes
    received_ms: int
    token: object = None
    received_mono: float = 0.0  # time.monotonic() at arrival, for the age of what waits


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


def reject(m: Message, reason: str, detail: str, payload: bytes | None = None) -> Reject:
    """A quarantine record: topic and detail made storable and capped, the payload's first 1 KiB."""
    return Reject(
        clean_text(m.topic, QUARANTINE_TOPIC_CHARS),
        (m.payload if payload is None else payload)[:QUARANTINE_BYTES],
        reason,
        clean_text(detail, QUARANTINE_DETAIL_CHARS),
        m.received_ms,
    )


def _check_ts(ts: int, now_ms: int, oldest_ms: int) -> None:
    if ts > now_ms + FUTURE_TOLERANCE_MS:
        raise _Rejected("ts_in_future", f"ts {ts} is {(ts - now_ms) / 1000:.0f} s ahead of the gateway clock")
    if ts < oldest_ms:
        raise _Rejected("ts_too_old", f"ts {ts} is older than the retention window (oldest accepted {oldest_ms})")


def decode_batch(messages: Sequence[Message], registry: Registry, *, now_ms: int, retention_ms: int) -> Batch:
    """Decode and validate every message; nothing raises, every problem becomes a Reject."""
    out = Batch(now_ms=now_ms)
    oldest = now_ms - retention_ms
    for m in messages:
        # A lamp report or a status adds its one row last, once every check has passed; a cabinet report takes
        # back by itself what it added before failing. So a failure here leaves nothing of its message behind.
        try:
            _decode_one(m, registry, now_ms, oldest, out)
        except _Rejected as r:
            out.rejects.append(reject(m, r.reason, r.detail))
        except Exception as exc:  # a bug of ours or the parser's: this message is quarantined, ingest goes on
            logger.exception("decoding a message on %r failed unexpectedly", m.topic[:QUARANTINE_TOPIC_CHARS])
            out.rejects.append(reject(m, "decode_error", f"{type(exc).__name__}: {exc}"))
    return out


def _mark(b: Batch) -> tuple[int, int, int, int]:
    return len(b.lamps), len(b.cabinets), len(b.statuses), len(b.rejects)


def _rollback(b: Batch, mark: tuple[int, int, int, int]) -> None:
    """Take back what a message half-decoded before failing (a cabinet's lamps, say): all of it or nothing."""
    b.lamps.truncate(mark[0])
    del b.cabinets[mark[1] :], b.statuses[mark[2] :], b.rejects[mark[3] :]


def _decode_one(m: Message, reg: Registry, now_ms: int, oldest: int, out: Batch) -> None:
    t = split_report_topic(m.topic)
    if t is None:
        raise _Rejected(
            "bad_topic", f"topic {m.topic!r} is not sl/{{district}}/{{lamp|cabinet}}/{{id}}/{{state|status}}"
        )
    topic_district, kind, device, channel = t
    limit = MAX_CABINET_PAYLOAD if (kind == "cabinet" and channel == "state") else MAX_PAYLOAD
    if len(m.payload) > limit:
        raise _Rejected("too_large", f"payload of {len(m.payload)} bytes exceeds the {limit}-byte limit")
    depth = nesting_depth(m.payload)
    if depth > MAX_DEPTH:
        raise _Rejected("too_large", f"arrays and objects nest {depth} deep; at most {MAX_DEPTH} are accepted")
    known = (reg.lamps if kind == "lamp" else reg.cabinets).get(device)
    if known is None:
        raise _Rejected("unknown_device", f"{kind} {device!r} is not in the registry")
    number, district = known
    if district != topic_district:
        raise _Rejected(
            "district_mismatch", f"{kind} {device!r} belongs to district {district!r}, topic says {topic_district!r}"
        )
    try:
        if channel == "status":
            st = _status_decoder.decode(m.payload)
            # The window of readings; but a last will (`online: false`) carries the time the device connected,
            # which may be months before it goes, so for it only the future bound holds (docs/protocol.md).
            _check_ts(st.ts, now_ms, 0 if not st.online else oldest)
            out.statuses.append(StatusRow(kind, device, st.online, st.ts))
            return
        if kind == "lamp":
            lamp = _lamp_decoder.decode(m.payload)
            _check_ts(lamp.ts, now_ms, oldest)
            out.lamps.append(number, lamp, m.received_ms)
            return
        cab = _cabinet_decoder.decode(m.payload)
    except msgspec.DecodeError as exc:
        raise _classify(exc) from None
    _check_ts(cab.ts, now_ms, oldest)
    mark = _mark(out)
    try:
        _decode_cabinet(m, cab, number, reg, topic_district, now_ms, oldest, out)
    except BaseException:
        _rollback(out, mark)  # the cabinet's lamps added before the failure go with it
        raise


def _cabinet_id(topic: str) -> str:
    t = split_report_topic(topic)
    return t[2] if t is not None else "?"


def _decode_cabinet(
    m: Message, cab: CabinetState, number: int, reg: Registry, district: str, now_ms: int, oldest: int, out: Batch
) -> None:
    lamps = [] if cab.lamps is UNSET else cab.lamps
    for raw in lamps:
        _decode_cabinet_lamp(m, bytes(raw), reg, district, number, now_ms, oldest, out)
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
    m: Message, raw: bytes, reg: Registry, district: str, cabinet_no: int, now_ms: int, oldest: int, out: Batch
) -> None:
    """A lamp inside a cabinet report: rejected on its own (quarantined with the cabinet's topic). A concentrator
    speaks only for the lamps behind it: the broker's per-device rights hold one level down too."""
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
        if reg.cabinet_of_lamp(known[0]) != cabinet_no:
            raise _Rejected("cabinet_mismatch", f"lamp {lamp.id!r} does not hang on cabinet {_cabinet_id(m.topic)!r}")
        _check_ts(lamp.ts, now_ms, oldest)
        out.lamps.append(known[0], lamp, m.received_ms)
    except _Rejected as r:
        out.rejects.append(reject(m, r.reason, r.detail, raw))

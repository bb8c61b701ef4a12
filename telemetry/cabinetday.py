"""One cabinet's day of readings packed into a few kilobytes, and back, without losing a bit of what was stored
(the compact history of `cabinet_readings`; `telemetry.daypack` does a lamp's day).

Cabinets are few (one for about 150 lamps) and report every few minutes, so their days are packed one at a time
from rows, with the same column codings (`telemetry.columns`): a cabinet's arrays (contactors, phase voltages,
circuit currents) as each reading's length (-1 for NULL) and all their values end to end.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from telemetry.columns import (
    compressor,
    decompressor,
    get_bits,
    get_head,
    get_int_column,
    get_ints,
    get_real,
    get_words,
    put_int_column,
    put_ints,
    put_real,
    put_words,
)

__all__ = ["CABINET_CODEC", "CabinetRow", "pack_cabinet_day", "unpack_cabinet_day"]

CABINET_CODEC = 1
# A cabinet reading, as `cabinet_readings` holds it after cabinet_no: (ts_us, seq, door_open, contactors,
# phase_voltage_v, circuit_current_a, leakage_ma, energy_wh, faults, lamp_count, received_us).
CabinetRow = tuple[Any, ...]


def _put_ragged(out: bytearray, values: list[list[Any] | None], real: bool) -> None:
    lengths = np.fromiter((-1 if v is None else len(v) for v in values), dtype=np.int64, count=len(values))
    put_ints(out, lengths)
    flat = [x for v in values if v is not None for x in v]
    if real:
        put_real(out, np.array(flat, dtype=np.float32), np.ones(len(flat), dtype=bool))
    else:
        out += np.packbits(np.array(flat, dtype=bool)).tobytes()


def _get_ragged(buf: memoryview, at: int, n: int, real: bool) -> tuple[list[list[Any] | None], int]:
    lengths, at = get_ints(buf, at, n)
    total = int(lengths[lengths > 0].sum())
    flat: list[Any]
    if real:
        (values, _), at = get_real(buf, at, total)
        flat = [float(str(v)) for v in values]
    else:
        bits, at = get_bits(buf, at, total)
        flat = bits.tolist()
    out: list[list[Any] | None] = []
    i = 0
    for k in lengths.tolist():
        if k < 0:
            out.append(None)
        else:
            out.append(flat[i : i + k])
            i += k
    return out, at


def pack_cabinet_day(rows: Sequence[CabinetRow]) -> bytes:
    """A cabinet's readings (rows as `CabinetRow`, in (ts, seq) order, no two alike) as compact bytes."""
    with np.errstate(over="ignore"):
        return compressor.compress(_pack_cabinet_day(rows))


def _pack_cabinet_day(rows: Sequence[CabinetRow]) -> bytes:
    n = len(rows)
    cols = list(zip(*rows, strict=True)) if rows else [()] * 11
    out = bytearray(struct.pack("<BI", CABINET_CODEC, n))
    ts_us = np.array(cols[0], dtype=np.int64)
    ms, sub = np.divmod(ts_us, 1000)
    put_ints(out, ms)
    put_ints(out, sub)
    put_ints(out, np.array(cols[1], dtype=np.int64))
    out += np.packbits(np.array(cols[2], dtype=bool)).tobytes()
    _put_ragged(out, list(cols[3]), real=False)
    _put_ragged(out, list(cols[4]), real=True)
    _put_ragged(out, list(cols[5]), real=True)
    leak = [v is not None for v in cols[6]]
    put_real(out, np.array([0.0 if v is None else v for v in cols[6]], dtype=np.float32), np.array(leak, dtype=bool))
    energy = [v is not None for v in cols[7]]
    put_int_column(out, np.array([v or 0 for v in cols[7]], dtype=np.int64), np.array(energy, dtype=bool))
    put_words(out, [tuple(f) for f in cols[8]])
    put_ints(out, np.array(cols[9], dtype=np.int64))
    latency_ms, latency_sub = np.divmod(np.array(cols[10], dtype=np.int64) - ts_us, 1000)
    put_ints(out, latency_ms)
    put_ints(out, latency_sub)
    return bytes(out)


def unpack_cabinet_day(data: bytes) -> list[CabinetRow]:
    """The rows `pack_cabinet_day` was given, floats as PostgreSQL shows a `real`."""
    with np.errstate(over="ignore"):
        return _unpack_cabinet_day(memoryview(decompressor.decompress(data)))


def _unpack_cabinet_day(buf: memoryview) -> list[CabinetRow]:
    _, n, ts_us, seq, door, at = get_head(buf, (CABINET_CODEC,), "cabinet day")
    contactors, at = _get_ragged(buf, at, n, real=False)
    phases, at = _get_ragged(buf, at, n, real=True)
    circuits, at = _get_ragged(buf, at, n, real=True)
    (leak, leak_present), at = get_real(buf, at, n)
    (energy, energy_present), at = get_int_column(buf, at, n)
    faults, at = get_words(buf, at, n)
    lamp_count, at = get_ints(buf, at, n)
    latency_ms, at = get_ints(buf, at, n)
    latency_sub, at = get_ints(buf, at, n)
    if at != len(buf):
        raise ValueError(f"packed cabinet day has {len(buf) - at} bytes past its last column")
    received = ts_us + latency_ms * 1000 + latency_sub
    return list(
        zip(
            ts_us.tolist(),
            seq.tolist(),
            door.tolist(),
            contactors,
            phases,
            circuits,
            [float(str(v)) if ok else None for v, ok in zip(leak, leak_present.tolist(), strict=True)],
            [v if ok else None for v, ok in zip(energy.tolist(), energy_present.tolist(), strict=True)],
            [list(f) for f in faults],
            lamp_count.tolist(),
            received.tolist(),
            strict=True,
        )
    )

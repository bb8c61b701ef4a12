"""One lamp's day of readings packed into a few kilobytes, and back, without losing a bit of what was stored.

The compact history (`telemetry.history`) keeps each lamp's day as one `bytes` value made here. Each column is
stored on its own (columnar): numbers as integers (a `real` column is scaled by the smallest power of ten that
gives back every stored float exactly, or kept as its raw bits when none does), each integer column either as
differences from the previous value (time, sequence numbers, energy counters) or from the first value (noisy
measurements around a level), whichever is smaller, zigzagged, narrowed to the fewest bytes that hold them and
byte-transposed; text as a dictionary and small codes. zstd then squeezes the whole. A missing value (NULL) is
kept as such through a presence bitmap. Nothing is rounded: `unpack(pack(day)) == day`, float for float.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from telemetry.columns import (
    WIDTHS,
    compressor,
    decompressor,
    get_head,
    get_int_column,
    get_ints,
    get_real,
    get_words,
    put_int_column,
    put_ints,
    put_real,
    put_words,
    zigzag,
)

__all__ = [
    "CODEC",
    "NULLABLE",
    "LampDay",
    "pack",
    "pack_many",
    "unpack",
]

# Stored beside each packed day; a later format gets a new number and the earlier ones stay readable. Codec 2 added
# the forecasting fields (burn_h, starts, driver_temp_c, leakage_ma) after the latency; a codec 1 day has none.
CODEC = 2
_READABLE = frozenset({1, 2})

# The columns of `lamp_readings` after (ts, lamp_no), in order, with their kinds.
_REALS = ("power_w", "voltage_v", "current_a", "power_factor", "temp_c", "lux")
# LampDay's fields: arrays, (values, present) pairs of the nullable columns, and lists.
_PLAIN = ("ts_us", "seq", "is_on", "dim", "received_us")
NULLABLE = (
    "power_w",
    "voltage_v",
    "current_a",
    "power_factor",
    "energy_wh",
    "temp_c",
    "lux",
    "rssi_dbm",
    "burn_h",
    "starts",
    "driver_temp_c",
    "leakage_ma",
)
_MASKED = NULLABLE
_COUNTERS = ("burn_h", "starts")
_LATER_REALS = ("driver_temp_c", "leakage_ma")
_LISTS = ("mode", "faults")


@dataclass
class LampDay:
    """One lamp's readings, columnar, ordered by (ts, seq) with no two alike. Nullable columns are masked
    arrays' worth of (values, present): a value where `present` is false means nothing."""

    ts_us: npt.NDArray[np.int64]
    seq: npt.NDArray[np.int64]
    is_on: npt.NDArray[np.bool_]
    dim: npt.NDArray[np.int64]
    power_w: tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]
    voltage_v: tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]
    current_a: tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]
    power_factor: tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]
    energy_wh: tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]
    temp_c: tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]
    lux: tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]
    rssi_dbm: tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]
    mode: list[str | None]
    faults: list[tuple[str, ...]]
    received_us: npt.NDArray[np.int64]
    burn_h: tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]
    starts: tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]
    driver_temp_c: tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]
    leakage_ma: tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]

    def __len__(self) -> int:
        return len(self.ts_us)

    def take(self, index: npt.NDArray[np.intp]) -> LampDay:
        """The readings at `index`, in that order."""
        idx = index.tolist()
        parts: dict[str, Any] = {name: getattr(self, name)[index] for name in _PLAIN}
        parts.update({name: (getattr(self, name)[0][index], getattr(self, name)[1][index]) for name in _MASKED})
        parts.update({name: [getattr(self, name)[i] for i in idx] for name in _LISTS})
        return LampDay(**parts)

    @staticmethod
    def joined(days: Sequence[LampDay]) -> LampDay:
        """The readings of several laid end to end, as they are (the input of `pack_many`)."""
        parts: dict[str, Any] = {name: np.concatenate([getattr(d, name) for d in days]) for name in _PLAIN}
        parts.update(
            {name: tuple(np.concatenate([getattr(d, name)[k] for d in days]) for k in (0, 1)) for name in _MASKED}
        )
        parts.update({name: [x for d in days for x in getattr(d, name)] for name in _LISTS})
        return LampDay(**parts)

    @staticmethod
    def concat(days: Sequence[LampDay]) -> LampDay:
        """The readings of several, sorted by (ts, seq) with repeats of the same (ts, seq) kept once."""
        whole = LampDay.joined(days)
        order = np.lexsort((whole.seq, whole.ts_us))
        ts, seq = whole.ts_us[order], whole.seq[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = (ts[1:] != ts[:-1]) | (seq[1:] != seq[:-1])
        return whole.take(order[first])

    def rows(self) -> list[tuple[Any, ...]]:
        """The readings as tuples: (ts_us, seq, is_on, dim, power_w, voltage_v, current_a, power_factor,
        energy_wh, temp_c, lux, rssi_dbm, burn_h, starts, driver_temp_c, leakage_ma, mode, faults, received_us),
        None where nothing was stored and floats as PostgreSQL shows a `real`."""

        def col(p: tuple[npt.NDArray[Any], npt.NDArray[np.bool_]], real: bool) -> list[Any]:
            values = [float(str(v)) for v in p[0]] if real else p[0].tolist()
            return [v if ok else None for v, ok in zip(values, p[1].tolist(), strict=True)]

        return list(
            zip(
                self.ts_us.tolist(),
                self.seq.tolist(),
                self.is_on.tolist(),
                self.dim.tolist(),
                col(self.power_w, True),
                col(self.voltage_v, True),
                col(self.current_a, True),
                col(self.power_factor, True),
                col(self.energy_wh, False),
                col(self.temp_c, True),
                col(self.lux, True),
                col(self.rssi_dbm, False),
                col(self.burn_h, False),
                col(self.starts, False),
                col(self.driver_temp_c, True),
                col(self.leakage_ma, True),
                self.mode,
                [list(f) for f in self.faults],
                self.received_us.tolist(),
                strict=True,
            )
        )


def pack(day: LampDay) -> bytes:
    """The day as compact bytes (codec `CODEC`)."""
    with np.errstate(over="ignore"):
        return compressor.compress(_pack(day))


def _pack(day: LampDay) -> bytes:
    n = len(day)
    out = bytearray(struct.pack("<BI", CODEC, n))
    # Microseconds as the protocol's milliseconds and what is left over (nothing, from devices that keep time in ms).
    ms, sub = np.divmod(day.ts_us, 1000)
    put_ints(out, ms)
    put_ints(out, sub)
    put_ints(out, day.seq)
    out += np.packbits(day.is_on).tobytes()
    put_ints(out, day.dim)
    for name in _REALS[:4]:
        put_real(out, *getattr(day, name))
    put_int_column(out, *day.energy_wh)
    for name in _REALS[4:]:
        put_real(out, *getattr(day, name))
    put_int_column(out, *day.rssi_dbm)
    put_words(out, day.mode)
    put_words(out, day.faults)
    latency_ms, latency_sub = np.divmod(day.received_us - day.ts_us, 1000)
    put_ints(out, latency_ms)
    put_ints(out, latency_sub)
    for name in _COUNTERS:
        put_int_column(out, *getattr(day, name))
    for name in _LATER_REALS:
        put_real(out, *getattr(day, name))
    return bytes(out)


def unpack(data: bytes) -> LampDay:
    """The day `pack` was given."""
    with np.errstate(over="ignore"):
        return _unpack(memoryview(decompressor.decompress(data)))


def _unpack(buf: memoryview) -> LampDay:
    codec, n, ts_us, seq, is_on, at = get_head(buf, _READABLE, "day")
    dim, at = get_ints(buf, at, n)
    reals: dict[str, Any] = {}
    for name in _REALS[:4]:
        reals[name], at = get_real(buf, at, n)
    energy, at = get_int_column(buf, at, n)
    for name in _REALS[4:]:
        reals[name], at = get_real(buf, at, n)
    rssi, at = get_int_column(buf, at, n)
    mode, at = get_words(buf, at, n)
    faults, at = get_words(buf, at, n)
    latency_ms, at = get_ints(buf, at, n)
    latency_sub, at = get_ints(buf, at, n)
    latency = latency_ms * 1000 + latency_sub
    for name in (*_COUNTERS, *_LATER_REALS):
        if codec == 1:  # packed before these fields were
            reals[name] = (np.zeros(n, dtype=np.int64 if name in _COUNTERS else np.float32), np.zeros(n, dtype=bool))
        elif name in _COUNTERS:
            reals[name], at = get_int_column(buf, at, n)
        else:
            reals[name], at = get_real(buf, at, n)
    if at != len(buf):
        raise ValueError(f"packed day has {len(buf) - at} bytes past its last column")
    return LampDay(
        ts_us=ts_us,
        seq=seq,
        is_on=is_on,
        dim=dim,
        energy_wh=energy,
        rssi_dbm=rssi,
        mode=mode,
        faults=faults,
        received_us=ts_us + latency,
        **reals,
    )


# -- many days at once -----------------------------------------------------------------------------------------
#
# The compaction packs tens of thousands of lamp-days per transaction. `pack_many` makes exactly the bytes `pack`
# makes for each, with the per-value work done once over all of them (numpy over the whole range of lamps) and only
# the final slicing and zstd per lamp-day.


def _segments(lengths: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Start of each segment, and each element's segment."""
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return starts, np.repeat(np.arange(len(lengths)), lengths)


def _reduce(op: Any, values: npt.NDArray[Any], lengths: npt.NDArray[np.int64], empty: Any) -> npt.NDArray[Any]:
    """`op` (a numpy ufunc) over each segment of `values`; `empty` for segments of length 0."""
    out = np.full(len(lengths), empty, dtype=values.dtype)
    some = lengths > 0
    if some.any():
        starts = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        out[some] = op.reduceat(values, starts[some])
    return out


def _ints_many(v: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64]) -> list[bytes]:
    """`put_ints` of each segment of `v`."""
    starts, seg = _segments(lengths)
    n = len(v)
    if n == 0:
        return [b""] * len(lengths)
    firsts = np.zeros(len(lengths), dtype=np.int64)
    firsts[lengths > 0] = v[starts[lengths > 0]]
    body_mask = np.ones(n, dtype=bool)
    body_mask[starts[lengths > 0]] = False  # each segment's first value is stored whole
    delta = np.empty(n, dtype=np.int64)
    delta[0] = 0
    delta[1:] = v[1:] - v[:-1]
    offset = v - firsts[seg]
    body_lengths = np.maximum(lengths - 1, 0)
    delta_b, offset_b = delta[body_mask], offset[body_mask]
    top_delta = _reduce(np.maximum, np.abs(delta_b), body_lengths, 0)
    top_offset = _reduce(np.maximum, np.abs(offset_b), body_lengths, 0)
    use_delta = (body_lengths == 0) | (top_delta <= top_offset)
    body_seg = seg[body_mask]
    body = zigzag(np.where(use_delta[body_seg], delta_b, offset_b))
    top = _reduce(np.maximum, body, body_lengths, np.uint64(0))
    widths = np.select([top < 1 << 8, top < 1 << 16, top < 1 << 32], [1, 2, 4], 8)
    bodies = {w: body.astype(k).view(np.uint8).reshape(-1, w) for w, k in WIDTHS if (widths == w).any()}
    out: list[bytes] = []
    at = 0
    for first, delta_used, width, m, n_i in zip(
        firsts.tolist(), use_delta.tolist(), widths.tolist(), body_lengths.tolist(), lengths.tolist(), strict=True
    ):
        if n_i == 0:
            out.append(b"")
            continue
        out.append(struct.pack("<qBB", first, 1 if delta_used else 0, width) + bodies[width][at : at + m].T.tobytes())
        at += m
    return out


def _presence_many(present: npt.NDArray[np.bool_], lengths: npt.NDArray[np.int64]) -> list[bytes]:
    """`put_presence` of each segment."""
    counts = _reduce(np.add, present.astype(np.int64), lengths, 0)
    out: list[bytes] = []
    at = 0
    for count, n in zip(counts.tolist(), lengths.tolist(), strict=True):
        if count == n:
            out.append(b"\x01")
        elif count == 0:
            out.append(b"\x00")
        else:
            out.append(b"\x02" + np.packbits(present[at : at + n]).tobytes())
        at += n
    return out


def _reals_many(
    values: npt.NDArray[np.float32], present: npt.NDArray[np.bool_], lengths: npt.NDArray[np.int64]
) -> list[bytes]:
    """`put_real` of each segment: the smallest exact decimal scale per segment, or its floats' bits."""
    heads = _presence_many(present, lengths)
    v = values[present].astype(np.float32)
    counts = _reduce(np.add, present.astype(np.int64), lengths, 0)
    _, seg = _segments(counts)
    wide = v.astype(np.float64)
    usable = _reduce(np.logical_and, np.isfinite(wide) & (np.abs(wide) < 1e12), counts, True)
    exponent = np.full(len(lengths), 255, dtype=np.int64)
    bits = v.view(np.int32)
    with np.errstate(invalid="ignore", over="ignore"):
        for e in range(6, -1, -1):  # the smallest exact one wins: try it last
            scale = 10.0**e
            q = np.round(wide * scale).astype(np.int64)
            exact = (q.astype(np.float64) / scale).astype(np.float32).view(np.int32) == bits
            ok = _reduce(np.logical_and, exact, counts, True) & usable
            exponent[ok] = e
        per = exponent[seg]
        scaled = np.round(wide * 10.0 ** np.where(per == 255, 0, per)).astype(np.int64)
    ints = np.where(per == 255, bits.astype(np.int64), scaled)
    bodies = _ints_many(ints, counts)
    return [
        head + (bytes([e]) + body if count else b"")
        for head, e, body, count in zip(heads, exponent.tolist(), bodies, counts.tolist(), strict=True)
    ]


def _int_columns_many(
    values: npt.NDArray[np.int64], present: npt.NDArray[np.bool_], lengths: npt.NDArray[np.int64]
) -> list[bytes]:
    """`put_int_column` of each segment."""
    heads = _presence_many(present, lengths)
    counts = _reduce(np.add, present.astype(np.int64), lengths, 0)
    return [h + b for h, b in zip(heads, _ints_many(values[present].astype(np.int64), counts), strict=True)]


def _words_many(words: list[Any], lengths: npt.NDArray[np.int64]) -> list[bytes]:
    """`put_words` of each segment; a segment of one repeated value (the usual) made once per value and length."""
    made: dict[tuple[Any, int], bytes] = {}
    out: list[bytes] = []
    at = 0
    for n in lengths.tolist():
        part = words[at : at + n]
        at += n
        key = (part[0], n) if n and part.count(part[0]) == n else None
        if key is not None and key in made:
            out.append(made[key])
            continue
        buf = bytearray()
        put_words(buf, part)
        out.append(bytes(buf))
        if key is not None:
            made[key] = out[-1]
    return out


def pack_many(days: LampDay, lengths: Sequence[int]) -> list[bytes]:
    """`pack` of each of several days laid end to end in `days` (each ordered and without repeats), `lengths`
    readings each: the same bytes, made faster."""
    n = np.asarray(lengths, dtype=np.int64)
    if int(n.sum()) != len(days):
        raise ValueError(f"lengths add up to {int(n.sum())}, the days hold {len(days)} readings")
    with np.errstate(over="ignore"):
        ms, sub = np.divmod(days.ts_us, 1000)
        latency_ms, latency_sub = np.divmod(days.received_us - days.ts_us, 1000)
        columns = [
            _ints_many(ms, n),
            _ints_many(sub, n),
            _ints_many(days.seq, n),
            _bits_many(days.is_on, n),
            _ints_many(days.dim, n),
            *(_reals_many(*_pair(days, name), n) for name in _REALS[:4]),
            _int_columns_many(*days.energy_wh, n),
            *(_reals_many(*_pair(days, name), n) for name in _REALS[4:]),
            _int_columns_many(*days.rssi_dbm, n),
            _words_many(days.mode, n),
            _words_many(days.faults, n),
            _ints_many(latency_ms, n),
            _ints_many(latency_sub, n),
            _int_columns_many(*days.burn_h, n),
            _int_columns_many(*days.starts, n),
            *(_reals_many(*_pair(days, name), n) for name in _LATER_REALS),
        ]
    compress = compressor.compress
    return [
        compress(struct.pack("<BI", CODEC, size) + b"".join(parts))
        for size, *parts in zip(n.tolist(), *columns, strict=True)
    ]


def _pair(days: LampDay, name: str) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    values, present = getattr(days, name)
    return values, present


def _bits_many(flags: npt.NDArray[np.bool_], lengths: npt.NDArray[np.int64]) -> list[bytes]:
    out: list[bytes] = []
    at = 0
    for m in lengths.tolist():
        out.append(np.packbits(flags[at : at + m]).tobytes())
        at += m
    return out

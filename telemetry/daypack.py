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

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import zstandard

__all__ = [
    "CABINET_CODEC",
    "CODEC",
    "CabinetRow",
    "LampDay",
    "pack",
    "pack_cabinet_day",
    "pack_many",
    "unpack",
    "unpack_cabinet_day",
]

CODEC = 1  # stored beside each packed day; a later format gets a new number and this one stays readable
_ZSTD_LEVEL = 3  # level 9 packs 2 % smaller and takes four times as long
_compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
_decompressor = zstandard.ZstdDecompressor()

# The columns of `lamp_readings` after (ts, lamp_no), in order, with their kinds.
_REALS = ("power_w", "voltage_v", "current_a", "power_factor", "temp_c", "lux")
# LampDay's fields: arrays, (values, present) pairs of the nullable columns, and lists.
_PLAIN = ("ts_us", "seq", "is_on", "dim", "received_us")
_MASKED = ("power_w", "voltage_v", "current_a", "power_factor", "energy_wh", "temp_c", "lux", "rssi_dbm")
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
        """The readings as tuples in `lamp_readings`' column order after lamp_no: (ts_us, seq, is_on, dim,
        power_w, voltage_v, current_a, power_factor, energy_wh, temp_c, lux, rssi_dbm, mode, faults,
        received_us), None where nothing was stored and floats as PostgreSQL shows a `real`."""

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
                self.mode,
                [list(f) for f in self.faults],
                self.received_us.tolist(),
                strict=True,
            )
        )


# -- integers ------------------------------------------------------------------------------------------------

_WIDTHS = ((1, np.uint8), (2, np.uint16), (4, np.uint32), (8, np.uint64))


def _zigzag(v: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
    return ((v << np.int64(1)) ^ (v >> np.int64(63))).view(np.uint64)


def _unzigzag(u: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    return (u >> np.uint64(1)).view(np.int64) ^ -(u & np.uint64(1)).view(np.int64)


def _put_ints(out: bytearray, v: npt.NDArray[np.int64]) -> None:
    """Append `v`: the first value, then the rest as deltas or as offsets from the first (the smaller), zigzagged,
    in the narrowest width, byte-transposed so that zstd sees the high (mostly zero) bytes together."""
    n = len(v)
    if n == 0:
        return
    first = int(v[0])
    rest = v[1:]
    delta = np.diff(v)  # wrapping arithmetic (pack ignores overflow), undone exactly on the way back
    offset = rest - v[0]
    use_delta = n == 1 or int(np.abs(delta).max()) <= int(np.abs(offset).max())
    body = _zigzag(delta if use_delta else offset)
    top = int(body.max()) if n > 1 else 0
    width, kind = next((w, k) for w, k in _WIDTHS if top < 1 << (8 * w))
    out += struct.pack("<qBB", first, 1 if use_delta else 0, width)
    out += body.astype(kind).view(np.uint8).reshape(-1, width).T.tobytes()


def _get_ints(buf: memoryview, at: int, n: int) -> tuple[npt.NDArray[np.int64], int]:
    if n == 0:
        return np.zeros(0, dtype=np.int64), at
    first, use_delta, width = struct.unpack_from("<qBB", buf, at)
    at += 10
    size = (n - 1) * width
    kind = dict(_WIDTHS)[width]
    raw = np.frombuffer(buf[at : at + size], dtype=np.uint8).reshape(width, n - 1).T.copy().view(kind).ravel()
    at += size
    body = _unzigzag(raw.astype(np.uint64))
    out = np.empty(n, dtype=np.int64)
    out[0] = first
    out[1:] = np.cumsum(body) + first if use_delta else body + first
    return out, at


# -- nullable columns ----------------------------------------------------------------------------------------


def _put_presence(out: bytearray, present: npt.NDArray[np.bool_]) -> None:
    if present.all():
        out.append(1)
    elif not present.any():
        out.append(0)
    else:
        out.append(2)
        out += np.packbits(present).tobytes()


def _get_presence(buf: memoryview, at: int, n: int) -> tuple[npt.NDArray[np.bool_], int]:
    flag = buf[at]
    at += 1
    if flag == 1:
        return np.ones(n, dtype=bool), at
    if flag == 0:
        return np.zeros(n, dtype=bool), at
    size = (n + 7) // 8
    return np.unpackbits(np.frombuffer(buf[at : at + size], dtype=np.uint8), count=n).astype(bool), at + size


def _put_real(out: bytearray, values: npt.NDArray[np.float32], present: npt.NDArray[np.bool_]) -> None:
    _put_presence(out, present)
    v = values[present].astype(np.float32)
    if len(v) == 0:
        return
    wide = v.astype(np.float64)
    if np.isfinite(wide).all() and np.abs(wide).max() < 1e12:
        for exponent in range(7):
            scale = 10.0**exponent
            q = np.round(wide * scale).astype(np.int64)
            # Compared as bits, as unpack will make them: -0.0 is not 0.0.
            if ((q.astype(np.float64) / scale).astype(np.float32).view(np.int32) == v.view(np.int32)).all():
                out.append(exponent)
                _put_ints(out, q)
                return
    out.append(255)  # no decimal scale gives every value back: the float32 bits themselves
    _put_ints(out, v.view(np.int32).astype(np.int64))


def _get_real(buf: memoryview, at: int, n: int) -> tuple[tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]], int]:
    present, at = _get_presence(buf, at, n)
    values = np.zeros(n, dtype=np.float32)
    m = int(present.sum())
    if m == 0:
        return (values, present), at
    exponent = buf[at]
    ints, at = _get_ints(buf, at + 1, m)
    if exponent == 255:
        values[present] = ints.astype(np.int32).view(np.float32)
    else:
        values[present] = (ints.astype(np.float64) / 10.0**exponent).astype(np.float32)
    return (values, present), at


def _put_int_column(out: bytearray, values: npt.NDArray[np.int64], present: npt.NDArray[np.bool_]) -> None:
    _put_presence(out, present)
    _put_ints(out, values[present].astype(np.int64))


def _get_int_column(
    buf: memoryview, at: int, n: int
) -> tuple[tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]], int]:
    present, at = _get_presence(buf, at, n)
    values = np.zeros(n, dtype=np.int64)
    ints, at = _get_ints(buf, at, int(present.sum()))
    values[present] = ints
    return (values, present), at


def _put_words(out: bytearray, words: list[Any]) -> None:
    """A column of hashable JSON values: its distinct values (JSON), then each reading's code among them."""
    table: dict[Any, int] = {}
    if len(set(words)) <= 1:  # the usual day: one mode, no faults
        table = {w: 0 for w in words[:1]}
        codes = np.zeros(len(words), dtype=np.int64)
    else:
        codes = np.fromiter((table.setdefault(w, len(table)) for w in words), dtype=np.int64, count=len(words))
    names = json.dumps([list(w) if isinstance(w, tuple) else w for w in table], separators=(",", ":")).encode()
    out += struct.pack("<I", len(names)) + names
    _put_ints(out, codes)


def _get_words(buf: memoryview, at: int, n: int) -> tuple[list[Any], int]:
    (size,) = struct.unpack_from("<I", buf, at)
    names = json.loads(bytes(buf[at + 4 : at + 4 + size]))
    codes, at = _get_ints(buf, at + 4 + size, n)
    table = [tuple(w) if isinstance(w, list) else w for w in names]
    return [table[c] for c in codes.tolist()], at


# -- a day ---------------------------------------------------------------------------------------------------


def pack(day: LampDay) -> bytes:
    """The day as compact bytes (codec `CODEC`)."""
    with np.errstate(over="ignore"):
        return _compressor.compress(_pack(day))


def _pack(day: LampDay) -> bytes:
    n = len(day)
    out = bytearray(struct.pack("<BI", CODEC, n))
    # Microseconds as the protocol's milliseconds and what is left over (nothing, from devices that keep time in ms).
    ms, sub = np.divmod(day.ts_us, 1000)
    _put_ints(out, ms)
    _put_ints(out, sub)
    _put_ints(out, day.seq)
    out += np.packbits(day.is_on).tobytes()
    _put_ints(out, day.dim)
    for name in _REALS[:4]:
        _put_real(out, *getattr(day, name))
    _put_int_column(out, *day.energy_wh)
    for name in _REALS[4:]:
        _put_real(out, *getattr(day, name))
    _put_int_column(out, *day.rssi_dbm)
    _put_words(out, day.mode)
    _put_words(out, day.faults)
    latency_ms, latency_sub = np.divmod(day.received_us - day.ts_us, 1000)
    _put_ints(out, latency_ms)
    _put_ints(out, latency_sub)
    return bytes(out)


def unpack(data: bytes) -> LampDay:
    """The day `pack` was given."""
    with np.errstate(over="ignore"):
        return _unpack(memoryview(_decompressor.decompress(data)))


def _get_bits(buf: memoryview, at: int, n: int) -> tuple[npt.NDArray[np.bool_], int]:
    size = (n + 7) // 8
    return np.unpackbits(np.frombuffer(buf[at : at + size], dtype=np.uint8), count=n).astype(bool), at + size


def _get_head(
    buf: memoryview, codec: int, what: str
) -> tuple[int, npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_], int]:
    """What every packed day starts with: (readings, ts_us, seq, the first flag column, where the rest begins)."""
    found, n = struct.unpack_from("<BI", buf, 0)
    if found != codec:
        raise ValueError(f"packed {what} in codec {found}, this version reads codec {codec}")
    ms, at = _get_ints(buf, 5, n)
    sub, at = _get_ints(buf, at, n)
    seq, at = _get_ints(buf, at, n)
    flags, at = _get_bits(buf, at, n)
    return n, ms * 1000 + sub, seq, flags, at


def _unpack(buf: memoryview) -> LampDay:
    n, ts_us, seq, is_on, at = _get_head(buf, CODEC, "day")
    dim, at = _get_ints(buf, at, n)
    reals: dict[str, Any] = {}
    for name in _REALS[:4]:
        reals[name], at = _get_real(buf, at, n)
    energy, at = _get_int_column(buf, at, n)
    for name in _REALS[4:]:
        reals[name], at = _get_real(buf, at, n)
    rssi, at = _get_int_column(buf, at, n)
    mode, at = _get_words(buf, at, n)
    faults, at = _get_words(buf, at, n)
    latency_ms, at = _get_ints(buf, at, n)
    latency_sub, at = _get_ints(buf, at, n)
    latency = latency_ms * 1000 + latency_sub
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
    """`_put_ints` of each segment of `v`."""
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
    body = _zigzag(np.where(use_delta[body_seg], delta_b, offset_b))
    top = _reduce(np.maximum, body, body_lengths, np.uint64(0))
    widths = np.select([top < 1 << 8, top < 1 << 16, top < 1 << 32], [1, 2, 4], 8)
    bodies = {w: body.astype(k).view(np.uint8).reshape(-1, w) for w, k in _WIDTHS if (widths == w).any()}
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
    """`_put_presence` of each segment."""
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
    """`_put_real` of each segment: the smallest exact decimal scale per segment, or its floats' bits."""
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
    """`_put_int_column` of each segment."""
    heads = _presence_many(present, lengths)
    counts = _reduce(np.add, present.astype(np.int64), lengths, 0)
    return [h + b for h, b in zip(heads, _ints_many(values[present].astype(np.int64), counts), strict=True)]


def _words_many(words: list[Any], lengths: npt.NDArray[np.int64]) -> list[bytes]:
    """`_put_words` of each segment; a segment of one repeated value (the usual) made once per value and length."""
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
        _put_words(buf, part)
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
        ]
    compress = _compressor.compress
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


# -- a cabinet's day ---------------------------------------------------------------------------------------------
#
# Cabinets are few (one for about 150 lamps) and report every few minutes, so their days are packed one at a time
# from rows, with the same column codings: a cabinet's arrays (contactors, phase voltages, circuit currents) as
# each reading's length (-1 for NULL) and all their values end to end.

CABINET_CODEC = 1
# A cabinet reading, as `cabinet_readings` holds it after cabinet_no: (ts_us, seq, door_open, contactors,
# phase_voltage_v, circuit_current_a, leakage_ma, energy_wh, faults, lamp_count, received_us).
CabinetRow = tuple[Any, ...]


def _put_ragged(out: bytearray, values: list[list[Any] | None], real: bool) -> None:
    lengths = np.fromiter((-1 if v is None else len(v) for v in values), dtype=np.int64, count=len(values))
    _put_ints(out, lengths)
    flat = [x for v in values if v is not None for x in v]
    if real:
        _put_real(out, np.array(flat, dtype=np.float32), np.ones(len(flat), dtype=bool))
    else:
        out += np.packbits(np.array(flat, dtype=bool)).tobytes()


def _get_ragged(buf: memoryview, at: int, n: int, real: bool) -> tuple[list[list[Any] | None], int]:
    lengths, at = _get_ints(buf, at, n)
    total = int(lengths[lengths > 0].sum())
    flat: list[Any]
    if real:
        (values, _), at = _get_real(buf, at, total)
        flat = [float(str(v)) for v in values]
    else:
        bits, at = _get_bits(buf, at, total)
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
        return _compressor.compress(_pack_cabinet_day(rows))


def _pack_cabinet_day(rows: Sequence[CabinetRow]) -> bytes:
    n = len(rows)
    cols = list(zip(*rows, strict=True)) if rows else [()] * 11
    out = bytearray(struct.pack("<BI", CABINET_CODEC, n))
    ts_us = np.array(cols[0], dtype=np.int64)
    ms, sub = np.divmod(ts_us, 1000)
    _put_ints(out, ms)
    _put_ints(out, sub)
    _put_ints(out, np.array(cols[1], dtype=np.int64))
    out += np.packbits(np.array(cols[2], dtype=bool)).tobytes()
    _put_ragged(out, list(cols[3]), real=False)
    _put_ragged(out, list(cols[4]), real=True)
    _put_ragged(out, list(cols[5]), real=True)
    leak = [v is not None for v in cols[6]]
    _put_real(out, np.array([0.0 if v is None else v for v in cols[6]], dtype=np.float32), np.array(leak, dtype=bool))
    energy = [v is not None for v in cols[7]]
    _put_int_column(out, np.array([v or 0 for v in cols[7]], dtype=np.int64), np.array(energy, dtype=bool))
    _put_words(out, [tuple(f) for f in cols[8]])
    _put_ints(out, np.array(cols[9], dtype=np.int64))
    latency_ms, latency_sub = np.divmod(np.array(cols[10], dtype=np.int64) - ts_us, 1000)
    _put_ints(out, latency_ms)
    _put_ints(out, latency_sub)
    return bytes(out)


def unpack_cabinet_day(data: bytes) -> list[CabinetRow]:
    """The rows `pack_cabinet_day` was given, floats as PostgreSQL shows a `real`."""
    with np.errstate(over="ignore"):
        return _unpack_cabinet_day(memoryview(_decompressor.decompress(data)))


def _unpack_cabinet_day(buf: memoryview) -> list[CabinetRow]:
    n, ts_us, seq, door, at = _get_head(buf, CABINET_CODEC, "cabinet day")
    contactors, at = _get_ragged(buf, at, n, real=False)
    phases, at = _get_ragged(buf, at, n, real=True)
    circuits, at = _get_ragged(buf, at, n, real=True)
    (leak, leak_present), at = _get_real(buf, at, n)
    (energy, energy_present), at = _get_int_column(buf, at, n)
    faults, at = _get_words(buf, at, n)
    lamp_count, at = _get_ints(buf, at, n)
    latency_ms, at = _get_ints(buf, at, n)
    latency_sub, at = _get_ints(buf, at, n)
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

"""The column codings the compact history's packed days share (`telemetry.daypack` for a lamp's day,
`telemetry.cabinetday` for a cabinet's): integers as differences or offsets, zigzagged, narrowed and
byte-transposed; presence bitmaps for NULLs; reals as scaled integers or raw bits; words as a dictionary and
codes; and the zstd that squeezes the whole. Nothing is rounded."""

from __future__ import annotations

import json
import struct
from collections.abc import Collection
from typing import Any

import numpy as np
import numpy.typing as npt
import zstandard

__all__ = [
    "WIDTHS",
    "compressor",
    "decompressor",
    "get_bits",
    "get_head",
    "get_int_column",
    "get_ints",
    "get_presence",
    "get_real",
    "get_words",
    "put_int_column",
    "put_ints",
    "put_presence",
    "put_real",
    "put_words",
    "unzigzag",
    "zigzag",
]

ZSTD_LEVEL = 3  # level 9 packs 2 % smaller and takes four times as long
compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
decompressor = zstandard.ZstdDecompressor()


# -- integers ------------------------------------------------------------------------------------------------

WIDTHS = ((1, np.uint8), (2, np.uint16), (4, np.uint32), (8, np.uint64))


def zigzag(v: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
    return ((v << np.int64(1)) ^ (v >> np.int64(63))).view(np.uint64)


def unzigzag(u: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    return (u >> np.uint64(1)).view(np.int64) ^ -(u & np.uint64(1)).view(np.int64)


def put_ints(out: bytearray, v: npt.NDArray[np.int64]) -> None:
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
    body = zigzag(delta if use_delta else offset)
    top = int(body.max()) if n > 1 else 0
    width, kind = next((w, k) for w, k in WIDTHS if top < 1 << (8 * w))
    out += struct.pack("<qBB", first, 1 if use_delta else 0, width)
    out += body.astype(kind).view(np.uint8).reshape(-1, width).T.tobytes()


def get_ints(buf: memoryview, at: int, n: int) -> tuple[npt.NDArray[np.int64], int]:
    if n == 0:
        return np.zeros(0, dtype=np.int64), at
    first, use_delta, width = struct.unpack_from("<qBB", buf, at)
    at += 10
    size = (n - 1) * width
    kind = dict(WIDTHS)[width]
    raw = np.frombuffer(buf[at : at + size], dtype=np.uint8).reshape(width, n - 1).T.copy().view(kind).ravel()
    at += size
    body = unzigzag(raw.astype(np.uint64))
    out = np.empty(n, dtype=np.int64)
    out[0] = first
    out[1:] = np.cumsum(body) + first if use_delta else body + first
    return out, at


# -- nullable columns ----------------------------------------------------------------------------------------


def put_presence(out: bytearray, present: npt.NDArray[np.bool_]) -> None:
    if present.all():
        out.append(1)
    elif not present.any():
        out.append(0)
    else:
        out.append(2)
        out += np.packbits(present).tobytes()


def get_presence(buf: memoryview, at: int, n: int) -> tuple[npt.NDArray[np.bool_], int]:
    flag = buf[at]
    at += 1
    if flag == 1:
        return np.ones(n, dtype=bool), at
    if flag == 0:
        return np.zeros(n, dtype=bool), at
    size = (n + 7) // 8
    return np.unpackbits(np.frombuffer(buf[at : at + size], dtype=np.uint8), count=n).astype(bool), at + size


def put_real(out: bytearray, values: npt.NDArray[np.float32], present: npt.NDArray[np.bool_]) -> None:
    put_presence(out, present)
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
                put_ints(out, q)
                return
    out.append(255)  # no decimal scale gives every value back: the float32 bits themselves
    put_ints(out, v.view(np.int32).astype(np.int64))


def get_real(buf: memoryview, at: int, n: int) -> tuple[tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]], int]:
    present, at = get_presence(buf, at, n)
    values = np.zeros(n, dtype=np.float32)
    m = int(present.sum())
    if m == 0:
        return (values, present), at
    exponent = buf[at]
    ints, at = get_ints(buf, at + 1, m)
    if exponent == 255:
        values[present] = ints.astype(np.int32).view(np.float32)
    else:
        values[present] = (ints.astype(np.float64) / 10.0**exponent).astype(np.float32)
    return (values, present), at


def put_int_column(out: bytearray, values: npt.NDArray[np.int64], present: npt.NDArray[np.bool_]) -> None:
    put_presence(out, present)
    put_ints(out, values[present].astype(np.int64))


def get_int_column(buf: memoryview, at: int, n: int) -> tuple[tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]], int]:
    present, at = get_presence(buf, at, n)
    values = np.zeros(n, dtype=np.int64)
    ints, at = get_ints(buf, at, int(present.sum()))
    values[present] = ints
    return (values, present), at


def put_words(out: bytearray, words: list[Any]) -> None:
    """A column of hashable JSON values: its distinct values (JSON), then each reading's code among them."""
    table: dict[Any, int] = {}
    if len(set(words)) <= 1:  # the usual day: one mode, no faults
        table = {w: 0 for w in words[:1]}
        codes = np.zeros(len(words), dtype=np.int64)
    else:
        codes = np.fromiter((table.setdefault(w, len(table)) for w in words), dtype=np.int64, count=len(words))
    names = json.dumps([list(w) if isinstance(w, tuple) else w for w in table], separators=(",", ":")).encode()
    out += struct.pack("<I", len(names)) + names
    put_ints(out, codes)


def get_words(buf: memoryview, at: int, n: int) -> tuple[list[Any], int]:
    (size,) = struct.unpack_from("<I", buf, at)
    names = json.loads(bytes(buf[at + 4 : at + 4 + size]))
    codes, at = get_ints(buf, at + 4 + size, n)
    table = [tuple(w) if isinstance(w, list) else w for w in names]
    return [table[c] for c in codes.tolist()], at


# -- a day ---------------------------------------------------------------------------------------------------


def get_bits(buf: memoryview, at: int, n: int) -> tuple[npt.NDArray[np.bool_], int]:
    size = (n + 7) // 8
    return np.unpackbits(np.frombuffer(buf[at : at + size], dtype=np.uint8), count=n).astype(bool), at + size


def get_head(
    buf: memoryview, codecs: Collection[int], what: str
) -> tuple[int, int, npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_], int]:
    """What every packed day starts with: (its codec, readings, ts_us, seq, the first flag column, where the rest
    begins); the codec one of `codecs`."""
    found, n = struct.unpack_from("<BI", buf, 0)
    if found not in codecs:
        known = ", ".join(str(c) for c in sorted(codecs))
        raise ValueError(f"packed {what} in codec {found}, this version reads codec {known}")
    ms, at = get_ints(buf, 5, n)
    sub, at = get_ints(buf, at, n)
    seq, at = get_ints(buf, at, n)
    flags, at = get_bits(buf, at, n)
    return found, n, ms * 1000 + sub, seq, flags, at

"""PostgreSQL's binary forms (COPY rows, arrays) read straight into numpy columns."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["array_column", "binary_rows"]

_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


def binary_rows(raw: bytes | bytearray, fields: list[tuple[str, str]]) -> dict[str, npt.NDArray[Any]]:
    """Columns of a binary COPY whose fields are all fixed-width and never NULL (PostgreSQL's binary format: a
    header, then per row a field count and each field's length and bytes, then a -1 trailer). `fields` names
    each field with its numpy type (big-endian, as sent: ">i4", ">f8", "?" …)."""
    if not raw.startswith(_COPY_SIGNATURE):
        raise ValueError("not a binary COPY stream")
    extension = int.from_bytes(raw[15:19], "big")
    body = memoryview(raw)[19 + extension : -2]  # no copy: the columns are views of `raw`
    layout: list[tuple[str, str]] = [("_count", ">i2")]
    for name, kind in fields:
        layout += [(f"_{name}_len", ">i4"), (name, kind)]
    rows = np.frombuffer(body, dtype=np.dtype(layout))
    if len(rows) and (rows["_count"] != len(fields)).any():
        raise ValueError("unexpected field count in a binary COPY row")
    return {name: rows[name] for name, _ in fields}


def array_column(raw: bytes | None, kind: str) -> npt.NDArray[Any]:
    """The elements of a one-dimensional array without NULLs, from PostgreSQL's binary form (`array_send`):
    dimensions, a NULL flag, the element type, each dimension's length and lower bound, then each element's
    length and bytes. `kind` is the element's numpy type as sent (">i8", ">f4", "?" …); NULL is an empty array."""
    if raw is None:
        return np.zeros(0, dtype=kind)
    ndim, has_nulls = int.from_bytes(raw[0:4], "big"), int.from_bytes(raw[4:8], "big")
    if ndim == 0:
        return np.zeros(0, dtype=kind)
    if ndim != 1 or has_nulls:
        raise ValueError(f"not a one-dimensional array without NULLs (dimensions {ndim}, NULLs {bool(has_nulls)})")
    items = np.frombuffer(raw, dtype=np.dtype([("len", ">i4"), ("v", kind)]), offset=20)
    if len(items) != int.from_bytes(raw[12:16], "big") or (items["len"] != np.dtype(kind).itemsize).any():
        raise ValueError("array elements are not all of the expected width")
    return items["v"]

"""PostgreSQL's binary COPY format read straight into numpy columns."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["binary_rows"]

_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


def binary_rows(raw: bytes, fields: list[tuple[str, str]]) -> dict[str, npt.NDArray[Any]]:
    """Columns of a binary COPY whose fields are all fixed-width and never NULL (PostgreSQL's binary format: a
    header, then per row a field count and each field's length and bytes, then a -1 trailer). `fields` names
    each field with its numpy type (big-endian, as sent: ">i4", ">f8", "?" …)."""
    if not raw.startswith(_COPY_SIGNATURE):
        raise ValueError("not a binary COPY stream")
    extension = int.from_bytes(raw[15:19], "big")
    body = raw[19 + extension : -2]
    layout: list[tuple[str, str]] = [("_count", ">i2")]
    for name, kind in fields:
        layout += [(f"_{name}_len", ">i4"), (name, kind)]
    rows = np.frombuffer(body, dtype=np.dtype(layout))
    if len(rows) and (rows["_count"] != len(fields)).any():
        raise ValueError("unexpected field count in a binary COPY row")
    return {name: rows[name] for name, _ in fields}

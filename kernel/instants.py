"""JSON documents whose times may be written as the field protocol writes them: epoch milliseconds.

Every datetime field of a msgspec type takes either ISO 8601 text with an offset (as before) or an integer count of
milliseconds since 1970-01-01T00:00:00Z, the protocol's `ts`. The type says where the times are, so the same rule
holds for schedules, commands, crews' shifts and every other body, and nothing else turns integers into times.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from typing import Any, TypeVar

import msgspec
from msgspec import inspect as mi

__all__ = ["MAX_EPOCH_MS", "decode_json", "from_epoch_ms"]

T = TypeVar("T")
# Year 9999's last millisecond: the latest time Python's datetime holds.
MAX_EPOCH_MS = 253_402_300_799_999


def from_epoch_ms(ms: int) -> dt.datetime:
    """Milliseconds since the epoch as an aware UTC datetime."""
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)


@cache
def _info(kind: Any) -> mi.Type:
    return mi.type_info(kind)


def _times(value: Any, t: mi.Type) -> Any:
    """`value` with every integer that stands where `t` wants a datetime made into one (others as they are)."""
    if isinstance(t, mi.DateTimeType):
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_EPOCH_MS:
            return from_epoch_ms(value)
        return value
    if isinstance(t, mi.UnionType):
        for sub in t.types:
            if isinstance(sub, mi.DateTimeType) or (
                isinstance(value, dict) and isinstance(sub, mi.StructType | mi.DataclassType | mi.TypedDictType)
            ):
                return _times(value, sub)
            if isinstance(value, list) and isinstance(sub, mi.ListType | mi.SetType | mi.FrozenSetType):
                return _times(value, sub)
        return value
    if isinstance(t, mi.StructType | mi.DataclassType | mi.TypedDictType) and isinstance(value, dict):
        for f in t.fields:
            if f.encode_name in value:
                value[f.encode_name] = _times(value[f.encode_name], f.type)
        return value
    if isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType) and isinstance(value, list):
        return [_times(v, t.item_type) for v in value]
    if isinstance(t, mi.DictType) and isinstance(value, dict):
        return {k: _times(v, t.value_type) for k, v in value.items()}
    return value


def decode_json(raw: bytes | str, kind: type[T]) -> T:
    """JSON → `kind`, with epoch milliseconds accepted wherever `kind` holds a datetime. Raises msgspec's
    DecodeError (not JSON) or ValidationError (its message names the path, as msgspec.json.decode's does)."""
    value = msgspec.json.decode(raw)
    return msgspec.convert(_times(value, _info(kind)), kind)  # type: ignore[arg-type]

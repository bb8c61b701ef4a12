"""JSON as the standard has it: a number that is not finite (NaN, ±Infinity) goes out as null, in every
response and every server-sent event, so no client's parser ever meets `Infinity`."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi.responses import JSONResponse

__all__ = ["FiniteJSONResponse", "dumps", "finite"]


def finite(value: Any) -> Any:
    """`value` with every non-finite float replaced by None (containers copied only where needed)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **kw: Any) -> str:
    try:
        return json.dumps(value, allow_nan=False, **kw)
    except ValueError:
        return json.dumps(finite(value), allow_nan=False, **kw)


class FiniteJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)  # Starlette's: allow_nan=False, raises on a non-finite number
        except ValueError:
            return super().render(finite(content))

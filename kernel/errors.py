"""The root of the errors the backend raises on purpose, shared by every package.

Each room has its own base class below this one (`TelemetryError`, `AlertsError`, `CommandError`, …) and
raises only those. An error says what was wrong in words, names the field at fault when there is one, and says
what kind of problem it is; the HTTP status is chosen from the kind in `api/`, nowhere else.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["KINDS", "Kind", "Problem"]

Kind = Literal["invalid", "not_found", "conflict", "unavailable"]
KINDS: tuple[Kind, ...] = ("invalid", "not_found", "conflict", "unavailable")


class Problem(Exception):
    """`kind`: `invalid` (the caller's input is wrong), `not_found` (no such thing), `conflict` (the thing's
    state does not allow it now), `unavailable` (a service it needs is away; worth retrying)."""

    kind: Kind = "invalid"  # a subclass may set its own; an instance may say more

    def __init__(self, message: str, field: str | None = None, *, kind: Kind | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if kind is not None:
            self.kind = kind

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, field={self.field!r}, kind={self.kind!r})"

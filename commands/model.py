"""What remote control is made of: lamp states in a campaign, a campaign in memory, an operator's request, and
the package's errors."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt

from kernel.errors import Problem
from protocol.messages import encode_command

__all__ = [
    "ACKED",
    "CANCELLED",
    "CHANNEL",
    "EXPIRED",
    "FAILED",
    "FINISHED",
    "OPS",
    "QUEUED",
    "SENT",
    "STATES",
    "Campaign",
    "CommandError",
    "CommandRequest",
    "Submitted",
]

# A lamp's state in a campaign, as stored (`command_lamps.state`) and as the engine's int8 codes.
STATES = ("queued", "sent", "acked", "failed", "expired", "cancelled")
QUEUED, SENT, ACKED, FAILED, EXPIRED, CANCELLED = range(6)
FINISHED = ("acked", "failed", "expired")  # the lamp's answer is in, or will never come
OPS = ("switch", "dim", "resume", "schedule", "report")
CHANNEL = "lamplighter_commands"  # NOTIFY on it when a campaign is submitted or cancelled; the engine LISTENs


class CommandError(Problem):
    """The base of remote control's errors: a request that cannot be a campaign, a campaign that does not exist
    (`kind="not_found"`) or that cannot be cancelled any more (`kind="conflict"`)."""


class CommandRequest(msgspec.Struct, forbid_unknown_fields=True):
    target: dict[str, Any]
    op: str
    on: bool | None = None
    level: int | None = None
    until: dt.datetime | None = None
    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None
    profile: dict[str, Any] | None = None


@dataclass(frozen=True)
class Submitted:
    id: str
    lamps: int


@dataclass
class Campaign:
    id: str
    op: str
    params: dict[str, Any]
    expires_ms: int
    lamp_ids: list[str]
    districts: list[str]
    state: npt.NDArray[np.int8]
    attempts: npt.NDArray[np.int16]
    sent_at: npt.NDArray[np.float64]  # monotonic seconds of the last send
    dirty: set[int] = field(default_factory=set)
    cancelled: bool = False  # no more sends; answers to what was sent are still recorded
    errors: dict[int, str] = field(default_factory=dict)
    next_queued: int = 0

    def command(self, i: int, now_ms: int) -> bytes:
        return encode_command(self.device_id(i), self.op, now_ms, self.expires_ms, self.params)

    def device_id(self, i: int) -> str:
        return f"{self.id}-{i}"

    def counts(self) -> dict[str, int]:
        c = np.bincount(self.state, minlength=len(STATES))
        return {name: int(c[k]) for k, name in enumerate(STATES)}

"""The one backoff every retry loop of the backend uses: exponential, capped, jittered.

A fleet of gateways, simulated devices or dispatchers that lost the same broker or database must not come back
in step, so every delay is spread by `jitter` (a fraction either side). A loop that stayed up for a while before
it failed again starts over from the smallest delay (`held_s`), so one outage a week does not cost a 30 s wait.
"""

from __future__ import annotations

import asyncio
import random
import time

__all__ = ["Backoff", "backoff_delay"]


def backoff_delay(attempt: int, min_s: float = 0.5, max_s: float = 30.0, jitter: float = 0.2) -> float:
    """The delay before try number `attempt + 1` after `attempt` failures (1 → about `min_s`)."""
    if attempt < 1:
        raise ValueError(f"attempt counts failures from 1, got {attempt}")
    if not 0 < min_s <= max_s:
        raise ValueError(f"backoff needs 0 < min_s <= max_s, got {min_s} and {max_s}")
    if not 0 <= jitter < 1:
        raise ValueError(f"jitter is a fraction of the delay, 0 <= jitter < 1, got {jitter}")
    base = min_s * 2.0 ** min(attempt - 1, 60)
    return min(base, max_s) * random.uniform(1 - jitter, 1 + jitter)


class Backoff:
    """Delays for one retry loop. `fail()` counts a failure and returns the next delay; `sleep()` does both and
    waits; `ok()` says the thing works again. For a connection, which succeeds at connect and may fail soon
    after, `up()` says it connected: the count starts over only if it then stays up `held_s`, so a broker that
    accepts and drops at once is not hammered."""

    def __init__(self, min_s: float = 0.5, max_s: float = 30.0, *, jitter: float = 0.2, held_s: float = 60.0) -> None:
        backoff_delay(1, min_s, max_s, jitter)  # validates
        self.min_s, self.max_s, self.jitter, self.held_s = min_s, max_s, jitter, held_s
        self.failures = 0
        self._up_at: float | None = None

    def ok(self) -> None:
        self.failures = 0
        self._up_at = None

    def up(self) -> None:
        self._up_at = time.monotonic()

    def fail(self) -> float:
        if self._up_at is not None and time.monotonic() - self._up_at >= self.held_s:
            self.failures = 0
        self._up_at = None
        self.failures += 1
        return backoff_delay(self.failures, self.min_s, self.max_s, self.jitter)

    async def sleep(self) -> float:
        """Count a failure and wait out its delay; returns the delay waited."""
        delay = self.fail()
        await asyncio.sleep(delay)
        return delay

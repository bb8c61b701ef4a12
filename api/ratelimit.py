"""A per-client rate limit for the public endpoints: a token bucket per client address, in this process."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fastapi import Request

from api.errors import ApiError

__all__ = ["RateLimit"]


@dataclass
class RateLimit:
    """`burst` requests at once, refilled at `per_minute` a minute, per client address."""

    per_minute: float
    burst: int
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # client → (tokens, last refill)

    def check(self, request: Request) -> str:
        """Take a token for the request's client or refuse with 429; returns the client's address."""
        client = request.client.host if request.client else "unknown"
        now = time.monotonic()
        tokens, last = self._buckets.get(client, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - last) * self.per_minute / 60.0)
        if tokens < 1.0:
            wait = (1.0 - tokens) * 60.0 / self.per_minute
            raise ApiError(429, "rate_limited", f"too many requests from {client}; try again in {wait:.0f} s")
        self._buckets[client] = (tokens - 1.0, now)
        if len(self._buckets) > 100_000:  # forget the quiet ones rather than grow without bound
            cutoff = now - 3600
            self._buckets = {k: v for k, v in self._buckets.items() if v[1] > cutoff}
        return client

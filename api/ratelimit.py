"""A per-client rate limit for the public endpoints: a token bucket per client address, in this process."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fastapi import Request

from api.errors import ApiError

__all__ = ["RateLimit"]


@dataclass(frozen=True)
class RateLimit:
    """`burst` requests at once, refilled at `per_minute` a minute, per client address. The buckets belong to
    the app serving the request (`app.state`), so two apps in one process (tests, an embedded API) do not share
    them."""

    name: str
    per_minute: float
    burst: int

    def check(self, request: Request) -> str:
        """Take a token for the request's client or refuse with 429; returns the client's address."""
        state = request.app.state
        if not hasattr(state, "rate_buckets"):
            state.rate_buckets = {}
        every: dict[str, dict[str, tuple[float, float]]] = state.rate_buckets
        buckets = every.setdefault(self.name, {})  # client → (tokens, last refill)
        client = request.client.host if request.client else "unknown"
        now = time.monotonic()
        tokens, last = buckets.get(client, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - last) * self.per_minute / 60.0)
        if tokens < 1.0:
            wait = (1.0 - tokens) * 60.0 / self.per_minute
            raise ApiError(429, "rate_limited", f"too many requests from {client}; try again in {wait:.0f} s")
        buckets[client] = (tokens - 1.0, now)
        if len(buckets) > 100_000:  # forget the quiet ones rather than grow without bound
            cutoff = now - 3600
            every[self.name] = {k: v for k, v in buckets.items() if v[1] > cutoff}
        return client

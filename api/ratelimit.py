"""Per-client rate limits for the public endpoints: a token bucket per client address (or per key a route
gives), in this process.

Each check is O(1) and memory is bounded: the buckets of one limit are kept in recency order and the least
recently seen is forgotten once `clients` are held (a forgotten client starts again with a full bucket, which
is what a quiet client has anyway). IPv6 clients are counted per /64: one subscriber, one limit, however many
addresses its prefix holds.
"""

from __future__ import annotations

import collections
import ipaddress
import time
from dataclasses import dataclass

from fastapi import Request

from api.errors import ApiError

__all__ = ["RateLimit", "client_key"]


def client_key(request: Request) -> str:
    """Whom a request counts against: its IPv4 address, or its IPv6 address's /64."""
    host = request.client.host if request.client else "unknown"
    if ":" in host:
        try:
            return str(ipaddress.IPv6Network(f"{host}/64", strict=False))
        except ValueError:
            return host
    return host


@dataclass(frozen=True)
class RateLimit:
    """`burst` requests at once, refilled at `per_minute` a minute, per client (or per `key`). The buckets
    belong to the app serving the request (`app.state`), so two apps in one process (tests, an embedded API) do
    not share them."""

    name: str
    per_minute: float
    burst: int
    clients: int = 100_000  # buckets kept at most; the least recently seen goes first

    def check(self, request: Request, key: str | None = None) -> str:
        """Take a token for the request's client (or for `key`: a lamp, say) or refuse with 429; returns the
        client's key."""
        state = request.app.state
        if not hasattr(state, "rate_buckets"):
            state.rate_buckets = {}
        every: dict[str, collections.OrderedDict[str, tuple[float, float]]] = state.rate_buckets
        buckets = every.get(self.name)
        if buckets is None:
            buckets = every[self.name] = collections.OrderedDict()
        client = client_key(request)
        who = client if key is None else key
        now = time.monotonic()
        tokens, last = buckets.pop(who, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - last) * self.per_minute / 60.0)
        if tokens < 1.0:
            buckets[who] = (tokens, now)
            wait = (1.0 - tokens) * 60.0 / self.per_minute
            whom = f"from {client}" if key is None else f"for {key}"
            raise ApiError(429, "rate_limited", f"too many requests {whom}; try again in {wait:.0f} s")
        buckets[who] = (tokens - 1.0, now)  # at the end: the most recently seen
        if len(buckets) > self.clients:
            buckets.popitem(last=False)
        return client

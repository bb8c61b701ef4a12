"""The public endpoints' rate limits: per address (IPv6 per /64), per key (a lamp), bounded in memory."""

from __future__ import annotations

import types

import pytest
from starlette.requests import Request

from api.errors import ApiError
from api.ratelimit import RateLimit, client_key


def _request(state: types.SimpleNamespace, host: str) -> Request:
    app = types.SimpleNamespace(state=state)
    return Request({"type": "http", "client": (host, 50000), "app": app, "headers": []})


def test_ipv6_clients_count_per_64() -> None:
    state = types.SimpleNamespace()
    one, same, other = "2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe", "2001:db8:1:3::1"
    assert client_key(_request(state, one)) == client_key(_request(state, same)) == "2001:db8:1:2::/64"
    assert client_key(_request(state, other)) != client_key(_request(state, one))
    limit = RateLimit("t", per_minute=1.0, burst=2)
    limit.check(_request(state, one))
    limit.check(_request(state, same))
    with pytest.raises(ApiError) as refused:
        limit.check(_request(state, "2001:db8:1:2::99"))  # a third address of the same prefix
    assert refused.value.status_code == 429
    limit.check(_request(state, other))  # another prefix has its own bucket


def test_a_key_limits_whoever_asks_and_memory_stays_bounded() -> None:
    state = types.SimpleNamespace()
    per_lamp = RateLimit("lamp", per_minute=0.1, burst=3, clients=1000)
    for i in range(3):
        per_lamp.check(_request(state, f"10.0.0.{i}"), key="lamp XN-CD-000001")
    with pytest.raises(ApiError, match="for lamp XN-CD-000001"):
        per_lamp.check(_request(state, "10.0.0.9"), key="lamp XN-CD-000001")
    many = RateLimit("many", per_minute=10.0, burst=1, clients=1000)
    for i in range(5000):
        many.check(_request(state, f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"))
    assert len(state.rate_buckets["many"]) == 1000  # the least recently seen forgotten
    with pytest.raises(ApiError):
        many.check(_request(state, "10.0.19.135"))  # the newest (the 5000th) is still remembered

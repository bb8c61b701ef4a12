"""Factories the tests build their world with, as fixtures: a seeded city of N lamps (`seed_city`), an API
client signed in as a role (`api_as`), a gateway in this process (`start_gateway`), and `no_errors`."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from inventory.city import Inventory
from inventory.loader import load
from kernel.database import connect
from lamplighter.runtime import Endpoints, GatewayProcess
from seeds.generator import generate
from simulator.fleet import FleetSpec
from tests.support.auth import sign_in

__all__ = ["GatewayFactory", "SeededCity", "api_as", "load_generated", "no_errors", "seed_city", "start_gateway"]


@functools.lru_cache(maxsize=16)
def generated(lamps: int, seed: int) -> Inventory:
    """A generated city, made once per (lamps, seed) for the whole run: the generator is deterministic."""
    return generate(lamps, seed=seed)


def load_generated(database_url: str, lamps: int, *, seed: int = 3) -> None:
    with connect(database_url, autocommit=True) as conn:
        load(conn, generated(lamps, seed), progress=False)


@dataclass(frozen=True)
class SeededCity:
    """A generated city loaded into the test's database."""

    endpoints: Endpoints
    lamps: int
    seed: int

    @property
    def url(self) -> str:
        return self.endpoints.database_url

    def lamp_ids(self, limit: int | None = None) -> list[tuple[str, str]]:
        """(lamp id, district) of the first `limit` lamps (all by default), in lamp order."""
        inv = generated(self.lamps, self.seed)
        pairs = list(zip(inv.lamp_id, inv.lamp_district, strict=True))
        return pairs if limit is None else pairs[:limit]

    def spec(self) -> FleetSpec:
        """The city as the simulator sees it."""
        with connect(self.url) as conn:
            return FleetSpec.from_db(conn)


@pytest.fixture
def seed_city(endpoints: Endpoints) -> Callable[..., SeededCity]:
    """`seed_city(lamps, seed=3)`: the generated city of `lamps` loaded into the test's database."""

    def make(lamps: int = 1000, *, seed: int = 3) -> SeededCity:
        load_generated(endpoints.database_url, lamps, seed=seed)
        return SeededCity(endpoints, lamps, seed)

    return make


@pytest.fixture
def api_as(endpoints: Endpoints) -> Iterator[Callable[..., TestClient]]:
    """`api_as(role, **create_app arguments)`: a started API client on the test's database and broker, signed in as a
    new user of `role` (None: not signed in); closed after the test."""
    with contextlib.ExitStack() as stack:

        def make(
            role: str | None = "viewer", *, crew: str | None = None, raise_server_exceptions: bool = True, **kwargs: Any
        ) -> TestClient:
            kwargs.setdefault("database_url", endpoints.database_url)
            kwargs.setdefault("broker", endpoints.as_("lamplighter-api"))
            app = create_app(**kwargs)
            client = stack.enter_context(TestClient(app, raise_server_exceptions=raise_server_exceptions))
            if role is not None:
                sign_in(client, kwargs["database_url"], role, crew=crew)
            return client

        yield make


GatewayFactory = Callable[..., contextlib.AbstractAsyncContextManager[GatewayProcess]]


@pytest.fixture
def start_gateway(endpoints: Endpoints, client_id: str) -> GatewayFactory:
    """`async with start_gateway(**GatewayProcess.start arguments) as gw`: the gateway in this process, subscribed."""

    @contextlib.asynccontextmanager
    async def start(**kwargs: Any) -> AsyncIterator[GatewayProcess]:
        from tests.support.gateway import gateway

        async with gateway(endpoints, client_id, **kwargs) as gw:
            yield gw

    return start


@pytest.fixture
def no_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail the test if anything logged an error (a bad message must never be one)."""
    yield
    errors = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert not errors, [r.getMessage() for r in errors]

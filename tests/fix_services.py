"""Real services for the tests: the private Mosquitto and PostgreSQL under .run/test (or the ones configured).

Each test that needs a database gets a fresh one, cloned from a migrated template, so tests never see each
other's rows. Each test gets its own MQTT topics' district-free client ids, so sessions never collide.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from lamplighter.config import Settings
from lamplighter.runtime import Endpoints, private_services
from telemetry.schema import migrate

_TEMPLATE = "lamplighter_template"


@dataclass(frozen=True)
class Services:
    endpoints: Endpoints
    admin_url: str

    def url_for(self, database: str) -> str:
        return self.admin_url.rsplit("/", 1)[0] + "/" + database


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    settings = Settings.load()
    with private_services(settings, "test") as ep:
        admin = ep.database_url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {_TEMPLATE}")
            conn.execute(f"CREATE DATABASE {_TEMPLATE}")
        with psycopg.connect(admin.rsplit("/", 1)[0] + "/" + _TEMPLATE, autocommit=True) as conn:
            migrate(conn)
        yield Services(ep, admin)


@contextlib.contextmanager
def fresh_database(services: Services) -> Iterator[str]:
    """A new database cloned from the migrated template, dropped afterwards."""
    name = f"lltest_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(services.admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {_TEMPLATE}")
    try:
        yield services.url_for(name)
    finally:
        with psycopg.connect(services.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def database_url(services: Services) -> Iterator[str]:
    with fresh_database(services) as url:
        yield url


@pytest.fixture
def endpoints(services: Services, database_url: str) -> Endpoints:
    ep = services.endpoints
    return Endpoints(database_url, ep.mqtt_url, ep.mqtt_host, ep.mqtt_port)


@pytest.fixture
def client_id() -> str:
    """A broker client id no other test uses (persistent sessions are keyed by it)."""
    return f"lltest-{uuid.uuid4().hex[:10]}"

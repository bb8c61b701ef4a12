"""Real services for the tests: the private Mosquitto and PostgreSQL under .run/test (or the ones configured).

Each test that needs a database gets a fresh one, cloned from a migrated template, so tests never see each
other's rows. Each test gets its own MQTT topics' district-free client ids, so sessions never collide.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mqtt5
import psycopg
import pytest

import lamplighter
from fieldnet.accounts import Account, crew_user
from fieldnet.broker import Broker
from kernel.database import database_of, with_database
from lamplighter.config import Settings
from lamplighter.runtime import Endpoints, private_services, provision_private
from lamplighter.services import OWNER_ROLE, auth_config, create_database
from seeds.generator import DISTRICTS
from simulator.fleet import Fleet, FleetSpec
from simulator.wire import RawPublisher

_TEMPLATE = "lamplighter_template"


@dataclass(frozen=True)
class Services:
    endpoints: Endpoints  # the application's role (database_url), the schema owner's (owner_url), the superuser's
    admin_url: str

    def url_for(self, database: str) -> str:
        """The application's login to `database` (rows only, as the gateway and the API connect)."""
        return with_database(self.endpoints.database_url, database)

    def owner_url_for(self, database: str) -> str:
        """The schema owner's login to `database` (migrations, inventory replacement, DDL in a test)."""
        return with_database(self.endpoints.schema_url, database)

    def drop_connections(self, database_url: str) -> None:
        """Every connection to that database ends, as in a PostgreSQL restart or failover: each backend has exited
        when this returns (a signalled backend goes a moment later, and a restart's connections are gone before it
        is back)."""
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = %s",
                (database_of(database_url),),
            )

    @contextlib.contextmanager
    def database_away(self, database_url: str) -> Iterator[None]:
        """Inside: that database has dropped every connection and refuses new ones."""
        name = database_of(database_url)
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            try:
                self.drop_connections(database_url)
                yield
            finally:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    settings = Settings.load()
    # Every test database is new, and so is the broker's state: sessions of earlier runs are not kept.
    (Path(settings.run_dir) / "test" / "mosquitto" / "mosquitto.db").unlink(missing_ok=True)
    with private_services(settings, "test") as ep:
        admin = ep.admin_url
        assert admin is not None, "the tests make a database per test: they need the private PostgreSQL"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {_TEMPLATE}")
        create_database(admin, _TEMPLATE)
        dataclasses.replace(
            ep,
            database_url=with_database(ep.database_url, _TEMPLATE),
            owner_url=with_database(ep.schema_url, _TEMPLATE),
        ).migrate()
        with psycopg.connect(admin, autocommit=True) as conn:
            # Nobody connects to the template again (TimescaleDB's scheduler would, and a copy needs it idle).
            conn.execute(f"ALTER DATABASE {_TEMPLATE} ALLOW_CONNECTIONS false")
            # … and whoever is connected already (TimescaleDB's job scheduler starts in every new database) goes.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (_TEMPLATE,),
            )
        yield Services(ep, admin)


@contextlib.contextmanager
def fresh_database(services: Services) -> Iterator[str]:
    """A new database cloned from the migrated template, dropped afterwards; yields the application's login."""
    name = f"lltest_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(services.admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {_TEMPLATE} OWNER {OWNER_ROLE}")
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
def owner_url(services: Services, database_url: str) -> str:
    """The schema owner's login to the test's database."""
    return services.owner_url_for(database_of(database_url))


@pytest.fixture
def endpoints(services: Services, database_url: str) -> Endpoints:
    return for_database(services, database_url)


def for_database(services: Services, database_url: str) -> Endpoints:
    """The shared services' endpoints with `database_url`'s database (both roles) in place of theirs."""
    name = database_of(database_url)
    return dataclasses.replace(
        services.endpoints, database_url=services.url_for(name), owner_url=services.owner_url_for(name)
    )


def provision(ep: Endpoints) -> None:
    """Give the devices and crews of `ep`'s inventory their accounts on the shared test broker (it reloads)."""
    with psycopg.connect(ep.database_url) as conn:
        done = provision_private(ep, conn)
    assert done is not None, "the tests' broker is not the private one"
    time.sleep(0.2)  # the broker reads the files on SIGHUP


def over_tls(ep: Endpoints) -> Endpoints:
    """`ep` through the shared test broker's TLS listener (the port after its plain one), trusting its CA."""
    assert ep.accounts is not None, "the tests' broker is not the private one"
    tls = Broker.parse(f"mqtts://{ep.broker.host}:{ep.broker.port + 1}", ca_file=ep.accounts.parent / "tls" / "ca.crt")
    return dataclasses.replace(ep, broker=tls)


def as_crew(ep: Endpoints, crew: str) -> Broker:
    """The broker as a crew's app logs in to it (provisioned with `provision`)."""
    return ep.broker.with_login(ep.key().login(Account(crew_user(crew))))


def forget_sessions(broker: Broker, prefix: str) -> None:
    """End the persistent sessions a test left on the shared broker under `prefix`: its gateways' (ingest per
    district, the command link) and its simulators' command subscriptions. Left behind, each keeps queueing
    every later test's messages; measured: 290 MB in the broker's store by the middle of a run, which it then
    rewrote every 10 s (autosave), stalling everyone's traffic for seconds at a time."""
    ids = [
        f"{base}-{role}"
        for base in (prefix, f"{prefix}-sim")
        for role in (*(f"ingest-{d.code}" for d in DISTRICTS), "commands")
    ]
    ids.append(f"{prefix}-dev")
    for client in ids:
        # A clean start with no session expiry discards whatever session the broker kept under this id.
        with contextlib.suppress(OSError), socket.create_connection((broker.host, broker.port), timeout=5) as sock:
            connect = mqtt5.ConnectPacket(
                client, clean_start=True, username=broker.username, password=broker.password_bytes
            )
            sock.sendall(connect.write())
            sock.recv(64)  # CONNACK
            sock.sendall(b"\xe0\x00")  # DISCONNECT


def clear_statuses(ep: Endpoints, spec: FleetSpec, client_id: str) -> None:
    """Remove the retained `status` messages of `spec`'s devices from the shared broker. Devices on their own
    connections leave them (online, or their last will); left behind, every later test's gateway would receive
    them, for lamps its own inventory may not have."""
    topics = [(t.encode(), b"") for t, _ in Fleet(spec, interval_s=3600, start_ms=0).status_topics()]
    pub = RawPublisher(ep.as_("lamplighter-headend"), client_id + "-clear")
    pub.publish_batch(topics, retain=True)
    pub.close()


@pytest.fixture
def client_id(services: Services) -> Iterator[str]:
    """A broker client id no other test uses (persistent sessions are keyed by it); its sessions are ended
    after the test."""
    cid = f"lltest-{uuid.uuid4().hex[:10]}"
    yield cid
    forget_sessions(services.endpoints.as_("lamplighter-api"), cid)


def _ephemeral_low() -> int:
    """Where the kernel's range of ports for outgoing connections starts (Linux: 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server binds: TIME_WAIT does not count
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int, *, pairs: bool = False) -> list[int]:
    """`n` loopback ports a server can bind now (with `pairs`, each with the next one free too: a broker's TLS
    listener), none the neighbour of another. Drawn below the kernel's range for outgoing connections: a port from
    that range can be taken by any client's connection between this choice and the server's start (seen once as a
    private broker exiting at start)."""
    rng, low = random.Random(), 10_000
    high = max(low + 1000, _ephemeral_low() - 2)
    found: list[int] = []
    taken: set[int] = set()
    while len(found) < n:
        port = rng.randrange(low, high)
        wanted = {port, port + 1} if pairs else {port}
        if wanted & taken or not all(_bindable(p) for p in wanted):
            continue
        found.append(port)
        taken |= wanted | {port - 1, port + 2}
    return found


def free_port() -> int:
    """A loopback port nobody listens on now (`free_ports`)."""
    return free_ports(1)[0]


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """The app on a real uvicorn server in a thread, on its own port; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(15)


class PrivateBroker:
    """A Mosquitto of the test's own, with the project's settings and sessions kept on disk across a restart
    (as a production broker is set up), so it can be restarted without disturbing the other tests."""

    def __init__(self, root: Path, *, max_inflight: int = 0) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        base = (Path(lamplighter.__file__).parent / "mosquitto.conf").read_text().replace("persistence false", "")
        base = base.replace("max_inflight_messages 0", f"max_inflight_messages {max_inflight}")
        self.conf = root / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "persistence true", f"persistence_location {root}/"]
        # The shared test broker's accounts and ACL (the same logins work on both).
        auth = Path(Settings.load().run_dir).resolve() / "test" / "mosquitto"
        lines += auth_config(auth)
        if os.geteuid() == 0:
            lines.append("user root")
        self.conf.write_text(base + "\n" + "\n".join(lines) + "\n")
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        proc = subprocess.Popen([binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s, contextlib.suppress(OSError):
                s.connect(("127.0.0.1", self.port))
                return proc
            time.sleep(0.05)
        proc.kill()
        raise AssertionError("the test's broker did not start")

    def restart(self, away_s: float) -> None:
        self.stop()
        time.sleep(away_s)
        self.start()

    def start(self) -> None:
        self.proc = self._start()

    def stop(self) -> None:
        self.proc.terminate()  # Mosquitto saves its sessions on SIGTERM
        self.proc.wait(10)

    def endpoints(self, ep: Endpoints) -> Endpoints:
        """`ep` with this broker in place of the shared one (the same accounts: it reads the same files)."""
        return dataclasses.replace(ep, broker=dataclasses.replace(ep.broker, port=self.port))

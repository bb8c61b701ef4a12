"""Wiring of the services into processes: where the broker and database are, the gateway's task group."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import mqtt5

from alerts.crews import crew_ids
from alerts.dispatch import Dispatcher, MqttTransport, NotifyTransport, WebhookTransport
from alerts.engine import AlertEngine
from alerts.service import AlertService, SavedState
from commands.engine import CommandEngine
from fieldnet.accounts import DeviceKey
from fieldnet.broker import Broker
from fieldnet.provision import Inventory, Provisioned, load_accounts, provision, reload
from gateway.command_link import CommandLink
from gateway.hearing import HearingWatch
from gateway.heartbeat import Heartbeat, PeerWatermarks, beat_forever
from gateway.metrics import GatewayMetrics
from gateway.mqtt import MqttSubscriber
from gateway.retained import RetainedPublisher
from gateway.service import Gateway
from gateway.sessions import IngestSessions
from inventory.registry import Registry, district_codes, inventory_version, load_registry
from kernel.backoff import Backoff
from kernel.clock import Clock
from kernel.database import Connection, Database, DatabaseUnavailable, connect, role_of, shown
from kernel.leases import Leases
from kernel.supervise import supervise
from lamplighter.config import Settings
from lamplighter.schema import migrate
from lamplighter.services import PrivateServices, ServiceError, create_database
from lighting.engine import LightingEngine, follow_forever
from lighting.sampler import Sampler
from protocol.topics import OPS_RATE_TOPIC
from telemetry.models import Batch
from telemetry.schema import role_problems
from telemetry.store import TelemetryStore, last_received_ms
from telemetry.upkeep import Upkeep

__all__ = [
    "Endpoints",
    "GatewayProcess",
    "bench_city",
    "endpoints",
    "private_services",
    "warn_privileges",
]

logger = logging.getLogger(__name__)

# Private instances per purpose, on their own ports, so a demo, a test run and a benchmark can run side by side.
# PostgreSQL below the kernel's ephemeral range (32768-60999 on Linux): at 55452 a bench's database twice failed to
# start because a client socket in TIME_WAIT held that port as its own local one.
_PURPOSE_OFFSET = {"dev": 0, "test": 10, "bench": 20}  # each purpose's ports above the private ones


def private_ports(settings: Settings, purpose: str) -> tuple[int, int]:
    """(PostgreSQL, Mosquitto) ports of the private services of `purpose` (dev, test, bench)."""
    k = _PURPOSE_OFFSET[purpose]
    return settings.private_pg_port + k, settings.private_mqtt_port + k


_INVENTORY_CHECK_S = 30.0
_LEAD_TRY_S = 2.0  # a gateway not leading tries to take the lead this often (a dead leader's goes at once)


def warn_privileges(conn: Connection) -> None:
    """Log what the application's database role may do that it should not (docs/security.md)."""
    problems = role_problems(conn)
    if problems:
        logger.warning(
            "the application's database role %r %s: give it a role of its own that owns nothing, and the schema "
            "owner's URL to LAMPLIGHTER_DATABASE_OWNER_URL (docs/security.md)",
            conn.info.user,
            ", ".join(problems),
        )


@dataclass(frozen=True)
class Endpoints:
    """The services a process uses: the database, the broker, and how it logs in to the broker."""

    database_url: str  # the application's role: rows only
    broker: Broker  # with the URL's own login, if it had one
    accounts: Path | None = None  # the services' logins (`lamplighter devices provision` writes it)
    device_key: Path | None = None  # the deployment's key: provisioning, and the simulator's device logins
    owner_url: str | None = None  # the schema owner's role: migrations and inventory loads (None: database_url)
    admin_url: str | None = None  # the private cluster's superuser, on its `postgres` database (None: not ours)

    @property
    def schema_url(self) -> str:
        """The login that may change the schema and load an inventory."""
        return self.owner_url or self.database_url

    def migrate(self, retention_days: int = 90, compact_after_days: int = 2) -> list[int]:
        """Bring the schema up to date as its owner and give the application's role its rights
        (`lamplighter.schema.migrate`); the versions applied now."""
        with connect(self.schema_url, autocommit=True) as conn:
            app = role_of(self.database_url)
            grant = None if app == conn.info.user else app
            return migrate(conn, retention_days=retention_days, compact_after_days=compact_after_days, grant_to=grant)

    @property
    def mqtt_host(self) -> str:
        return self.broker.host

    @property
    def mqtt_port(self) -> int:
        return self.broker.port

    @property
    def mqtt_url(self) -> str:
        """The broker's URL, with the login only if the configured URL carried one."""
        login = self.broker.login
        who = f"{quote(login.username, safe='')}:{quote(login.password, safe='')}@" if login else ""
        return f"{'mqtts' if self.broker.tls else 'mqtt'}://{who}{self.broker.host}:{self.broker.port}"

    def as_(self, username: str) -> Broker:
        """The broker, logged in as one of the backend's accounts (fieldnet.accounts.SERVICES)."""
        if self.broker.login is not None or self.accounts is None:
            return self.broker
        logins = load_accounts(self.accounts)
        if username not in logins:
            raise ServiceError(f"{self.accounts} has no account {username!r}: run `lamplighter devices provision`")
        return self.broker.with_login(logins[username])

    def key(self, *, create: bool = False) -> DeviceKey:
        """The deployment's key; with `create`, made first if its file does not exist yet."""
        if self.device_key is None:
            raise ServiceError("set LAMPLIGHTER_DEVICE_KEY_FILE: the file of the key every secret is derived from")
        return DeviceKey.load(self.device_key, create=create)

    def env(self) -> dict[str, str]:
        """The environment that gives a child process these same services."""
        out = {"LAMPLIGHTER_DATABASE_URL": self.database_url, "LAMPLIGHTER_MQTT_URL": self.mqtt_url}
        for name, value in (
            ("MQTT_ACCOUNTS", self.accounts),
            ("DEVICE_KEY_FILE", self.device_key),
            ("MQTT_CA_FILE", self.broker.ca_file),
            ("MQTT_CERT_FILE", self.broker.cert_file),
            ("MQTT_KEY_FILE", self.broker.key_file),
        ):
            if value is not None:
                out[f"LAMPLIGHTER_{name}"] = str(value)
        return out


def _endpoints(
    settings: Settings, mqtt: str, svc: PrivateServices | None = None, *, private_broker: bool, private_db: bool
) -> Endpoints:
    broker = settings.broker(mqtt)
    accounts, key = settings.mqtt_accounts, settings.device_key_file
    if svc is not None and private_broker:  # the private broker: its own files unless settings say otherwise
        accounts, key = accounts or svc.accounts_file, key or svc.key_file
    if svc is not None and private_db:
        return Endpoints(svc.database_url, broker, accounts, key, svc.owner_url, svc.admin_url)
    assert settings.database_url is not None
    return Endpoints(settings.database_url, broker, accounts, key, settings.database_owner_url)


@contextlib.contextmanager
def private_services(settings: Settings, purpose: str = "dev") -> Iterator[Endpoints]:
    """Use the configured services; otherwise start private ones under run_dir/<purpose> and stop them after."""
    if settings.database_url and settings.mqtt_url:
        yield _endpoints(settings, settings.mqtt_url, private_broker=False, private_db=False)
        return
    pg_port, mqtt_port = private_ports(settings, purpose)
    svc = PrivateServices(Path(settings.run_dir) / purpose, pg_port=pg_port, mqtt_port=mqtt_port)
    started: list[str] = []
    try:
        if not settings.mqtt_url:
            svc.start_mosquitto()
            started.append("mosquitto")
        if not settings.database_url:
            svc.start_postgres()
            started.append("postgres")
        yield _endpoints(
            settings,
            settings.mqtt_url or svc.mqtt_url,
            svc,
            private_broker=not settings.mqtt_url,
            private_db=not settings.database_url,
        )
    finally:
        svc.stop()


@contextlib.contextmanager
def bench_city(settings: Settings, lamps: int) -> Iterator[Endpoints]:
    """Private bench services with a fresh database holding a generated city of `lamps` (seed 1)."""
    from inventory.loader import load
    from seeds.generator import generate

    # A fresh broker state as well as a fresh database: sessions an earlier run left queued must not land here.
    (Path(settings.run_dir) / "bench" / "mosquitto" / "mosquitto.db").unlink(missing_ok=True)
    # Always the private services (whatever database or broker the settings name), on the settings' private ports.
    private = Settings(
        run_dir=settings.run_dir, private_pg_port=settings.private_pg_port, private_mqtt_port=settings.private_mqtt_port
    )
    with private_services(private, "bench") as ep:
        assert ep.admin_url is not None
        with connect(ep.admin_url, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS lamplighter WITH (FORCE)")
        create_database(ep.admin_url, "lamplighter")
        ep.migrate()
        with connect(ep.schema_url, autocommit=True) as conn:
            load(conn, generate(lamps, seed=1), progress=sys.stderr.isatty())
            provision_private(ep, conn)
        yield ep


def endpoints(settings: Settings) -> Endpoints:
    """For commands that join running services: the configured ones, or the private dev ones if they are up."""
    pg_port, mqtt_port = private_ports(settings, "dev")
    private = PrivateServices(Path(settings.run_dir) / "dev", pg_port=pg_port, mqtt_port=mqtt_port)
    db = settings.database_url or private.database_url
    mqtt = settings.mqtt_url or private.mqtt_url
    try:
        with connect(db, connect_timeout=3):
            pass
    except DatabaseUnavailable as exc:
        hint = (
            ""
            if settings.database_url
            else " (no LAMPLIGHTER_DATABASE_URL given, so the private one was tried: start it with "
            "`lamplighter services` in another terminal, or run `make demo`)"
        )
        raise ServiceError(f"cannot connect to the database {shown(db)}{hint}: {exc}") from exc
    return _endpoints(
        settings, mqtt, private, private_broker=not settings.mqtt_url, private_db=not settings.database_url
    )


def provision_private(ep: Endpoints, conn: Connection) -> Provisioned | None:
    """Provision the inventory in `conn` into the private broker that `ep` uses, and have it reload; None when
    `ep`'s broker is not a private one (provision an external broker with `lamplighter devices provision`)."""
    if ep.accounts is None or ep.device_key is None or not (ep.accounts.parent / "pid").exists():
        return None
    done = provision(ep.key(), ep.accounts.parent, Inventory.from_db(conn, crew_ids(conn)))
    reload(ep.accounts.parent / "pid")
    return done


class GatewayProcess:
    """One gateway process. Every gateway ingests the districts it leases (gateway.sessions) and judges their
    faults; the one holding the `leader` lease also runs what must run once city-wide: the command engine,
    the lighting-rate sampler and its retained message, ticket escalation, partition and quarantine upkeep.
    Alone, a gateway holds every district and the lead."""

    @classmethod
    def start(cls, settings: Settings, ep: Endpoints, **kwargs: Any) -> GatewayProcess:
        """The start-up: the schema brought up to date (as its owner, once, before anything reads it), then the
        process built from what the database holds."""
        ep.migrate(settings.retention_days, settings.compact_after_days)
        return cls(settings, ep, **kwargs)

    def __init__(
        self,
        settings: Settings,
        ep: Endpoints,
        *,
        clock: Clock | None = None,
        metrics: GatewayMetrics | None = None,
        inventory_check_s: float = _INVENTORY_CHECK_S,
    ) -> None:
        """Built from a migrated database (`start` migrates first)."""
        self.settings = settings
        self.ep = ep
        self.clock = clock or Clock()
        self.metrics = metrics or GatewayMetrics()
        self.inventory_check_s = inventory_check_s
        prefix = settings.gateway_client_id
        # Unique per process by default: its heartbeat, its own MQTT clients. Sessions that must outlive a
        # process (a district's ingest, the command link) are named by their role and leased.
        self.instance = settings.gateway_instance or f"{prefix}-{socket.gethostname()}-{os.getpid()}"
        # The one pool every service of this process draws from (opened when the process runs).
        self.db = Database(ep.database_url, name="lamplighter-gateway")
        with connect(ep.database_url, autocommit=True) as conn:
            warn_privileges(conn)
            registry = load_registry(conn)
            districts = district_codes(conn)
            self._inventory = inventory_version(conn)
            self.engine = LightingEngine.load(conn)
            self.fault_engine = AlertEngine(self.engine, self.clock.now_ms())
            self.alerts = AlertService(
                self.fault_engine, self.db, self.clock, deadlines=settings.deadlines, judges=self._judges
            )
            self.alerts.load(conn)
            # Until this gateway hears devices, nobody is silent: not since the last message a gateway received.
            self.fault_engine.pause(last_received_ms(conn) or self.clock.now_ms())
        if not registry.lamps:
            logger.warning(
                "the inventory is empty: every device message will be quarantined as unknown_device; "
                "run `lamplighter seed` first"
            )
        self.store = TelemetryStore(self.db)
        self.leases = Leases(self.db, prefix, on_lost=self._leases_lost)
        self._judged: set[str] = set()  # districts whose faults this process judges (their ingest is ours)
        self._takeover = asyncio.Event()  # districts were taken over: refresh the engines' view of them
        self._first_take = True
        self._lead_lost = asyncio.Event()  # set when the leader lease went with its connection
        self._beat_now = asyncio.Event()  # the districts held changed: say so in the heartbeat at once
        self.sessions = IngestSessions(
            broker=ep.as_("lamplighter-ingest"),
            prefix=prefix,
            districts=districts,
            leases=self.leases,
            on_message=self._on_message,
            on_packets=self._on_packets,
            gateways=self.leases.members,
            on_change=self._districts_changed,
            receive_maximum=settings.receive_maximum,
        )
        self.subscriber = self.sessions  # `connected` and `received`, as with one session
        self.gateway = Gateway(
            registry=registry,
            write=self.store.write,
            ack=self.sessions.ack,
            metrics=self.metrics,
            clock=self.clock,
            max_batch=settings.batch_max,
            flush_interval_s=settings.flush_interval_s,
            retention_days=settings.retention_days,
            on_committed=self._committed,
            qos0_max=settings.qos0_queue_max,
        )
        # The one outbound MQTT link (the leader's): commands and their acks, the retained rate, crews' tickets.
        self.command_link = CommandLink(
            ep.as_("lamplighter-commands"), f"{prefix}-commands", max_acks=settings.ack_queue_max
        )
        self.dispatcher = (
            Dispatcher(
                self.db,
                {
                    "webhook": WebhookTransport(allow_private=settings.delivery_allow_private),
                    "notify": NotifyTransport(allow_private=settings.delivery_allow_private),
                    "mqtt": MqttTransport(self.command_link.send),
                },
                max_attempts=settings.delivery_max_attempts,
                max_age=dt.timedelta(hours=settings.delivery_max_age_h),
            )
            if settings.dispatch
            else None
        )
        m = self.metrics
        m.acks_dropped.set_function(lambda: self.command_link.acks_dropped)
        if self.dispatcher is not None:
            dispatcher = self.dispatcher
            m.dead_letters.set_function(lambda: dispatcher.dead_lettered)
        self.commands = CommandEngine(
            self.db,
            self.command_link,
            self.clock.now_ms,
            pace=settings.command_pace,
            ack_timeout_s=settings.command_ack_timeout_s,
            retries=settings.command_retries,
            reconnect_grace_s=settings.command_reconnect_grace_s,
            retention_days=settings.retention_days,
        )
        self.publisher = RetainedPublisher(self.command_link, OPS_RATE_TOPIC)
        self.sampler = Sampler(
            self.engine,
            self.db,
            self.clock,
            publish=self.publisher.set,
            fine_every_min=settings.fine_sample_every_min,
            timezone=settings.timezone,
            inspection=settings.inspection_at,
            ingested_through=self._ingested_through_ms,
        )
        # An outage of ours (broker away, database away, a stall, this gateway down) is nobody's silence.
        self.hearing = HearingWatch(
            self.sessions.connected,
            self.gateway,
            pause=self.fault_engine.pause,
            resume=self.fault_engine.resume,
            now_ms=self.clock.now_ms,
        )
        self.peers = PeerWatermarks(self.instance)
        self.upkeep = Upkeep(
            self.db,
            self.clock,
            quarantine_days=settings.quarantine_days,
            quarantine_rows=settings.quarantine_rows,
            compact_after_days=settings.compact_after_days,
            compact=[sys.executable, "-m", "lamplighter", "compact"],
            summarise=[sys.executable, "-m", "lamplighter", "summarise"],
            after_summaries=[sys.executable, "-m", "lamplighter", "forecast"],
            env={**os.environ, **ep.env()},
        )
        self.leading = False
        logger.info(
            "gateway %s ready: %d lamps and %d cabinets in the registry, %d districts",
            self.instance,
            len(registry.lamps),
            len(registry.cabinets),
            len(districts),
        )

    # -- after a commit --------------------------------------------------------------------------------------

    def _committed(self, batch: Batch) -> None:
        """What follows a commit, in order, on this event loop: the fleet state (the lighting engine) takes the
        batch, then the fault rules judge what it touched. The sampler reads the engine and waits for
        `Gateway.ingested_through_ms` to pass each minute it judges."""
        columns = self.engine.on_batch(batch)
        self.alerts.on_batch(batch, columns)

    def _ingested_through_ms(self) -> int:
        """For the sampler: clock time up to which every gateway's ingest is in this process's engine."""
        own = self.gateway.ingested_through_ms()
        peers = self.peers.through_ms()
        return own if peers is None else min(own, peers)

    def _on_message(self, topic: str, payload: bytes, qos: int, token: object) -> None:
        self.gateway.on_message(topic, payload, qos, token)  # type: ignore[arg-type]

    def _on_packets(self, packets: list[mqtt5.PublishPacket], source: MqttSubscriber) -> None:
        self.gateway.on_packets(packets, source)

    # -- districts -------------------------------------------------------------------------------------------

    def _judges(self, district: str) -> bool:
        return district in self._judged

    def _districts_changed(self, gained: set[str], lost: set[str]) -> None:
        self._beat_now.set()
        self._judged -= lost
        if gained and self._first_take:  # the engines were loaded from PostgreSQL a moment ago
            self._first_take = False
            self._judged |= gained
        elif gained:
            self._takeover.set()

    async def _takeovers(self) -> None:
        """Districts taken over from another gateway: their lamps' states and tickets as PostgreSQL has them,
        then they are judged here. Read in a worker thread, swapped in on this loop."""
        await supervise(self._take_over, what="taking districts over (reading their state)", backoff=Backoff(0.5, 10))

    async def _take_over(self) -> None:
        await self._takeover.wait()
        self._takeover.clear()
        try:
            fresh, saved = await self.db.run(self._read_engines)
        except BaseException:
            self._takeover.set()  # read again on the next round
            raise
        self.engine.adopt(fresh)
        self.alerts.restart(saved)
        self._judged = set(self.sessions.held())
        logger.info("fault engine: judging districts %s", ", ".join(sorted(self._judged)))

    def _read_engines(self, conn: Connection) -> tuple[LightingEngine, SavedState]:
        return LightingEngine.load(conn), self.alerts.read_state(conn)

    def _leases_lost(self, names: set[str]) -> None:
        self.sessions.lost(names)
        if "leader" in names:
            self._lead_lost.set()

    # -- the process -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled: the writer commits what is pending before the sessions go."""
        await self.db.open()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.leases.keep(), name="leases")
                tg.create_task(self.sessions.run(), name="ingest-sessions")
                tg.create_task(self.gateway.run(), name="batch-writer")
                tg.create_task(self._inventory_watch(), name="inventory-watch")
                tg.create_task(self._heartbeat(), name="ingest-heartbeat")
                tg.create_task(self.hearing.run(), name="ingest-watch")
                tg.create_task(self._takeovers(), name="takeovers")
                tg.create_task(follow_forever(self.engine, self.db, states=False), name="schedules")
                tg.create_task(self.alerts.run(), name="fault-engine")
                tg.create_task(self._lead(), name="lead")
        finally:
            await self.store.close()
            await self.db.close()

    async def _lead(self) -> None:
        """Hold the `leader` lease when nobody else does, and while held run what runs once city-wide."""
        while True:
            if not await self.leases.try_take("leader"):
                await asyncio.sleep(_LEAD_TRY_S)
                continue
            self._lead_lost.clear()
            self.leading = True
            logger.info(
                "gateway %s leads: outbound link, command engine, sampler, dispatcher, escalation, upkeep",
                self.instance,
            )
            try:
                async with asyncio.TaskGroup() as tg:
                    work = [
                        tg.create_task(self.command_link.run(), name="command-link"),
                        tg.create_task(self.commands.run(fresh=True), name="command-engine"),
                        tg.create_task(self.sampler.run(), name="lighting-rate-sampler"),
                        tg.create_task(self.publisher.run(), name="ops-publisher"),
                        tg.create_task(self.alerts.escalate_forever(), name="escalation"),
                        tg.create_task(self.upkeep.run(), name="telemetry-upkeep"),
                        *([tg.create_task(self.dispatcher.run(), name="dispatcher")] if self.dispatcher else []),
                        tg.create_task(
                            follow_forever(
                                self.engine, self.db, states=True, skip=self._judges, fetched=self.peers.fetched
                            ),
                            name="city-follower",
                        ),
                        tg.create_task(self.peers.watch(self.db), name="peer-watermarks"),
                    ]
                    await self._lead_lost.wait()
                    logger.error(
                        "gateway %s lost the lead with its database connection; stopping that work", self.instance
                    )
                    for task in work:
                        task.cancel()
            finally:
                self.leading = False
                await self.command_link.close()

    async def _heartbeat(self) -> None:
        await beat_forever(self.db, self._heartbeat_row, wake=self._beat_now)

    def _heartbeat_row(self) -> Heartbeat:
        g, s = self.gateway, self.gateway.stats
        return Heartbeat(
            self.instance,
            round(g.oldest_uncommitted_s(), 3),
            g.failing_batches,
            s.received,
            s.lamps_written + s.cabinets_written,
            s.rejected,
            self.sessions.held(),
            g.ingested_through_ms(),
        )

    async def _inventory_watch(self) -> None:
        """Reload the device registry when the inventory changes, so newly seeded devices are not quarantined;
        the engines are rebuilt to match (read in a worker thread, swapped in on this loop)."""
        every = self.inventory_check_s
        await supervise(self._inventory_check, what="inventory check", every_s=every, first_s=every)

    async def _inventory_check(self) -> None:
        found = await self.db.run(self._reload_registry)
        if found is not None:
            registry, districts, fresh, saved = found
            self.engine.adopt(fresh)
            self.alerts.restart(saved)
            self.gateway.registry = registry
            self.sessions.set_districts(districts)
            logger.info(
                "inventory changed: registry now %d lamps and %d cabinets", len(registry.lamps), len(registry.cabinets)
            )

    def _reload_registry(self, conn: Connection) -> tuple[Registry, list[str], LightingEngine, SavedState] | None:
        version = inventory_version(conn)
        if version == self._inventory:
            return None
        self._inventory = version
        return load_registry(conn), district_codes(conn), LightingEngine.load(conn), self.alerts.read_state(conn)

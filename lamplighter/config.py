"""One settings object, read at the entry point only: environment variables over an optional TOML file."""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from alerts.tickets import Deadlines
from energy.tariff import DEFAULT_CO2_KG_PER_KWH, Tariff, TariffError
from fieldnet.broker import Broker, BrokerError
from kernel.database import shown
from kernel.errors import Problem

__all__ = ["ConfigError", "LamplighterError", "Settings"]


class LamplighterError(Problem):
    """The base of the composition root's errors: settings, private services, the command line's own input."""


class ConfigError(LamplighterError):
    """A setting has a value lamplighter cannot use; the message names the setting and the value."""


@dataclass(frozen=True)
class Settings:
    # None: start (demo, tests, bench) or expect (other commands) the private services under run_dir.
    database_url: str | None = None
    # The schema owner's login, for migrations and inventory loads; the database_url's role then only reads and
    # writes rows. Unset: migrations use database_url (which then must own the schema).
    database_owner_url: str | None = None
    mqtt_url: str | None = None
    # The backend's own broker accounts (`lamplighter devices provision` writes it) and TLS to the broker. With
    # the private broker both default to its files under run_dir; a user:password in LAMPLIGHTER_MQTT_URL is
    # used for every account instead.
    mqtt_accounts: Path | None = None
    mqtt_ca_file: str = ""  # mqtts:// with the system's CAs when empty
    mqtt_cert_file: str = ""  # a client certificate and its key, for brokers that ask for one
    mqtt_key_file: str = ""
    device_key_file: Path | None = None  # the key every account's secret is derived from (provisioning only)
    run_dir: Path = Path(".run")
    # The private services' ports (the demo's and `lamplighter services`'); the tests' are 10 above them, the
    # benchmarks' 20 above: two checkouts run side by side with different ones.
    private_pg_port: int = 25432
    private_mqtt_port: int = 18830  # its TLS listener is the next port
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    metrics_port: int = 9108
    retention_days: int = 90
    # Lamp readings older than this many days are packed into the compact history (one row per lamp and day, about
    # 7 bytes a reading) by the leading gateway, hourly; 0 keeps every reading raw until retention drops it.
    compact_after_days: int = 2
    # The deployment's MQTT client-id prefix, shared by its gateways: sessions that outlive a process are named
    # by their role under it (`…-ingest-{district}`, `…-commands`, `…-ops`) and leased to one process at a time.
    gateway_client_id: str = "lamplighter-gateway"
    gateway_instance: str = ""  # this process's own name (heartbeat, its own clients); "": prefix-host-pid
    # The gateway's CPU priority (nice, 0-19): its queue in the broker absorbs a wait that the control room's calls
    # should not see when they share a machine. Only lowered: a process already nicer keeps its own.
    gateway_nice: int = 10
    batch_max: int = 10_000
    flush_interval_s: float = 0.25
    receive_maximum: int = 65_535
    # Health says ingest is stalled when a received message has waited this long without being committed.
    ingest_stall_s: float = 15.0
    timezone: str = "Asia/Shanghai"  # the city's: nights, inspection time and reports are local
    inspection_time: str = "22:00"  # the nightly report's inspection instant (local HH:MM)
    fine_sample_every_min: int = 10  # roads and cabinets are sampled this often; city and districts every minute
    # Ticket deadlines (docs/domain.md defaults): P1 acknowledged within minutes and made safe within hours; repair
    # within hours for P2 and P3; 0 means no deadline.
    p1_acknowledge_min: float = 15.0
    p1_repair_h: float = 1.0
    p2_repair_h: float = 24.0
    p3_repair_h: float = 48.0
    p4_repair_h: float = 0.0
    command_pace: float = 2000.0  # device commands per second, city-wide, over every running campaign
    command_ack_timeout_s: float = 10.0  # a command not acknowledged in this time is sent again (same id) …
    command_retries: int = 2  # … this many times, then the lamp is `expired`
    command_reconnect_grace_s: float = 30.0  # after a broker outage, resends this long do not use up a retry
    delivery_max_attempts: int = 50  # a notification still failing after this many attempts is dead-lettered …
    delivery_max_age_h: float = 24.0  # … or this long after its event
    delivery_allow_private: bool = False  # webhooks may go to loopback, private and link-local addresses
    quarantine_days: int = 30  # rejected messages kept this long …
    quarantine_rows: int = 1_000_000  # … and at most this many (the newest)
    qos0_queue_max: int = 100_000  # QoS 0 messages waiting while ingest is held up; past it the oldest go
    ack_queue_max: int = 200_000  # command acknowledgements waiting for the engine; past it the oldest go
    api_max_body_bytes: int = 1024 * 1024  # a larger request body is refused with 413 …
    api_max_small_body_bytes: int = 16 * 1024  # … and for the login and citizens' reports, this
    api_max_streams: int = 1000  # live ticket streams one API process serves; more are refused with 503
    api_docs: bool = True  # /docs (signed-in users) and /openapi.json; false hides both
    api_secure_cookies: bool = False  # the API is served over https (a proxy terminating TLS): Secure cookies
    dispatch: bool = True  # deliver ticket notifications from the gateway's process (or run `lamplighter dispatch`)
    # Energy figures: the electricity price per kWh, flat ("0.60") or by local time of use
    # ("08:00-22:00=0.82;22:00-08:00=0.35"), its currency, and the grid's CO2 emission factor (kg per kWh).
    tariff: str = "0.60"
    tariff_currency: str = "CNY"
    co2_kg_per_kwh: float = DEFAULT_CO2_KG_PER_KWH

    @property
    def deadlines(self) -> Deadlines:
        def hours(h: float) -> dt.timedelta | None:
            return dt.timedelta(hours=h) if h > 0 else None

        return Deadlines(
            acknowledge={
                "P1": dt.timedelta(minutes=self.p1_acknowledge_min) if self.p1_acknowledge_min > 0 else None,
                "P2": None,
                "P3": None,
                "P4": None,
            },
            repair={
                "P1": hours(self.p1_repair_h),
                "P2": hours(self.p2_repair_h),
                "P3": hours(self.p3_repair_h),
                "P4": hours(self.p4_repair_h),
            },
        )

    @property
    def inspection_at(self) -> dt.time:
        try:
            return dt.time.fromisoformat(self.inspection_time)
        except ValueError:
            raise ConfigError(f"inspection_time must be a local time HH:MM, got {self.inspection_time!r}") from None

    @classmethod
    def load(cls, env: dict[str, str] | None = None) -> Settings:
        """`LAMPLIGHTER_<NAME>` variables win over `[lamplighter]` in `LAMPLIGHTER_CONFIG` (or ./lamplighter.toml)."""
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        path = Path(env.get("LAMPLIGHTER_CONFIG", "lamplighter.toml"))
        if path.exists():
            try:
                values.update(tomllib.loads(path.read_text()).get("lamplighter", {}))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config file {path}: {exc}") from exc
        known = {f.name: f for f in fields(cls)}
        unknown = set(values) - set(known)
        if unknown:
            raise ConfigError(f"config file {path}: unknown settings {sorted(unknown)}; known: {sorted(known)}")
        for name in known:
            key = f"LAMPLIGHTER_{name.upper()}"
            if env.get(key):
                values[name] = env[key]
        out: dict[str, Any] = {}
        for name, value in values.items():
            kind = known[name].type
            try:
                if kind in ("int", int):
                    out[name] = int(value)
                elif kind in ("float", float):
                    out[name] = float(value)
                elif kind in ("Path", Path, "Path | None"):
                    out[name] = Path(value)
                elif kind in ("bool", bool):
                    out[name] = _boolean(value)
                else:
                    out[name] = value
            except ValueError as exc:
                raise ConfigError(f"setting {name} (LAMPLIGHTER_{name.upper()}): {value!r} is not a {kind}") from exc
        s = cls(**out)
        s.validate()
        return s

    def validate(self) -> None:
        self.inspection_at  # noqa: B018  # raises ConfigError on a bad inspection time
        if self.mqtt_url is not None:
            try:
                self.broker(self.mqtt_url)
            except BrokerError as exc:
                raise ConfigError(f"LAMPLIGHTER_MQTT_URL: {exc.message}") from None
        for name, url in (("DATABASE_URL", self.database_url), ("DATABASE_OWNER_URL", self.database_owner_url)):
            if url is not None and not url.startswith(("postgresql://", "postgres://")):
                raise ConfigError(f"LAMPLIGHTER_{name} must be a postgresql:// URL, got {shown(url)!r}")
        if not 1 <= self.retention_days <= 3650:
            raise ConfigError(f"retention_days must be 1..3650, got {self.retention_days}")
        if not 0 <= self.compact_after_days < self.retention_days:
            raise ConfigError(
                f"compact_after_days must be 0 (never) or less than retention_days ({self.retention_days}), got "
                f"{self.compact_after_days}"
            )
        if not 0 <= self.gateway_nice <= 19:
            raise ConfigError(f"gateway_nice must be 0..19 (0: the default priority), got {self.gateway_nice}")
        if not 1 <= self.receive_maximum <= 65535:
            raise ConfigError(f"receive_maximum must be 1..65535 (an MQTT 5 limit), got {self.receive_maximum}")
        try:
            Tariff.parse(self.tariff)
        except TariffError as exc:
            raise ConfigError(f"tariff (LAMPLIGHTER_TARIFF): {exc.message}") from None
        if not 0 <= self.co2_kg_per_kwh <= 5:
            raise ConfigError(f"co2_kg_per_kwh must be 0..5 kg of CO2 per kWh, got {self.co2_kg_per_kwh}")

    def broker(self, url: str) -> Broker:
        """The broker at `url` with this deployment's TLS files."""
        return Broker.parse(
            url,
            ca_file=self.mqtt_ca_file or None,
            cert_file=self.mqtt_cert_file or None,
            key_file=self.mqtt_key_file or None,
        )


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")

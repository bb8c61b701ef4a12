"""Mosquitto's password file, ACL and the services' credentials file, made from the inventory.

`provision(conn, key, directory)` reads the field devices from the inventory (every single-lamp controller, every
cabinet with a concentrator, and which lamps each concentrator speaks for), the crews, and the generations of
rotated accounts, and writes into `directory`:
- `passwd`: one `$7$` line per device, crew and service (Mosquitto's `password_file`);
- `acl`: the per-username patterns, each service's topics (Mosquitto's `acl_file`), and each concentrator's lamps
  unless the broker runs lamplighter's plugin (`fieldnet/plugin/concentrators.c`), which reads them from
- `concentrators`: one `{lamp stem} {concentrator}` line per lamp behind a concentrator;
- `accounts.toml`: the services' own usernames and secrets, for the backend's processes (`Settings.mqtt_accounts`).
Each file is replaced whole (written beside it, then renamed), so a broker reloading at any moment reads either
the old or the new one. Lines of accounts whose generation did not change are kept from the previous
`passwd`, so provisioning again after an inventory change hashes only the new and rotated accounts.

The running broker takes the new files on SIGHUP (`reload`) and keeps its connections; a device removed from the
inventory is refused at its next connect.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from fieldnet.accounts import (
    DEVICE_PATTERNS,
    SERVICES,
    Account,
    DeviceKey,
    cabinet_user,
    crew_user,
    lamp_user,
)
from fieldnet.broker import Login
from fieldnet.errors import FieldnetError
from inventory.queries import controllers, has_device
from kernel.database import empty_tables
from kernel.files import atomic_write, our_pid
from protocol.topics import ROOT

__all__ = [
    "Inventory",
    "Provisioned",
    "forget_inventory",
    "generations",
    "known",
    "load_accounts",
    "provision",
    "reload",
    "rotate",
    "uses_plugin",
]

logger = logging.getLogger(__name__)

PASSWD, ACL, ACCOUNTS, CONCENTRATORS = "passwd", "acl", "accounts.toml", "concentrators"
# In the broker's config beside the files when it loads the plugin (lamplighter.services writes it so).
PLUGIN_OPTION = "plugin_opt_concentrators"
_PARALLEL_FROM = 20_000  # hash in worker processes past this many new lines


@dataclass
class Inventory:
    """What provisioning needs of the inventory: device usernames, each concentrator's lamps (their topic stems),
    crews' usernames and the generations of rotated accounts. Empty: the services' accounts only."""

    devices: list[str] = field(default_factory=list)
    concentrators: dict[str, list[str]] = field(default_factory=dict)
    crews: list[str] = field(default_factory=list)
    generations: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_db(cls, conn: psycopg.Connection, crews: Sequence[str] = ()) -> Inventory:
        """The devices as the inventory has them, the accounts' generations, and the crews `crews` (their ids: the
        crews are the fault room's, which the caller asks)."""
        devices, concentrators = _devices(conn)
        return cls(devices, concentrators, [crew_user(c) for c in sorted(crews)], generations(conn))


@dataclass(frozen=True)
class Provisioned:
    devices: int
    crews: int
    services: int
    hashed: int  # lines computed this time (the others were kept)
    acl_lines: int
    seconds: float
    directory: Path


def _devices(conn: psycopg.Connection) -> tuple[list[str], dict[str, list[str]]]:
    """Usernames of every device, and each concentrator's lamps (topic stems)."""
    single, concentrators, behind = controllers(conn)
    users = [lamp_user(d, i) for d, i in single]
    lines: dict[str, list[str]] = {}
    for d, c in concentrators:
        users.append(cabinet_user(d, c))
        lines[cabinet_user(d, c)] = []
    for cd, c, ld, lamp in behind:
        lines[cabinet_user(cd, c)].append(lamp_user(ld, lamp))
    return users, lines


def _old_lines(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if path.exists():
        with path.open() as f:
            for line in f:
                user, sep, _ = line.partition(":")
                if sep:
                    out[user] = line.rstrip("\n")
    return out


def _hash_chunk(args: tuple[DeviceKey, list[tuple[str, int]]]) -> list[str]:
    key, accounts = args
    return [key.password_line(Account(u, g)) for u, g in accounts]


def _chunks(items: list[tuple[str, int]], n: int) -> Iterator[list[tuple[str, int]]]:
    size = max(1, -(-len(items) // n))
    for i in range(0, len(items), size):
        yield items[i : i + size]


def uses_plugin(directory: Path) -> bool:
    """Whether the broker configured in `directory` (its `mosquitto.conf`) loads the concentrators plugin."""
    conf = directory / "mosquitto.conf"
    return conf.exists() and PLUGIN_OPTION in conf.read_text()


def provision(key: DeviceKey, directory: Path, inventory: Inventory, *, plugin: bool | None = None) -> Provisioned:
    """Write the broker's files for `inventory` (see the module's doc). `plugin`: the broker takes concentrators'
    lamps from the plugin, not the ACL (None: as the broker configured in `directory` does)."""
    if plugin is None:
        plugin = uses_plugin(directory)
    started = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    devices, concentrator_lines, crews, gens = (
        inventory.devices,
        inventory.concentrators,
        inventory.crews,
        inventory.generations,
    )
    wanted = [(u, gens.get(u, 0)) for u in (*SERVICES, *crews, *devices)]
    old = _old_lines(directory / PASSWD)

    lines: dict[str, str] = {}
    todo: list[tuple[str, int]] = []
    for user, gen in wanted:
        line = old.get(user)
        # An unchanged account (same key, same generation) has the same salt: its line can stay.
        if line is not None and f"${key.salt_field(Account(user, gen))}$" in line:
            lines[user] = line
        else:
            todo.append((user, gen))
    if len(todo) >= _PARALLEL_FROM and (os.cpu_count() or 1) > 1:
        workers = min(os.cpu_count() or 1, 8)
        chunks = list(_chunks(todo, workers * 4))
        with ProcessPoolExecutor(workers) as pool:
            for chunk, done in zip(chunks, pool.map(_hash_chunk, [(key, c) for c in chunks]), strict=True):
                lines.update((u, line) for (u, _), line in zip(chunk, done, strict=True))
    else:
        lines.update((u, key.password_line(Account(u, g))) for u, g in todo)

    _replace(directory / PASSWD, (lines[u] for u, _ in wanted))
    acl_lines = _replace(directory / ACL, _acl({} if plugin else concentrator_lines))
    _replace(directory / CONCENTRATORS, _concentrators(concentrator_lines))
    _replace(directory / ACCOUNTS, _accounts_toml(key, gens), mode=0o600)
    out = Provisioned(
        devices=len(devices),
        crews=len(crews),
        services=len(SERVICES),
        hashed=len(todo),
        acl_lines=acl_lines,
        seconds=time.monotonic() - started,
        directory=directory,
    )
    logger.info(
        "provisioned %d devices, %d crews and %d services in %s (%d hashed, %d ACL lines) in %.1f s",
        out.devices,
        out.crews,
        out.services,
        directory,
        out.hashed,
        out.acl_lines,
        out.seconds,
    )
    return out


def _acl(concentrators: dict[str, list[str]]) -> Iterator[str]:
    yield "# Made by `lamplighter devices provision`; edits are overwritten."
    yield "# Every device and crew: its own topics only (its username is its topic stem)."
    yield from DEVICE_PATTERNS
    for s in SERVICES.values():
        yield ""
        yield f"# {s.purpose}"
        yield f"user {s.username}"
        yield from s.acl
    for user, stems in concentrators.items():
        if stems:
            yield ""
            yield f"user {user}"
            for stem in stems:
                yield from (
                    f"topic write {ROOT}/{stem}/state",
                    f"topic write {ROOT}/{stem}/ack",
                    f"topic read {ROOT}/{stem}/cmd",
                )


def _concentrators(concentrators: dict[str, list[str]]) -> Iterator[str]:
    yield "# Made by `lamplighter devices provision`: {lamp stem} {the concentrator speaking for it}."
    for user, stems in concentrators.items():
        for stem in stems:
            yield f"{stem} {user}"


def _accounts_toml(key: DeviceKey, gens: dict[str, int]) -> Iterator[str]:
    yield "# The backend's own broker accounts (made by `lamplighter devices provision`). Keep this file private."
    for user in SERVICES:
        yield ""
        yield f'["{user}"]'
        yield f'password = "{key.secret(Account(user, gens.get(user, 0)))}"'


def _replace(path: Path, lines: Iterable[str], *, mode: int = 0o640) -> int:
    body = [line + "\n" for line in lines]
    atomic_write(path, "".join(body), mode=mode)
    return len(body)


def load_accounts(path: Path) -> dict[str, Login]:
    """The services' logins from an `accounts.toml`."""
    import tomllib

    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FieldnetError(
            f"no broker accounts file at {path}: run `lamplighter devices provision`", "mqtt_accounts"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise FieldnetError(f"broker accounts file {path}: {exc}", "mqtt_accounts") from None
    return {user: Login(user, str(v.get("password", ""))) for user, v in data.items() if isinstance(v, dict)}


def generations(conn: psycopg.Connection) -> dict[str, int]:
    """The generation of every rotated account (the others are at 0)."""
    return dict(conn.execute("SELECT username, generation FROM device_credentials").fetchall())


def known(conn: psycopg.Connection, username: str, crews: Sequence[str] = ()) -> bool:
    """Whether `username` is an account provisioning makes for this inventory and the crews `crews` (ids)."""
    if username in SERVICES:
        return True
    kind, _, rest = username.partition("/")
    if kind == "crews":
        return rest in crews
    what, _, device = rest.partition("/")
    return has_device(conn, what, kind, device)


def rotate(conn: psycopg.Connection, username: str, crews: Sequence[str] = ()) -> int:
    """A new secret for one account: its generation goes up (provision again to put it in the broker)."""
    if not known(conn, username, crews):
        raise FieldnetError(
            f"no account {username!r}: devices are {{district}}/lamp/{{id}} (single-lamp controllers) or "
            f"{{district}}/cabinet/{{id}} (concentrators), crews crews/{{id}}, services {sorted(SERVICES)}",
            "username",
            kind="not_found",
        )
    row = conn.execute(
        """INSERT INTO device_credentials (username, generation, rotated_at) VALUES (%s, 1, now())
           ON CONFLICT (username) DO UPDATE SET generation = device_credentials.generation + 1, rotated_at = now()
           RETURNING generation""",
        (username,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def reload(pid_file: Path) -> int:
    """Have the Mosquitto whose pid is in `pid_file` re-read its password file and ACL; returns its pid."""
    pid = our_pid(pid_file, "mosquitto")
    if pid is None:
        raise FieldnetError(f"no running mosquitto has the pid in {pid_file}: nothing signalled", "broker")
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise FieldnetError(f"cannot signal the broker from {pid_file}: {exc}", "broker") from None
    return pid


def forget_inventory(conn: psycopg.Connection) -> dict[str, int]:
    """Forget every rotated device account: a replaced inventory's devices start at generation 0."""
    return empty_tables(conn, ("device_credentials",))

"""`lamplighter devices`: broker accounts for the field devices, crews and services, made from the inventory."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from alerts.crews import crew_ids
from fieldnet.accounts import SERVICES, Account
from fieldnet.broker import Login
from fieldnet.provision import PASSWD, Inventory, generations, known, provision, reload, rotate
from kernel.database import connect
from lamplighter.config import LamplighterError
from lamplighter.runtime import Endpoints, provision_private

__all__ = ["add_devices_parser", "device_logins", "devices_command", "provision_private"]


def add_devices_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("devices", help="broker accounts of field devices, crews and services (password file, ACL)")
    dsub = p.add_subparsers(dest="devices", required=True)
    d = dsub.add_parser(
        "provision", help="write the broker's password file and ACL from the inventory; the private broker reloads"
    )
    d.add_argument(
        "--out", type=Path, help="directory for passwd, acl and accounts.toml (default: the private broker's)"
    )
    d.add_argument(
        "--plugin",
        action="store_true",
        help="the broker loads lamplighter's concentrators plugin: concentrators' lamps go to the `concentrators` "
        "file, not the ACL (the private broker: detected)",
    )
    d = dsub.add_parser("secret", help="print an account's secret, for installing it in the device")
    d.add_argument("username", help="{district}/lamp/{id}, {district}/cabinet/{id}, crews/{id} or a service")
    d = dsub.add_parser("rotate", help="give an account a new secret (and provision the private broker again)")
    d.add_argument("username")


def _directory(ep: Endpoints, out: Path | None) -> Path:
    if out is not None:
        return out
    if ep.accounts is None:
        raise LamplighterError("the broker is not the private one: say where the broker's files go with --out DIR")
    return ep.accounts.parent


def device_logins(ep: Endpoints) -> Callable[[str], Login]:
    """Each device's login as its installer set it up (the simulator's devices use these)."""
    key = ep.key()
    with connect(ep.database_url) as conn:
        gens = generations(conn)
    return lambda username: key.login(Account(username, gens.get(username, 0)))


def devices_command(ep: Endpoints, args: argparse.Namespace) -> int:
    if args.devices == "provision":
        directory = _directory(ep, args.out)
        made = ep.device_key is not None and not ep.device_key.exists()
        key = ep.key(create=True)
        with connect(ep.database_url) as conn:
            done = provision(
                key, directory, Inventory.from_db(conn, crew_ids(conn)), plugin=True if args.plugin else None
            )
        if made:
            print(f"made a new device key at {ep.device_key}: keep it private and backed up")
        print(
            f"provisioned {done.devices:,} devices, {done.crews} crews and {done.services} services into "
            f"{directory} in {done.seconds:.1f} s ({done.hashed:,} passwords hashed, {done.acl_lines:,} ACL lines)"
        )
        _reload(directory)
        return 0
    key = ep.key()
    with connect(ep.database_url, autocommit=True) as conn:
        if args.devices == "secret":
            if not known(conn, args.username, crew_ids(conn)):
                raise LamplighterError(f"no account {args.username!r} in this inventory (see `devices secret --help`)")
            print(key.secret(Account(args.username, generations(conn).get(args.username, 0))))
            return 0
        generation = rotate(conn, args.username, crew_ids(conn))
        print(key.secret(Account(args.username, generation)))
        if ep.accounts is not None and args.username in SERVICES:
            print("(a service's new secret is in accounts.toml after provisioning; restart the processes using it)")
        if ep.accounts is not None and (ep.accounts.parent / PASSWD).exists():
            done = provision(key, ep.accounts.parent, Inventory.from_db(conn, crew_ids(conn)))
            print(f"provisioned {done.directory} again ({done.hashed} passwords hashed)")
            _reload(ep.accounts.parent)
        else:
            print("run `lamplighter devices provision` and reload the broker to put it in force")
    return 0


def _reload(directory: Path) -> None:
    pid_file = directory / "pid"
    if pid_file.exists():
        print(f"the broker (pid {reload(pid_file)}) reloads its password file and ACL; connections stay")
    else:
        print("reload the broker to put them in force (Mosquitto: SIGHUP, or `systemctl reload mosquitto`)")

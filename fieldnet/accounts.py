"""Who may do what on the broker: the accounts of field devices, crews and the backend's own services.

Usernames name what an account stands for, so one ACL pattern covers every device: a single-lamp controller is
`{district}/lamp/{lamp}`, a cabinet's concentrator `{district}/cabinet/{cabinet}`, a crew `crews/{crew}`. With
Mosquitto's `%u` patterns a device may then publish only `sl/{its username}/state|status|ack` and read only
`sl/{its username}/cmd`, and a crew read only `sl/crews/{crew}/tickets`; a concentrator is also allowed its
lamps' topics, one ACL line each. The backend's services have fixed names (`SERVICES`) and only their topics.

Every secret is derived from the deployment's key (32 random bytes in a file only the operator reads) with
HMAC-SHA256 over the username and the account's generation: nothing secret is stored per device, a device's
secret can be printed again for installation, and rotating it means raising its generation (kept in the
database) and provisioning again. The broker's password file holds only PBKDF2-SHA512 hashes (Mosquitto's `$7$`
format) whose salt is derived the same way, so an unchanged account keeps its line and re-provisioning a city
hashes only what changed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from fieldnet.broker import Login
from fieldnet.errors import FieldnetError
from protocol.topics import ACK_FILTERS, CMD_FILTERS, REPORT_FILTERS

__all__ = [
    "DEVICE_PATTERNS",
    "SERVICES",
    "Account",
    "DeviceKey",
    "Service",
    "cabinet_user",
    "crew_user",
    "lamp_user",
    "mosquitto_hash",
]

# Mosquitto's own default for `mosquitto_passwd` (PBKDF2-SHA512). Secrets here are 144 random bits, so the
# hash's cost is not what protects them; a low count keeps connects cheap for a million devices.
PBKDF2_ITERATIONS = 101
_SALT_BYTES = 12
_SECRET_CHARS = 24  # base64url: 144 bits

_DISTRICT = re.compile(r"^[a-z][a-z0-9]{1,7}$")
_DEVICE = re.compile(r"^[A-Z0-9][A-Z0-9-]{3,31}$")
_CREW = re.compile(r"^[a-z0-9][a-z0-9-]{1,31}$")


@dataclass(frozen=True)
class Service:
    """One of the backend's own accounts and the ACL lines it gets."""

    username: str
    purpose: str
    acl: tuple[str, ...]


_DEVICE_STATE = REPORT_FILTERS
_DEVICE_CMD = CMD_FILTERS
_DEVICE_ACK = ACK_FILTERS
SIM_FAULTS_TOPIC = "lamplighter/sim/faults"  # the simulator's fault-injection topic (simulator.commands)

SERVICES: dict[str, Service] = {
    s.username: s
    for s in (
        Service(
            "lamplighter-ingest",
            "the gateways' ingest: reads device state and status",
            tuple(f"topic read {t}" for t in _DEVICE_STATE),
        ),
        Service(
            "lamplighter-commands",
            "the leader's outbound link: sends commands, the retained lighting rate and crews' ticket events; "
            "reads command acknowledgements",
            (
                *(f"topic write {t}" for t in _DEVICE_CMD),
                *(f"topic read {t}" for t in _DEVICE_ACK),
                "topic write sl/ops/lighting-rate",
                "topic write sl/crews/+/tickets",
            ),
        ),
        Service("lamplighter-api", "the API's broker health check: connects, touches no topic", ()),
        Service("lamplighter-display", "wall displays: read the retained lighting rate", ("topic read sl/ops/#",)),
        Service(
            "lamplighter-headend",
            "a field head-end (a vendor's management system or an IoT platform bridging many devices; here the "
            "simulator's shared connections): publishes for any device, reads every command",
            (
                *(f"topic write {t}" for t in (*_DEVICE_STATE, *_DEVICE_ACK)),
                *(f"topic read {t}" for t in _DEVICE_CMD),
                f"topic read {SIM_FAULTS_TOPIC}",
            ),
        ),
        Service(
            "lamplighter-simcontrol",
            "demos and tests: injects faults into the simulator",
            (f"topic write {SIM_FAULTS_TOPIC}",),
        ),
    )
}

# Every device, by its username: its own topics only.
DEVICE_PATTERNS = (
    "pattern write sl/%u/state",
    "pattern write sl/%u/status",
    "pattern write sl/%u/ack",
    "pattern read sl/%u/cmd",
    "pattern read sl/%u/tickets",  # a crew's username is crews/{crew}
)


def lamp_user(district: str, lamp: str) -> str:
    _check(district, lamp)
    return f"{district}/lamp/{lamp}"


def cabinet_user(district: str, cabinet: str) -> str:
    _check(district, cabinet)
    return f"{district}/cabinet/{cabinet}"


def crew_user(crew: str) -> str:
    if not _CREW.fullmatch(crew):
        raise FieldnetError(f"crew id {crew!r} cannot name a broker account", "crew")
    return f"crews/{crew}"


def _check(district: str, device: str) -> None:
    # The protocol's identifiers: they contain no `/`, `+`, `#` or `%`, so a username is exactly its topic stem.
    if not _DISTRICT.fullmatch(district):
        raise FieldnetError(f"district code {district!r} cannot name a broker account", "district")
    if not _DEVICE.fullmatch(device):
        raise FieldnetError(f"device id {device!r} cannot name a broker account", "device")


@dataclass(frozen=True)
class Account:
    username: str
    generation: int = 0


class DeviceKey:
    """The deployment's key: every account's secret and the salt of its hash are derived from it."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise FieldnetError("the device key must hold at least 16 bytes")
        self._key = key

    @classmethod
    def load(cls, path: Path, *, create: bool = False) -> DeviceKey:
        """Read the key file (hex); with `create`, make a new key there first if there is none."""
        if not path.exists():
            if not create:
                raise FieldnetError(
                    f"no device key at {path}: run `lamplighter devices provision` to make one", "device_key"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
        try:
            return cls(bytes.fromhex(path.read_text().strip()))
        except ValueError:
            raise FieldnetError(f"the device key file {path} does not hold hex digits", "device_key") from None

    def _mac(self, label: bytes, account: Account) -> bytes:
        msg = label + b"\0" + account.username.encode() + b"\0" + str(account.generation).encode()
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def secret(self, account: Account) -> str:
        return base64.urlsafe_b64encode(self._mac(b"secret", account)).decode()[:_SECRET_CHARS]

    def login(self, account: Account) -> Login:
        return Login(account.username, self.secret(account))

    def salt(self, account: Account) -> bytes:
        return self._mac(b"salt", account)[:_SALT_BYTES]

    def password_line(self, account: Account) -> str:
        """The account's line in Mosquitto's password file."""
        return f"{account.username}:{mosquitto_hash(self.secret(account), self.salt(account))}"

    def salt_field(self, account: Account) -> str:
        """The salt as it appears in the account's password line (to tell an unchanged line without hashing)."""
        return base64.b64encode(self.salt(account)).decode()


def mosquitto_hash(password: str, salt: bytes, iterations: int = PBKDF2_ITERATIONS) -> str:
    """Mosquitto's `$7$` password hash: PBKDF2-HMAC-SHA512, base64 salt and digest."""
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"

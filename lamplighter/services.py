"""Private Mosquitto and PostgreSQL instances under `.run/`, so nothing depends on the machine's shared services.

When the user gives `LAMPLIGHTER_DATABASE_URL` / `LAMPLIGHTER_MQTT_URL`, those are used and nothing is started.
Otherwise `PrivateServices` starts a broker from the system's `mosquitto` binary with the project's config and a
PostgreSQL cluster made with `initdb` (as the `postgres` user when running as root, since PostgreSQL refuses to
run as root), each on its own loopback port, and stops them on exit.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from fieldnet import broker_plugin
from fieldnet.accounts import DeviceKey
from fieldnet.provision import ACCOUNTS, ACL, PASSWD, Inventory, provision
from fieldnet.tls import ensure_ca
from kernel import cluster
from kernel.database import connect, with_database
from kernel.files import atomic_write
from kernel.local import listener, port_open, stop_stale
from lamplighter.config import LamplighterError
from telemetry.schema import enable_timescaledb

__all__ = [
    "APP_ROLE",
    "OWNER_ROLE",
    "PrivateServices",
    "ServiceError",
    "auth_config",
    "create_database",
    "find_postgres_bin",
]

logger = logging.getLogger(__name__)

# The private cluster's roles: the schema's owner (migrations, inventory loads) and the application's (everything
# else); the superuser only makes roles and databases.
OWNER_ROLE = "lamplighter_owner"
APP_ROLE = "lamplighter_app"
_SUPERUSER = "postgres"
_OLD_SUPERUSER = "lamplighter"  # clusters made before the roles were split: trust authentication, this superuser
_HBA = """# lamplighter's private PostgreSQL: every connection proves its password (SCRAM); see postgres.pgpass
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""

# initdb plus the first start take a few seconds on a slow disk; a broker starts in milliseconds.
_PG_START_TIMEOUT_S = 60.0
_MQTT_START_TIMEOUT_S = 10.0


class ServiceError(LamplighterError):
    """A private service could not be started or stopped; the message says what to do."""

    kind = "unavailable"


def _install_hint(binary: str, package: str) -> str:
    return (
        f"{binary!r} not found. Install it (Debian/Ubuntu: `apt-get install -y {package}`; "
        f"`make` does this by itself when run as root on Debian), or point lamplighter at running services "
        f"with LAMPLIGHTER_DATABASE_URL and LAMPLIGHTER_MQTT_URL."
    )


def find_postgres_bin(name: str) -> Path:
    """Locate a PostgreSQL server binary: PATH first, then Debian's versioned directories, newest first."""
    found = shutil.which(name)
    if found:
        return Path(found)
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
        reverse=True,
    )
    if candidates:
        return candidates[0]
    raise ServiceError(_install_hint(name, "postgresql"))


@dataclass
class PrivateServices:
    """A private broker and database cluster rooted at `root` (for example `.run/demo`)."""

    root: Path
    pg_port: int = 25432
    mqtt_port: int = 18830
    tls_port: int = 0  # the broker's TLS listener; 0: the port after mqtt_port
    database: str = "lamplighter"
    _started: list[str] = field(default_factory=list)
    _mqtt_proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        # PostgreSQL resolves relative paths against its data directory: hand it absolute ones.
        self.root = self.root.resolve()
        if not self.tls_port:
            self.tls_port = self.mqtt_port + 1

    @property
    def database_url(self) -> str:
        """The application's login: rows of every table, no DDL, owner of nothing."""
        return self._pg_url(APP_ROLE, self.database)

    @property
    def owner_url(self) -> str:
        """The schema owner's login: migrations and loading an inventory."""
        return self._pg_url(OWNER_ROLE, self.database)

    @property
    def admin_url(self) -> str:
        """The cluster's superuser, on the `postgres` database: roles and databases only."""
        return self._pg_url(self._pg_secrets()[0], "postgres")

    @property
    def pgpass(self) -> Path:
        """The private cluster's passwords (libpq's password file format; only its user can read it)."""
        return self.root / "postgres.pgpass"

    def _pg_url(self, role: str, database: str) -> str:
        return f"postgresql://{role}@127.0.0.1:{self.pg_port}/{database}?passfile={quote(str(self.pgpass))}"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    @property
    def tls_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.tls_port}"

    @property
    def ca_file(self) -> Path:
        """The private CA that signed the broker's TLS certificate (made at its first start)."""
        return self._mqtt_dir / "tls" / "ca.crt"

    @property
    def accounts_file(self) -> Path:
        """The backend's own logins on the private broker (made at its first start, then by provisioning)."""
        return self._mqtt_dir / ACCOUNTS

    @property
    def key_file(self) -> Path:
        """The private deployment's device key (every account's secret is derived from it)."""
        return self._mqtt_dir / "device.key"

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.start_mosquitto()
            self.start_postgres()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if "postgres" in self._started:
            self._stop_postgres()
        if "mosquitto" in self._started:
            self._stop_mosquitto()
        self._started.clear()

    def __enter__(self) -> PrivateServices:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- Mosquitto -------------------------------------------------------------------------------------------

    @property
    def _mqtt_dir(self) -> Path:
        return self.root / "mosquitto"

    def start_mosquitto(self) -> None:
        binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if binary is None:
            raise ServiceError(_install_hint("mosquitto", "mosquitto"))
        d = self._mqtt_dir
        d.mkdir(parents=True, exist_ok=True)
        stop_stale(d / "pid", "mosquitto", str(d / "mosquitto.conf"))
        for port in (self.mqtt_port, self.tls_port):
            if port_open(port):
                raise ServiceError(
                    f"port {port} on 127.0.0.1 is taken by {listener(port)}; the private broker cannot start. "
                    f"Stop that program, choose other private ports (LAMPLIGHTER_PRIVATE_MQTT_PORT), or set "
                    f"LAMPLIGHTER_MQTT_URL to use a broker of yours."
                )
        base = (Path(__file__).resolve().parent / "mosquitto.conf").read_text()
        conf = d / "mosquitto.conf"
        if not (d / PASSWD).exists():
            # The first start: a key, and the services' accounts; devices come with provisioning (`seed` and
            # `lamplighter devices provision` do it for the private broker).
            provision(DeviceKey.load(self.key_file, create=True), d, Inventory())
        ca = ensure_ca(d / "tls")
        server_crt, server_key = d / "tls" / "broker.crt", d / "tls" / "broker.key"
        if not (server_crt.exists() and server_key.exists()):
            ca.issue("broker", server=True, hosts=("127.0.0.1", "localhost"))
        extra = [
            "log_dest stderr",
            f"persistence_location {d}/",
            *auth_config(d),
            f"listener {self.mqtt_port} 127.0.0.1",
            # The same accounts and ACL over TLS (settings below a listener line belong to that listener).
            f"listener {self.tls_port} 127.0.0.1",
            f"cafile {ca.ca_file}",
            f"certfile {server_crt}",
            f"keyfile {server_key}",
            "tls_version tlsv1.2",
        ]
        if os.geteuid() == 0:
            # As root Mosquitto would switch to the `mosquitto` user, who may not write to the project's
            # directory; it stays who it is.
            extra.append("user root")
        conf.write_text(base + "\n" + "\n".join(extra) + "\n")
        log = (d / "mosquitto.log").open("ab")
        proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.close()
        self._mqtt_proc = proc
        (d / "pid").write_text(str(proc.pid))
        deadline = time.monotonic() + _MQTT_START_TIMEOUT_S
        while not port_open(self.mqtt_port):
            if proc.poll() is not None:
                raise ServiceError(f"private mosquitto exited with code {proc.returncode}; see {d / 'mosquitto.log'}")
            if time.monotonic() > deadline:
                proc.kill()
                raise ServiceError(f"private mosquitto did not listen on port {self.mqtt_port} in time")
            time.sleep(0.05)
        self._started.append("mosquitto")
        logger.info("private mosquitto %s listening on 127.0.0.1:%d (TLS: %d)", binary, self.mqtt_port, self.tls_port)

    def restart_mosquitto(self) -> None:
        """Stop the broker (it saves its sessions and queues on the way) and start it again."""
        self._stop_mosquitto()
        if "mosquitto" in self._started:
            self._started.remove("mosquitto")
        self.start_mosquitto()

    def _stop_mosquitto(self) -> None:
        proc, self._mqtt_proc = self._mqtt_proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stop_stale(self._mqtt_dir / "pid", "mosquitto", str(self._mqtt_dir / "mosquitto.conf"))
        logger.info("private mosquitto on port %d stopped", self.mqtt_port)

    # -- PostgreSQL ------------------------------------------------------------------------------------------

    @property
    def _pg_dir(self) -> Path:
        d = self.root / "postgres"
        if os.geteuid() != 0:
            return d
        d.mkdir(parents=True, exist_ok=True)
        shutil.chown(d, "postgres", "postgres")
        reachable = subprocess.run(self._as_pg_user(["test", "-w", str(d)]), capture_output=True, check=False)
        if reachable.returncode == 0:
            return d
        # The checkout sits under a directory the `postgres` user cannot enter (a private temp dir, say):
        # keep the cluster in a per-checkout directory under /tmp instead.
        # Its name is predictable, so another local user could have made it first: it is used only if it is a
        # real directory (no symlink) of the postgres user's that nobody else may enter.
        alt = Path(tempfile.gettempdir()) / f"lamplighter-pg-{hashlib.sha1(str(self.root).encode()).hexdigest()[:12]}"
        with contextlib.suppress(FileExistsError):
            alt.mkdir(mode=0o700)
            shutil.chown(alt, "postgres", "postgres")
        st = os.lstat(alt)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != pwd.getpwnam("postgres").pw_uid or st.st_mode & 0o077:
            raise ServiceError(
                f"{alt} is not a private directory of the postgres user (a symlink, someone else's, or open to "
                f"others), so the private PostgreSQL will not keep its data there: remove it, or put the checkout "
                f"where the postgres user can enter"
            )
        return alt

    def _as_pg_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        try:
            pwd.getpwnam("postgres")
        except KeyError as exc:
            raise ServiceError(
                "running as root, and PostgreSQL refuses to run as root, but there is no `postgres` user to run "
                "it as: install the postgresql package or run lamplighter as an ordinary user"
            ) from exc
        runuser = shutil.which("runuser")
        if runuser:
            return [runuser, "-u", "postgres", "--", *argv]
        return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(argv)]

    def _run(self, argv: list[str], what: str) -> None:
        res = subprocess.run(self._as_pg_user(argv), capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise ServiceError(f"{what} failed (exit {res.returncode}): {res.stderr.strip() or res.stdout.strip()}")

    def _pg_secrets(self) -> tuple[str, dict[str, str]]:
        """(the superuser's name, every role's password), made on first use and kept in `pgpass`."""
        lines = self.pgpass.read_text().splitlines() if self.pgpass.exists() else []
        superuser = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("# superuser:")), "")
        passwords = {
            f[3]: f[4] for f in (ln.split(":", 4) for ln in lines if ln and not ln.startswith("#")) if len(f) == 5
        }
        if not superuser:
            old = (self._pg_dir / "data" / "PG_VERSION").exists()
            superuser = _OLD_SUPERUSER if old else _SUPERUSER
        wanted = (superuser, OWNER_ROLE, APP_ROLE)
        if any(role not in passwords for role in wanted):
            passwords = {role: passwords.get(role) or secrets.token_urlsafe(24) for role in wanted}
            self.root.mkdir(parents=True, exist_ok=True)
            body = [f"# superuser:{superuser}"] + [f"127.0.0.1:*:*:{role}:{passwords[role]}" for role in wanted]
            atomic_write(self.pgpass, "\n".join(body) + "\n", mode=0o600)
        return superuser, passwords

    def _write_as_pg(self, path: Path, text: str) -> None:
        atomic_write(path, text, mode=0o600)
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")

    def start_postgres(self) -> None:
        initdb, pg_ctl = find_postgres_bin("initdb"), find_postgres_bin("pg_ctl")
        d = self._pg_dir
        data = d / "data"
        d.mkdir(parents=True, exist_ok=True)
        logger.debug("private PostgreSQL data in %s", data)
        if (data / "postmaster.pid").exists():
            # Left behind by a run that was killed: stop it (or clear the stale lock) before starting again.
            subprocess.run(
                self._as_pg_user([str(pg_ctl), "-D", str(data), "stop", "-m", "fast", "-w"]),
                capture_output=True,
                check=False,
            )
        if port_open(self.pg_port):
            raise ServiceError(
                f"port {self.pg_port} on 127.0.0.1 is taken by {listener(self.pg_port)}; the private PostgreSQL "
                f"cannot start. Stop that program, choose other private ports (LAMPLIGHTER_PRIVATE_PG_PORT), or set "
                f"LAMPLIGHTER_DATABASE_URL to use a database of yours."
            )
        hba = data / "pg_hba.conf"
        if not self.pgpass.exists() and hba.exists() and hba.read_text() == _HBA:
            raise ServiceError(
                f"the private PostgreSQL in {data} asks for passwords, and their file {self.pgpass} is gone: "
                f"remove {data} to start with a new, empty cluster"
            )
        superuser, passwords = self._pg_secrets()
        if not (data / "PG_VERSION").exists():
            # Made aside and moved in whole: a start interrupted here (Ctrl-C, a closed terminal) leaves no
            # half-made cluster to be taken for a real one next time.
            logger.info("creating a private PostgreSQL cluster in %s", data)
            partial = d / "data.partial"
            shutil.rmtree(partial, ignore_errors=True)
            pwfile = d / "initdb.pw"
            self._write_as_pg(pwfile, passwords[superuser] + "\n")
            try:
                self._run(
                    [str(initdb), "-D", str(partial), "-U", superuser, "--auth=scram-sha-256",
                     f"--pwfile={pwfile}", "-E", "UTF8", "--no-locale"],
                    "initdb",
                )  # fmt: skip
            finally:
                pwfile.unlink(missing_ok=True)
            self._write_as_pg(partial / "pg_hba.conf", _HBA)
            if data.exists():  # empty, or what an older lamplighter's interrupted initdb left
                shutil.rmtree(data)
            partial.rename(data)
        trusting = hba.read_text() != _HBA
        opts = " ".join(
            [
                f"-p {self.pg_port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={d}",
                # Ingest writes large COPY batches; a bigger WAL budget keeps checkpoints from firing every few
                # seconds under load.
                "-c max_wal_size=4GB",
                "-c shared_buffers=512MB",
                "-c max_connections=200",
                # TimescaleDB where its binaries are installed: it must be loaded at start to be created.
                *(["-c shared_preload_libraries=timescaledb"] if _timescaledb_installed(pg_ctl) else []),
            ]
        )
        self._run(
            [
                str(pg_ctl),
                "-D",
                str(data),
                "-l",
                str(d / "postgres.log"),
                "-o",
                opts,
                "-w",
                "-t",
                str(int(_PG_START_TIMEOUT_S)),
                "start",
            ],
            "pg_ctl start",
        )
        self._started.append("postgres")
        logger.info("private PostgreSQL listening on 127.0.0.1:%d (data %s)", self.pg_port, data)
        if trusting:
            self._close_trust(hba, superuser, passwords[superuser])
        self._ensure_roles(passwords)
        self._ensure_database()

    def _close_trust(self, hba: Path, superuser: str, password: str) -> None:
        """A cluster made by an older lamplighter let anyone on loopback in as its superuser: give the superuser
        its password, then require passwords of everyone."""
        cluster.set_password(self.admin_url, superuser, password)
        self._write_as_pg(hba, _HBA)
        cluster.reload_config(self.admin_url)
        logger.warning("private PostgreSQL under %s: trust authentication replaced by passwords (SCRAM)", self.root)

    def _ensure_roles(self, passwords: dict[str, str]) -> None:
        for role in (OWNER_ROLE, APP_ROLE):
            cluster.ensure_login_role(self.admin_url, role, passwords[role])

    def _ensure_database(self) -> None:
        owner = cluster.database_owner(self.admin_url, self.database)
        if owner is None:
            create_database(self.admin_url, self.database)
            return
        if owner == OWNER_ROLE:
            return
        cluster.set_database_owner(self.admin_url, self.database, OWNER_ROLE)
        cluster.adopt_schema(with_database(self.admin_url, self.database), OWNER_ROLE)

    def _stop_postgres(self) -> None:
        pg_ctl = find_postgres_bin("pg_ctl")
        subprocess.run(
            self._as_pg_user([str(pg_ctl), "-D", str(self._pg_dir / "data"), "stop", "-m", "fast", "-w"]),
            capture_output=True,
            check=False,
        )
        logger.info("private PostgreSQL on port %d stopped", self.pg_port)


def _timescaledb_installed(pg_ctl: Path) -> bool:
    """Whether TimescaleDB's library sits beside this PostgreSQL's (Debian: /usr/lib/postgresql/NN/lib)."""
    return any((pg_ctl.parent.parent / "lib").glob("timescaledb*.so"))


def create_database(admin_url: str, name: str) -> None:
    """A database owned by the schema owner's role, with TimescaleDB created in it by the superuser when the
    server has it loaded (the owner may not create it: it is not a trusted extension)."""
    cluster.create_database(admin_url, name, OWNER_ROLE)
    with connect(with_database(admin_url, name), autocommit=True) as conn:
        enable_timescaledb(conn)


def auth_config(files: Path) -> list[str]:
    """A private broker's lines for the accounts and ACL in `files`, with lamplighter's concentrators plugin when it
    builds here (fieldnet.broker_plugin)."""
    lines = [f"password_file {files / PASSWD}", f"acl_file {files / ACL}"]
    plugin = broker_plugin.build(files)
    return lines + (broker_plugin.config_lines(plugin, files) if plugin else [])

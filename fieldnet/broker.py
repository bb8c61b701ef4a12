"""Where a client of the project finds the broker, and as whom it connects: one object for every MQTT client.

A `Broker` is parsed once from a URL (`mqtt://host:1883`, `mqtts://host:8883`, with optional `user:password@`)
plus the TLS file settings, and handed to the gateway's links, the API's health check, the simulator, the
benchmarks and the tests' own clients, so credentials and TLS are added in one place. Its password is never part
of its `repr` or of `str(broker)` (what logs print).
"""

from __future__ import annotations

import dataclasses
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from fieldnet.errors import FieldnetError

__all__ = ["Broker", "BrokerError", "Login"]


class BrokerError(FieldnetError):
    """A broker URL or TLS setting lamplighter cannot use; the message names it (never the password)."""


@dataclass(frozen=True)
class Login:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Broker:
    host: str
    port: int = 1883
    login: Login | None = None
    tls: bool = False
    ca_file: Path | None = None  # None with TLS: the system's trusted CAs
    cert_file: Path | None = None  # a client certificate, for brokers that require one
    key_file: Path | None = None
    _context: list[ssl.SSLContext] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def parse(
        cls,
        url: str,
        *,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
    ) -> Broker:
        try:
            u = urlsplit(url)
            port = u.port
        except ValueError as exc:
            raise BrokerError(f"MQTT URL {_safe(url)!r}: {exc}") from None
        if u.scheme not in ("mqtt", "tcp", "mqtts", "ssl") or not u.hostname:
            raise BrokerError(f"an MQTT URL looks like mqtt://host:1883 or mqtts://host:8883, got {_safe(url)!r}")
        tls = u.scheme in ("mqtts", "ssl")
        login = None
        if u.username:
            login = Login(unquote(u.username), unquote(u.password or ""))
        paths = [Path(p) if p else None for p in (ca_file, cert_file, key_file)]
        if (paths[1] is None) != (paths[2] is None):
            raise BrokerError("a client certificate needs both its certificate file and its key file")
        for p in paths:
            if p is not None and not p.is_file():
                raise BrokerError(f"TLS file {p} does not exist")
        if not tls and any(paths):
            raise BrokerError(f"TLS files are set but the MQTT URL {_safe(url)!r} is not mqtts://")
        ca, cert, key = paths
        return cls(u.hostname, port or (8883 if tls else 1883), login, tls, ca, cert, key)

    def __getstate__(self) -> dict[str, Any]:  # to another process: its TLS context is made there
        return {**self.__dict__, "_context": []}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def with_login(self, login: Login | None) -> Broker:
        """The same broker, connecting as someone else."""
        return dataclasses.replace(self, login=login, _context=self._context)

    @property
    def username(self) -> str | None:
        return self.login.username if self.login else None

    @property
    def password(self) -> str | None:
        return self.login.password if self.login else None

    @property
    def password_bytes(self) -> bytes | None:
        """The password as an MQTT CONNECT carries it."""
        return self.login.password.encode() if self.login else None

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for this broker (made once), or None for plain TCP."""
        if not self.tls:
            return None
        if not self._context:
            try:
                ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
                if self.cert_file and self.key_file:
                    ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
            except (OSError, ssl.SSLError) as exc:
                raise BrokerError(f"TLS settings for {self}: {exc}") from exc
            self._context.append(ctx)
        return self._context[0]

    def publish_once(self, topic: str, payload: bytes | str, *, qos: int = 1, timeout_s: float = 10.0) -> None:
        """Connect, publish one message, wait for the broker to take it (PUBACK at QoS 1), disconnect cleanly.
        Raises BrokerError naming the broker when it cannot be reached, refuses the login or does not answer."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.setup_paho(client)
        answered = threading.Event()
        refused: list[str] = []

        def on_connect(c: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
            if rc.is_failure:
                refused.append(str(rc))
            answered.set()

        client.on_connect = on_connect
        try:
            client.connect(self.host, self.port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            raise BrokerError(f"cannot reach the broker at {self}: {exc}") from None
        client.loop_start()
        try:
            # The broker's answer to the login first: a refusal ends the connection before any publish.
            if not answered.wait(timeout_s):
                raise BrokerError(f"the broker at {self} did not answer the connection within {timeout_s:g} s")
            if refused:
                raise BrokerError(f"the broker at {self} refused the connection: {refused[0]}")
            info = client.publish(topic, payload, qos=qos)
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError) as exc:
                raise BrokerError(f"the broker at {self} did not take the message: {exc}") from None
            if not info.is_published():
                raise BrokerError(f"the broker at {self} did not take the message within {timeout_s:g} s")
        finally:
            client.disconnect()
            client.loop_stop()

    def setup_paho(self, client: Any) -> None:
        """Credentials and TLS on a paho `Client` before it connects."""
        if self.login:
            client.username_pw_set(self.login.username, self.login.password)
        ctx = self.ssl_context()
        if ctx is not None:
            client.tls_set_context(ctx)

    def aiomqtt_kwargs(self) -> dict[str, Any]:
        """For aiomqtt.Client(**broker.aiomqtt_kwargs(), identifier=...)."""
        out: dict[str, Any] = {"hostname": self.host, "port": self.port}
        if self.login:
            out.update(username=self.login.username, password=self.login.password)
        if self.tls:
            out["tls_context"] = self.ssl_context()
        return out

    def __str__(self) -> str:
        who = f"{self.login.username}@" if self.login else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{who}{self.host}:{self.port}"


def _safe(url: str) -> str:
    """A URL with any password replaced, for messages."""
    try:
        u = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if u.password is None:
        return url
    netloc = u.netloc.rsplit("@", 1)[1]
    return u._replace(netloc=f"{u.username}:***@{netloc}").geturl()

"""The field network is closed: only provisioned accounts connect, each device only to its own topics, and
command acknowledgements count only from the lamp the command went to. Real broker, real database, an MQTT 5
client of the test's own (the `mqtt5` codec over a socket) that reports the broker's reason codes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiomqtt
import mqtt5
import psycopg
import pytest

from alerts.dispatch import DeliveryError, NotifyTransport, OutboxItem, check_target, pinned, redact, sign, verify
from fieldnet.accounts import Account, cabinet_user, lamp_user
from fieldnet.broker import Broker, BrokerError, Login
from fieldnet.provision import ACL, PASSWD
from kernel.clock import Clock
from lamplighter.runtime import Endpoints
from lamplighter.schema import SchemaError, migrate, plan
from lamplighter.services import APP_ROLE, OWNER_ROLE
from simulator.commands import FAULTS_TOPIC
from simulator.wire import PublishError, RawPublisher
from telemetry.schema import has_timescaledb, maintain_partitions, role_problems
from tests.support.factories import GatewayFactory, load_generated
from tests.support.gateway import count, gateway, lamp_ids, publish_readings, seed, wait_for
from tests.support.remote import call, remote_city, until
from tests.support.services import Services, free_port, over_tls, provision

pytestmark = [pytest.mark.services]

# What Mosquitto answers a login it does not know (the reason code, MQTT 5).
_REFUSED = (mqtt5.ConnAckReasonCode.NOT_AUTHORIZED, mqtt5.ConnAckReasonCode.BAD_USER_NAME_OR_PASSWORD)


@dataclass
class V5:
    """A bare MQTT 5 client: connect, publish at QoS 1 and return the broker's PUBACK reason."""

    sock: socket.socket
    next_id: int = 1

    @classmethod
    def connect(cls, broker: Broker, client_id: str) -> tuple[V5 | None, mqtt5.ConnAckReasonCode]:
        sock = socket.create_connection((broker.host, broker.port), timeout=5)
        sock.sendall(
            mqtt5.ConnectPacket(
                client_id, clean_start=True, username=broker.username, password=broker.password_bytes
            ).write()
        )
        connack = cls._read(sock)
        assert isinstance(connack, mqtt5.ConnAckPacket)
        if connack.reason_code != mqtt5.ConnAckReasonCode.SUCCESS:
            sock.close()
            return None, connack.reason_code
        return cls(sock), connack.reason_code

    @staticmethod
    def _read(sock: socket.socket) -> object:
        buf = b""
        while True:
            chunk = sock.recv(4096)
            assert chunk, "the broker closed the connection"
            buf += chunk
            try:
                packet, _ = mqtt5.read(memoryview(buf))
                return packet
            except IndexError:
                continue

    def publish(self, topic: str, payload: bytes) -> mqtt5.PubAckReasonCode:
        pid, self.next_id = self.next_id, self.next_id + 1
        self.sock.sendall(mqtt5.PublishPacket(topic, payload, qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=pid).write())
        ack = self._read(self.sock)
        assert isinstance(ack, mqtt5.PubAckPacket) and ack.packet_id == pid
        return ack.reason_code

    def close(self) -> None:
        self.sock.sendall(b"\xe0\x00")
        self.sock.close()


def _device(ep: Endpoints, district: str, lamp: str) -> Broker:
    return ep.broker.with_login(ep.key().login(Account(lamp_user(district, lamp))))


def _provisioned_city(ep: Endpoints) -> str:
    """A city of 300 lamps in `ep`'s database, every device with its broker account; the database's URL."""
    load_generated(ep.database_url, 300, seed=2)
    provision(ep)
    return ep.database_url


def _singles(url: str, n: int) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """SELECT id, district FROM lamps WHERE controller = 'single' AND district = (
                   SELECT district FROM lamps WHERE controller = 'single' GROUP BY district ORDER BY count(*) DESC
                   LIMIT 1)
               ORDER BY no LIMIT %s""",
            (n,),
        ).fetchall()
    assert len(rows) == n, "the seeded city has too few single-lamp controllers in one district"
    return [(r[0], r[1]) for r in rows]


def test_the_private_broker_admits_only_provisioned_accounts(endpoints: Endpoints, client_id: str) -> None:
    _provisioned_city(endpoints)
    (lamp, district), *_ = _singles(endpoints.database_url, 1)

    _, anonymous = V5.connect(endpoints.broker.with_login(None), client_id + "-anon")
    assert anonymous == mqtt5.ConnAckReasonCode.NOT_AUTHORIZED
    stolen = endpoints.broker.with_login(ep_login := endpoints.key().login(Account(lamp_user(district, lamp), 7)))
    assert ep_login.username == f"{district}/lamp/{lamp}"
    _, wrong = V5.connect(stolen, client_id + "-wrong")  # a secret of another generation than the provisioned one
    assert wrong in _REFUSED
    device, ok = V5.connect(_device(endpoints, district, lamp), client_id + "-dev")
    assert ok == mqtt5.ConnAckReasonCode.SUCCESS and device is not None
    device.close()
    with pytest.raises(PublishError, match="not authorised"):  # MQTT 3.1.1 devices are refused as well
        RawPublisher(endpoints.broker.with_login(None), client_id + "-anon311")


@pytest.mark.asyncio
async def test_a_one_shot_publish_is_delivered_or_says_why_not(
    endpoints: Endpoints, client_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`lamplighter inject` publishes through Broker.publish_once: it returns once the broker has taken the
    message, and says which broker refused or could not be reached, without logging an error when all went well."""
    sim = endpoints.as_("lamplighter-simcontrol")
    headend = endpoints.as_("lamplighter-headend")  # the simulator's account, which reads the injections
    async with aiomqtt.Client(**headend.aiomqtt_kwargs(), identifier=client_id + "-faults") as sub:
        await sub.subscribe(FAULTS_TOPIC, qos=1)
        await asyncio.to_thread(sim.publish_once, FAULTS_TOPIC, b'{"leak": ["XN-CD-000001"]}')
        async with asyncio.timeout(10):
            got = await anext(aiter(sub.messages))
    assert got.payload == b'{"leak": ["XN-CD-000001"]}'
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    with pytest.raises(BrokerError, match="refused"):
        sim.with_login(Login("lamplighter-simcontrol", "not-its-password")).publish_once(FAULTS_TOPIC, b"{}")
    with pytest.raises(BrokerError, match="cannot reach"):
        Broker.parse(f"mqtt://127.0.0.1:{free_port()}").publish_once(FAULTS_TOPIC, b"{}")


@pytest.mark.asyncio
async def test_a_device_may_publish_only_on_its_own_topics(
    endpoints: Endpoints, client_id: str, start_gateway: GatewayFactory
) -> None:
    url = _provisioned_city(endpoints)
    (a, district), (b, _) = _singles(url, 2)
    now = Clock().now_ms()

    def report(seq: int) -> bytes:
        return json.dumps({"ts": now + seq, "seq": seq, "on": True, "dim": 100, "faults": []}).encode()

    readings = "SELECT count(*) FROM lamp_readings r JOIN lamps l ON l.no = r.lamp_no WHERE l.id = %s"
    async with start_gateway():
        device, _ = V5.connect(_device(endpoints, district, a), client_id + "-a")
        assert device is not None
        try:
            refused = mqtt5.PubAckReasonCode.NOT_AUTHORIZED
            assert device.publish(f"sl/{district}/lamp/{b}/state", report(1)) == refused  # B's state
            assert device.publish(f"sl/{district}/lamp/{b}/cmd", b'{"id":"x","op":"off"}') == refused  # any command
            assert device.publish(f"sl/{district}/lamp/{a}/cmd", b'{"id":"x","op":"off"}') == refused  # its own too
            assert device.publish("sl/ops/lighting-rate", b"{}") == refused
            assert device.publish(f"sl/{district}/lamp/{a}/state", report(2)) == mqtt5.PubAckReasonCode.SUCCESS
        finally:
            device.close()
        await wait_for(lambda: count(url, readings.replace("%s", f"'{a}'")) == 1, 10, "A's own report stored")
    assert count(url, readings.replace("%s", f"'{b}'")) == 0, "the gateway stored a report A sent as B"
    assert count(url, "SELECT count(*) FROM quarantine") == 0, "the refused publishes reached the gateway"


def test_reprovisioning_after_an_inventory_change_keeps_connections_and_refuses_the_removed(
    endpoints: Endpoints, client_id: str
) -> None:
    url = _provisioned_city(endpoints)
    (kept, district), (removed, _) = _singles(url, 2)
    connected, _ = V5.connect(_device(endpoints, district, kept), client_id + "-kept")
    assert connected is not None
    try:
        with psycopg.connect(url, autocommit=True) as conn:  # the removed lamp now reports through its cabinet
            conn.execute("UPDATE lamps SET controller = 'concentrator' WHERE id = %s", (removed,))
        directory = endpoints.accounts.parent if endpoints.accounts else None
        assert directory is not None
        before = (directory / PASSWD).read_text()
        provision(endpoints)
        assert (
            f"{district}/lamp/{removed}:" in before
            and f"{district}/lamp/{removed}:" not in (directory / PASSWD).read_text()
        )
        assert (directory / ACL).exists()
        # The connection made before the reload still publishes; the removed device cannot connect any more.
        accepted = connected.publish(f"sl/{district}/lamp/{kept}/status", b"")
        assert int(accepted.value) < 0x80  # accepted (perhaps with no subscriber)
        _, gone = V5.connect(_device(endpoints, district, removed), client_id + "-removed")
        assert gone in _REFUSED
    finally:
        connected.close()


@pytest.mark.asyncio
async def test_an_acknowledgement_counts_only_on_the_commanded_lamps_own_topic(
    endpoints: Endpoints, client_id: str
) -> None:
    # Every simulated lamp stays silent: the only answers are the test's.
    async with remote_city(endpoints, client_id, lamps=300, unreachable=1.0, ack_timeout_s=60) as city:
        provision(endpoints)
        (a, district), (b, _) = _singles(city.url, 2)
        r = await call(city.api.post, "/api/v1/commands", json={"target": {"lamps": [b]}, "op": "dim", "level": 40})
        assert r.status_code == 202, r.text
        command = r.json()["id"]
        await until(lambda: city.gw.commands.sent > 0, 10, "the command sent")
        device_id = f"{command}-0"  # the id the lamp receives: the campaign's, then the lamp's place in it
        ack = json.dumps({"id": device_id, "ok": True, "ts": city.clock.now_ms()}).encode()

        # Lamp A answers B's command on its own ack topic (which the broker lets it use): not B's answer.
        spoofer = RawPublisher(_device(endpoints, district, a), client_id + "-a")
        spoofer.publish(f"sl/{district}/lamp/{a}/ack", ack)
        spoofer.close()
        await until(lambda: city.gw.commands.spoofed_acks == 1, 10, "the spoofed answer refused")
        status = (await call(city.api.get, f"/api/v1/commands/{command}")).json()
        assert status["status"] != "done", status

        # B's own answer on its own topic is the one that counts.
        lamp_b = RawPublisher(_device(endpoints, district, b), client_id + "-b")
        lamp_b.publish(f"sl/{district}/lamp/{b}/ack", ack)
        lamp_b.close()
        await until(
            lambda: city.api.get(f"/api/v1/commands/{command}").json()["status"] == "done", 15, "B's answer taken"
        )


@pytest.mark.asyncio
async def test_ingest_runs_over_tls_with_nothing_lost(endpoints: Endpoints, client_id: str) -> None:
    tls = over_tls(endpoints)
    assert tls.broker.tls and tls.mqtt_url.startswith("mqtts://")
    url = tls.database_url
    seed(url, 500)
    async with gateway(tls, client_id) as gw:
        good, _ = publish_readings(tls, lamp_ids(url, 500), 5000, client_id + "-pub")  # a head-end over TLS
        await wait_for(lambda: count(url, "SELECT count(*) FROM lamp_readings") == good, 20, "every reading stored")
        assert gw.command_link.broker.tls  # the outbound link too
    assert good == 5000


def test_a_webhook_signature_covers_its_time_and_a_replay_is_refused() -> None:
    body, secret, now = b'{"ticket":{"id":1}}', "a-long-enough-secret", 1_796_000_000
    signature = sign(secret, body, now)
    assert verify(secret, body, str(now), signature, now + 10)
    assert not verify(secret, body, str(now), signature, now + 301)  # recorded, replayed six minutes later
    assert not verify(secret, body, str(now + 60), signature, now + 60)  # a newer time on the old signature
    assert not verify(secret, body + b" ", str(now), signature, now)
    assert redact("https://oapi.dingtalk.com/robot/send?access_token=abc123") == "https://oapi.dingtalk.com/…"


@pytest.mark.asyncio
async def test_a_delivery_to_this_machine_or_an_internal_network_is_refused() -> None:
    for url in ("http://127.0.0.1:8080/hook", "http://localhost/hook", "http://10.1.2.3/x", "http://169.254.169.254/"):
        with pytest.raises(DeliveryError, match="refused"):
            await check_target(url, allow_private=False)
        await check_target(url, allow_private=True)  # a deployment whose receivers are internal says so
    with pytest.raises(DeliveryError) as err:
        await check_target("http://127.0.0.1/robot/send?access_token=secret-token", allow_private=False)
    assert "secret-token" not in str(err.value)
    # A notification URL naming a server of its own is checked the same way before Apprise sends anything.
    item = OutboxItem(
        1, 1, 1, "notify", "cd-a", "k", {}, 1, dt.datetime.now(dt.UTC), None, None, ["json://127.0.0.1:9/x"]
    )
    with pytest.raises(DeliveryError, match="refused"):
        await NotifyTransport().send(item)


def test_a_checked_webhook_address_is_the_one_connected_to() -> None:
    """DNS rebinding: the name is resolved once, checked, and the request goes to that address."""
    url, headers, extensions = pinned("https://hooks.example.org:8443/robot/send?access_token=t", "203.0.113.7")
    assert url == "https://203.0.113.7:8443/robot/send?access_token=t"
    assert headers == {"Host": "hooks.example.org:8443"} and extensions == {"sni_hostname": "hooks.example.org"}
    url, headers, extensions = pinned("http://hooks.example.org/x", "2001:db8::1")
    assert (url, headers, extensions) == ("http://[2001:db8::1]/x", {"Host": "hooks.example.org"}, {})


def test_docs_and_metrics_need_a_login_and_docs_can_be_turned_off(endpoints: Endpoints) -> None:
    from fastapi.testclient import TestClient
    from prometheus_client import CollectorRegistry

    from api.app import create_app
    from tests.support.auth import make_user

    api = endpoints.as_("lamplighter-api")
    app = create_app(database_url=endpoints.database_url, broker=api, metrics=CollectorRegistry())
    _, token = make_user(endpoints.database_url, "viewer")
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 401
        away = client.get("/docs", follow_redirects=False)  # a browser without a session: to the login, and back
        assert (away.status_code, away.headers["location"]) == (303, "/login?next=/docs")
        signed = {"Authorization": f"Bearer {token}"}
        assert "swagger" in client.get("/docs", headers=signed).text.lower()
        assert client.get("/metrics", headers=signed).status_code == 200
    hidden = create_app(database_url=endpoints.database_url, broker=api, docs=False)
    with TestClient(hidden) as client:
        assert client.get("/docs", headers=signed).status_code == 404
        assert client.get("/openapi.json").status_code == 404


_BEYOND_ROWS = (
    "CREATE TABLE intruder (x int)",
    "DROP TABLE lamps",
    "ALTER TABLE lamps ADD COLUMN x int",
    "TRUNCATE lamp_readings",
    "UPDATE schema_migrations SET name = 'forged'",
    "CREATE ROLE intruder LOGIN SUPERUSER",
    "ALTER SYSTEM SET fsync = off",
    "SELECT pg_read_file('PG_VERSION')",
    "COPY lamps TO '/tmp/lamplighter-exfiltrated'",
)


def test_the_application_role_is_no_superuser_and_owns_nothing(database_url: str, owner_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
        assert role_problems(conn) == []
        for statement in _BEYOND_ROWS:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        # What it needs it has: rows, and the partitions kept ahead through the owner's function.
        seed(database_url, 50)
        assert count(database_url, "SELECT count(*) FROM lamps") == 50
        if has_timescaledb(conn):  # a hypertable's chunks come with the rows
            conn.execute(
                "INSERT INTO lamp_readings (ts, lamp_no, seq, is_on, dim, faults, received_at) "
                "VALUES (now() + interval '60 days', 1, 1, true, 100, '{}', now())"
            )
        else:
            created, _ = maintain_partitions(conn, today=dt.date.today() + dt.timedelta(days=60), drop=False)
            assert created > 0
    with psycopg.connect(owner_url, autocommit=True) as conn:
        problems = role_problems(conn)
        assert "is a superuser" not in problems and any(p.startswith("owns") for p in problems)


def test_an_old_schema_is_migrated_only_by_its_owner(database_url: str, owner_url: str) -> None:
    with psycopg.connect(owner_url, autocommit=True) as owner:
        owner.execute("DELETE FROM schema_migrations WHERE version = (SELECT max(version) FROM schema_migrations)")
    with psycopg.connect(database_url, autocommit=True) as conn, pytest.raises(SchemaError) as refused:
        migrate(conn)
    assert "LAMPLIGHTER_DATABASE_OWNER_URL" in refused.value.message and "lamplighter_app" in refused.value.message
    with psycopg.connect(owner_url, autocommit=True) as owner:
        assert migrate(owner, grant_to=APP_ROLE) == [plan("plain").versions[-1]]
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert migrate(conn) == []


def test_the_private_database_asks_every_role_for_its_password(services: Services) -> None:
    port = urlsplit(services.admin_url).port
    superuser = urlsplit(services.admin_url).username
    for role in (APP_ROLE, OWNER_ROLE, superuser):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(f"postgresql://{role}@127.0.0.1:{port}/postgres", connect_timeout=5).close()
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(f"postgresql://{role}:guess@127.0.0.1:{port}/postgres", connect_timeout=5).close()


def _concentrated(url: str) -> list[tuple[str, str, str]]:
    """(district, cabinet, one of its lamps) for two concentrators."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """SELECT DISTINCT ON (c.no) c.district, c.id, l.id FROM cabinets c JOIN lamps l ON l.cabinet_id = c.id
               WHERE c.concentrator AND l.controller = 'concentrator' ORDER BY c.no, l.no LIMIT 2"""
        ).fetchall()
    assert len(rows) == 2, "the seeded city has two concentrators"
    return [(str(d), str(c), str(lamp)) for d, c, lamp in rows]


@pytest.mark.asyncio
async def test_a_concentrator_speaks_only_for_its_own_lamps(endpoints: Endpoints, client_id: str) -> None:
    url = _provisioned_city(endpoints)
    assert endpoints.accounts is not None
    # The private broker runs lamplighter's plugin: the concentrators' lamps are in its table, not in the ACL.
    assert "plugin_opt_concentrators" in (endpoints.accounts.parent / "mosquitto.conf").read_text()
    (d, cabinet, lamp), (d2, _, other) = _concentrated(url)
    assert f"sl/{d}/lamp/{lamp}/" not in (endpoints.accounts.parent / ACL).read_text()
    login = endpoints.broker.with_login(endpoints.key().login(Account(cabinet_user(d, cabinet))))
    # Accepted (nobody subscribes to acks here: 0x10 is the broker's "accepted, no subscribers"), or refused.
    ok, refused = (
        (mqtt5.PubAckReasonCode.SUCCESS, mqtt5.PubAckReasonCode.NO_MATCHING_SUBSCRIBERS),
        mqtt5.PubAckReasonCode.NOT_AUTHORIZED,
    )
    ack = json.dumps({"id": "cmd-00000001", "ok": True, "error": None, "ts": Clock().now_ms()}).encode()
    device, _ = V5.connect(login, client_id + "-conc")
    assert device is not None
    try:
        assert device.publish(f"sl/{d}/lamp/{lamp}/ack", ack) in ok  # its own lamp
        assert device.publish(f"sl/{d2}/lamp/{other}/ack", ack) == refused  # another concentrator's lamp
        assert device.publish(f"sl/{d}/lamp/{lamp}/cmd", b"{}") == refused  # commands only come from the backend
    finally:
        device.close()
    # It reads its lamp's commands and not another concentrator's.
    async with aiomqtt.Client(**login.aiomqtt_kwargs(), identifier=client_id + "-conc-sub") as sub:
        await sub.subscribe(f"sl/{d}/lamp/{lamp}/cmd", qos=1)
        await sub.subscribe(f"sl/{d2}/lamp/{other}/cmd", qos=1)
        async with aiomqtt.Client(
            **endpoints.as_("lamplighter-commands").aiomqtt_kwargs(), identifier=client_id + "-cmds"
        ) as backend:
            await backend.publish(f"sl/{d2}/lamp/{other}/cmd", b'{"for": "other"}', qos=1)
            await backend.publish(f"sl/{d}/lamp/{lamp}/cmd", b'{"for": "own"}', qos=1)
        async with asyncio.timeout(10):
            got = await anext(aiter(sub.messages))
        assert (str(got.topic), got.payload) == (f"sl/{d}/lamp/{lamp}/cmd", b'{"for": "own"}')
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1):
                await anext(aiter(sub.messages))

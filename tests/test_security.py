"""The field network is closed: only provisioned accounts connect, each device only to its own topics, and
command acknowledgements count only from the lamp the command went to. Real broker, real database, an MQTT 5
client of the test's own (the `mqtt5` codec over a socket) that reports the broker's reason codes."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass

import mqtt5
import psycopg
import pytest

from alerts.dispatch import DeliveryError, check_target, redact, sign, verify
from fieldnet.accounts import Account, lamp_user
from fieldnet.broker import Broker
from fieldnet.provision import ACL, PASSWD
from lamplighter.runtime import Endpoints
from seeds.generator import generate
from seeds.loader import load
from simulator.wire import PublishError, RawPublisher
from telemetry.clock import Clock
from tests.fix_services import over_tls, provision
from tests.test_commands import call, remote_city, until
from tests.test_ingest import _lamp_ids, _publish_readings, count, gateway, seed, wait_for

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
    with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
        load(conn, generate(300, seed=2), progress=False)
    provision(endpoints)
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
async def test_a_device_may_publish_only_on_its_own_topics(endpoints: Endpoints, client_id: str) -> None:
    url = endpoints.database_url
    with psycopg.connect(url, autocommit=True) as conn:
        load(conn, generate(300, seed=2), progress=False)
    provision(endpoints)
    (a, district), (b, _) = _singles(url, 2)
    now = Clock().now_ms()

    def report(seq: int) -> bytes:
        return json.dumps({"ts": now + seq, "seq": seq, "on": True, "dim": 100, "faults": []}).encode()

    readings = "SELECT count(*) FROM lamp_readings r JOIN lamps l ON l.no = r.lamp_no WHERE l.id = %s"
    async with gateway(endpoints, client_id):
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
    url = endpoints.database_url
    with psycopg.connect(url, autocommit=True) as conn:
        load(conn, generate(300, seed=2), progress=False)
    provision(endpoints)
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
        good, _ = _publish_readings(tls, _lamp_ids(url, 500), 5000, client_id + "-pub")  # a head-end over TLS
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


def test_docs_and_metrics_need_a_login_and_docs_can_be_turned_off(endpoints: Endpoints) -> None:
    from fastapi.testclient import TestClient
    from prometheus_client import CollectorRegistry

    from api.app import create_app
    from tests.auth import make_user

    api = endpoints.as_("lamplighter-api")
    app = create_app(database_url=endpoints.database_url, broker=api, metrics=CollectorRegistry())
    _, token = make_user(endpoints.database_url, "viewer")
    with TestClient(app) as client:
        assert client.get("/docs").status_code == 401 and client.get("/metrics").status_code == 401
        signed = {"Authorization": f"Bearer {token}"}
        assert "swagger" in client.get("/docs", headers=signed).text.lower()
        assert client.get("/metrics", headers=signed).status_code == 200
    hidden = create_app(database_url=endpoints.database_url, broker=api, docs=False)
    with TestClient(hidden) as client:
        assert client.get("/docs", headers=signed).status_code == 404
        assert client.get("/openapi.json").status_code == 404

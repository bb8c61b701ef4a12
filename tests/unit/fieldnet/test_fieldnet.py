"""Broker URLs, accounts and the broker files, without services."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fieldnet.accounts import Account, DeviceKey, cabinet_user, lamp_user, mosquitto_hash
from fieldnet.broker import Broker, BrokerError
from fieldnet.errors import FieldnetError
from fieldnet.provision import ACCOUNTS, ACL, CONCENTRATORS, PASSWD, Inventory, load_accounts, provision


def test_a_broker_url_gives_host_port_login_and_tls_and_never_shows_the_password() -> None:
    b = Broker.parse("mqtts://gw%2F1:s%40cret@broker.example:8884")
    assert (b.host, b.port, b.tls, b.username, b.password) == ("broker.example", 8884, True, "gw/1", "s@cret")
    assert "s@cret" not in repr(b) and "s@cret" not in str(b)
    assert Broker.parse("mqtt://10.0.0.5").port == 1883 and Broker.parse("mqtts://10.0.0.5").port == 8883
    with pytest.raises(BrokerError, match="mqtt://host:1883"):
        Broker.parse("http://user:hunter2@host")
    with pytest.raises(BrokerError) as err:
        Broker.parse("ftp://user:hunter2@host")
    assert "hunter2" not in str(err.value)
    with pytest.raises(BrokerError, match="not mqtts"):
        Broker.parse("mqtt://host", ca_file=__file__)


@given(st.text(max_size=80))
def test_any_url_is_a_broker_or_a_clear_error(url: str) -> None:
    try:
        b = Broker.parse(url)
    except BrokerError as exc:
        assert exc.message
        return
    assert b.host and 0 < b.port < 65536
    if b.password:
        assert b.password not in str(b).replace(b.host, "")


def test_usernames_are_topic_stems_and_refuse_what_would_widen_a_pattern() -> None:
    assert lamp_user("cd", "XN-CD-000123") == "cd/lamp/XN-CD-000123"
    assert cabinet_user("cb", "XN-CB-C0001") == "cb/cabinet/XN-CB-C0001"
    for district, device in (("cd", "XN-+"), ("cd", "A/B/C/D"), ("c#", "XN-CD-0001"), ("cd", "xn-lower")):
        with pytest.raises(FieldnetError):
            lamp_user(district, device)


def test_secrets_are_derived_per_account_and_generation_and_hashed_as_mosquitto_does() -> None:
    key = DeviceKey(b"k" * 32)
    a0, a1 = Account("cd/lamp/XN-CD-000001"), Account("cd/lamp/XN-CD-000001", 1)
    assert key.secret(a0) == DeviceKey(b"k" * 32).secret(a0)  # printable again for installation
    assert key.secret(a0) != key.secret(a1) != key.secret(Account("cd/lamp/XN-CD-000002"))
    assert key.secret(a0) != DeviceKey(b"j" * 32).secret(a0)
    line = key.password_line(a0)
    user, _, h = line.partition(":")
    _, kind, iterations, salt, digest = h.split("$")
    assert (user, kind) == (a0.username, "7")
    expected = hashlib.pbkdf2_hmac("sha512", key.secret(a0).encode(), base64.b64decode(salt), int(iterations))
    assert base64.b64decode(digest) == expected
    assert mosquitto_hash("x", b"0" * 12) != mosquitto_hash("y", b"0" * 12)


def test_provisioning_again_keeps_unchanged_lines_and_drops_removed_devices(tmp_path: Path) -> None:
    key = DeviceKey(b"k" * 32)
    lamps = [f"cd/lamp/XN-CD-{i:06d}" for i in range(50)]
    conc = {"cd/cabinet/XN-CD-C0001": ["cd/lamp/XN-CD-900000"]}
    first = provision(key, tmp_path, Inventory(lamps, conc, ["crews/cd-a"], {}))
    assert first.hashed == 6 + 1 + 50  # services, a crew, the devices
    before = (tmp_path / PASSWD).read_text().splitlines()
    again = provision(key, tmp_path, Inventory(lamps[1:], conc, ["crews/cd-a"], {lamps[2]: 1}))
    assert again.hashed == 1  # only the rotated account
    after = (tmp_path / PASSWD).read_text().splitlines()
    assert not any(line.startswith(lamps[0] + ":") for line in after)
    assert [line for line in after if line.startswith(lamps[3] + ":")] == [
        line for line in before if line.startswith(lamps[3] + ":")
    ]
    acl = (tmp_path / ACL).read_text()
    assert "pattern write sl/%u/state" in acl and "user cd/cabinet/XN-CD-C0001" in acl
    assert "topic read sl/cd/lamp/XN-CD-900000/cmd" in acl
    # With lamplighter's plugin the concentrator's lamps are in its table, not in the ACL.
    provision(key, tmp_path, Inventory(lamps, conc, ["crews/cd-a"], {}), plugin=True)
    assert "XN-CD-900000" not in (tmp_path / ACL).read_text()
    assert "cd/lamp/XN-CD-900000 cd/cabinet/XN-CD-C0001" in (tmp_path / CONCENTRATORS).read_text().splitlines()
    assert (tmp_path / ACCOUNTS).stat().st_mode & 0o077 == 0  # the services' secrets: owner only
    logins = load_accounts(tmp_path / ACCOUNTS)
    assert logins["lamplighter-ingest"].password == key.secret(Account("lamplighter-ingest"))

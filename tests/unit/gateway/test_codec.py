"""The codec on its own: every reject reason of the protocol, and payloads valid against the JSON Schemas."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest

from gateway.codec import REASONS, Message, Registry, decode_batch
from tests.support import TESTS

NOW = 1_795_900_000_000
DAY = 86_400_000
REG = Registry(
    {"XN-CD-000001": (1, "cd"), "XN-CD-000002": (2, "cd"), "XN-CD-000003": (3, "cd")},
    {"XN-CD-C0001": (1, "cd"), "XN-CD-C0002": (2, "cd")},
    [-1, 1, 1, 2],  # lamps 1 and 2 hang on cabinet 1, lamp 3 on cabinet 2
)
LAMP_TOPIC = "sl/cd/lamp/XN-CD-000001/state"


def lamp(**kw: object) -> bytes:
    body: dict[str, object] = {"ts": NOW, "seq": 7, "on": True, "dim": 80, "faults": []}
    body.update(kw)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def decode(topic: str, payload: bytes):  # type: ignore[no-untyped-def]
    return decode_batch([Message(topic, payload, NOW)], REG, now_ms=NOW, retention_ms=90 * DAY)


CASES = [
    ("bad_topic", "sl/cd/lamp/XN-CD-000001", lamp()),
    ("bad_topic", "sl/cd/pole/XN-CD-000001/state", lamp()),
    ("not_json", LAMP_TOPIC, b'{"ts": 1,'),
    ("not_json", LAMP_TOPIC, b"\xff\xfe\x00"),
    ("not_object", LAMP_TOPIC, b"[1, 2]"),
    ("not_object", LAMP_TOPIC, b'"on"'),
    ("missing_field", LAMP_TOPIC, lamp(seq=...)),
    ("missing_field", LAMP_TOPIC, lamp(faults=...)),
    ("wrong_type", LAMP_TOPIC, lamp(on="yes")),
    ("wrong_type", LAMP_TOPIC, lamp(ts="2026-11-28")),
    ("wrong_type", LAMP_TOPIC, lamp(power_w=None)),
    ("wrong_type", LAMP_TOPIC, lamp(dim=50.5)),
    ("out_of_range", LAMP_TOPIC, lamp(dim=101)),
    ("out_of_range", LAMP_TOPIC, lamp(seq=-1)),
    ("out_of_range", LAMP_TOPIC, lamp(seq=2**31)),
    ("out_of_range", LAMP_TOPIC, lamp(power_factor=1.5)),
    ("out_of_range", LAMP_TOPIC, lamp(mode="party")),
    ("out_of_range", LAMP_TOPIC, lamp(faults=[""])),
    ("too_large", LAMP_TOPIC, lamp(note="x" * 5000)),
    ("unknown_device", "sl/cd/lamp/XN-CD-999999/state", lamp()),
    ("unknown_device", "sl/cd/cabinet/XN-CD-C9999/state", b"{}"),
    ("district_mismatch", "sl/cx/lamp/XN-CD-000001/state", lamp()),
    ("ts_in_future", LAMP_TOPIC, lamp(ts=NOW + 5 * 60_000 + 1)),
    ("ts_too_old", LAMP_TOPIC, lamp(ts=NOW - 91 * DAY)),
]


@pytest.mark.parametrize(("reason", "topic", "payload"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_reject_reasons(reason: str, topic: str, payload: bytes) -> None:
    b = decode(topic, payload)
    assert len(b.lamps) == 0
    assert [r.reason for r in b.rejects] == [reason]
    assert b.rejects[0].topic == topic
    assert b.rejects[0].payload == payload[:1024]
    assert b.rejects[0].detail  # a human-readable explanation


def test_every_reason_is_covered() -> None:
    # cabinet_mismatch rejects a lamp inside a cabinet report: test_a_concentrator_speaks_only_for_its_own_lamps.
    assert {c[0] for c in CASES} | {"cabinet_mismatch"} == set(REASONS)


def test_valid_lamp_report_keeps_values_and_ignores_unknown_fields() -> None:
    b = decode(
        LAMP_TOPIC,
        lamp(power_w=120.5, energy_wh=1000, mode="manual", firmware="2.1", faults=["lamp_failure", "vendor_code_17"]),
    )
    assert b.rejects == []
    assert b.lamps.lamp_no == [1] and b.lamps.dim == [80] and b.lamps.power_w == [120.5]
    assert b.lamps.mode == ["manual"] and b.lamps.voltage_v == [None]
    assert b.lamps.faults == [["lamp_failure", "vendor_code_17"]]  # unknown codes are kept


def test_a_bad_lamp_inside_a_cabinet_report_costs_only_itself() -> None:
    good = {"id": "XN-CD-000001", "ts": NOW, "seq": 1, "on": True, "dim": 100, "faults": []}
    bad = {"id": "XN-CD-000002", "ts": NOW, "seq": 1, "on": True, "dim": 300, "faults": []}
    stranger = {"id": "XN-XX-000009", "ts": NOW, "seq": 1, "on": True, "dim": 100, "faults": []}
    cab = {
        "ts": NOW,
        "seq": 3,
        "door_open": False,
        "contactors": [True, True],
        "faults": [],
        "lamps": [good, bad, stranger],
    }
    b = decode("sl/cd/cabinet/XN-CD-C0001/state", json.dumps(cab).encode())
    assert b.lamps.lamp_no == [1]
    assert [c.cabinet_no for c in b.cabinets] == [1] and b.cabinets[0].lamp_count == 3
    assert sorted(r.reason for r in b.rejects) == ["out_of_range", "unknown_device"]


def test_a_concentrator_speaks_only_for_its_own_lamps() -> None:
    mine = {"id": "XN-CD-000001", "ts": NOW, "seq": 1, "on": True, "dim": 100, "faults": []}
    theirs = {"id": "XN-CD-000003", "ts": NOW, "seq": 1, "on": False, "dim": 0, "faults": ["leakage_current"]}
    cab = {"ts": NOW, "seq": 4, "door_open": False, "contactors": [True], "faults": [], "lamps": [mine, theirs]}
    b = decode("sl/cd/cabinet/XN-CD-C0001/state", json.dumps(cab).encode())
    assert b.lamps.lamp_no == [1] and [c.cabinet_no for c in b.cabinets] == [1]
    (r,) = b.rejects
    assert r.reason == "cabinet_mismatch"
    assert "XN-CD-000003" in r.detail and "XN-CD-C0001" in r.detail


def test_status_message() -> None:
    """The readings' window, except that a last will may be old: it carries the time its connection began."""
    online = decode("sl/cd/lamp/XN-CD-000001/status", b'{"online": true, "ts": %d}' % NOW)
    assert [(s.device, s.online, s.ts) for s in online.statuses] == [("XN-CD-000001", True, NOW)]
    will = decode("sl/cd/lamp/XN-CD-000001/status", b'{"online": false, "ts": %d}' % (NOW - 200 * DAY))
    assert [(s.online, s.ts) for s in will.statuses] == [(False, NOW - 200 * DAY)]
    for payload, reason in [
        (b'{"online": true, "ts": 10000000000000000}', "ts_in_future"),
        (b'{"online": false, "ts": %d}' % (NOW + 3_600_000), "ts_in_future"),
        (b'{"online": true, "ts": %d}' % (NOW - 91 * DAY), "ts_too_old"),
        (b'{"online": false, "ts": -1}', "out_of_range"),
    ]:
        b = decode("sl/cd/lamp/XN-CD-000001/status", payload)
        assert b.statuses == [] and [r.reason for r in b.rejects] == [reason], payload


def test_simulator_payloads_match_the_protocol_schemas() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from referencing import Registry as RefRegistry
    from referencing import Resource

    from simulator.fleet import Fleet, FleetSpec

    # The protocol's JSON Schemas, as published with docs/protocol.md.
    schema_dir = TESTS / "schemas"
    schemas = {p.name: json.loads(p.read_text()) for p in schema_dir.glob("*.schema.json")}
    refs = RefRegistry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas.values())
    lamp_v = jsonschema.Draft202012Validator(schemas["lamp-state.schema.json"], registry=refs)
    cab_v = jsonschema.Draft202012Validator(schemas["cabinet-state.schema.json"], registry=refs)
    spec = FleetSpec(
        lamp_id=[f"XN-CD-{i:06d}" for i in range(1, 61)],
        lamp_district=["cd"] * 60,
        lamp_cabinet=np.array([0] * 50 + [1] * 10, dtype=np.int32),
        lamp_concentrator=np.array([True] * 50 + [False] * 10),
        lamp_rated_w=np.full(60, 150, dtype=np.float32),
        lamp_led=np.ones(60, dtype=bool),
        cabinet_id=["XN-CD-C0001", "XN-CD-C0002"],
        cabinet_district=["cd", "cd"],
        cabinet_circuits=np.array([3, 1], dtype=np.int16),
        cabinet_concentrator=np.array([True, False]),
    )
    fleet = Fleet(spec, interval_s=60, start_ms=NOW)
    fleet.fail([0, 55], "lamp_failure", NOW)
    reports = fleet.due_reports(NOW + 61_000)
    assert len(reports) == 11  # 10 single-lamp controllers and one concentrator
    for r in reports:
        doc = msgspec.json.decode(r.payload)
        (cab_v if b"/cabinet/" in r.topic else lamp_v).validate(doc)
    reg = Registry(
        {i: (n + 1, "cd") for n, i in enumerate(spec.lamp_id)},
        {"XN-CD-C0001": (1, "cd"), "XN-CD-C0002": (2, "cd")},
        [-1, *(int(c) + 1 for c in spec.lamp_cabinet)],
    )
    b = decode_batch(
        [Message(r.topic.decode(), r.payload, NOW) for r in reports], reg, now_ms=NOW + 61_000, retention_ms=DAY
    )
    assert b.rejects == [] and len(b.lamps) == 60


def test_acknowledgements_are_checked_like_reports() -> None:
    from protocol.messages import decode_ack

    ack = decode_ack(b'{"id": "c1-XN-CD-000001", "ok": false, "ts": %d, "error": "relay\\u0000stuck"}' % NOW, NOW)
    assert not ack.ok and ack.error == "relay\\u0000stuck"  # storable text, the NUL spelled out
    for bad, why in [
        (b'{"id": "x", "ok": true, "ts": 1, "state": ' + b"[" * 2000 + b"]" * 2000 + b"}", "nest"),
        (b'{"id": "x", "ok": true, "ts": %d}' % (NOW + 3_600_000), "ahead"),
        (b'{"id": "x", "ok": true, "ts": 5}', "older than the retention"),
        (b'{"id": "x", "ok": true, "ts": 18446744073709551616}', "<="),
        (b" " * 9000, "exceeds"),
        (b"\xff", "malformed"),
    ]:
        with pytest.raises(ValueError, match=why):
            decode_ack(bad, NOW)

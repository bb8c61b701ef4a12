"""Messages a broken device or an attacker may send, one of each kind that once stopped or stalled ingest and
one per reject reason of the protocol, each with the quarantine reason the gateway must give it. Shared by the
poison test and `lamplighter bench faults`."""

from __future__ import annotations

import json

from protocol.topics import device_topic

__all__ = ["DB_CONSTRAINT", "poison_messages"]

# The last one is refused by the database itself, through a check of this name on the readings' power that the
# caller adds as a DBA would (power_w < 4000).
DB_CONSTRAINT = "plausible_power"


def poison_messages(
    now: int, lamp: str, district: str, cabinet: str, cab_lamp: str, other: str
) -> list[tuple[str, str, bytes]]:
    """(expected reason, topic, payload): one message of each class that once stopped or stalled ingest, then
    one per reject reason of docs/protocol.md, then a few more. `other`: a district of the inventory not the lamp's."""
    state = device_topic(district, "lamp", lamp, "state")
    status = device_topic(district, "lamp", lamp, "status")

    def report(**kw: object) -> bytes:
        body: dict[str, object] = {"ts": now, "seq": 1, "on": True, "dim": 100, "faults": []}
        body.update(kw)
        return json.dumps(body).encode()

    deep = b'{"ts":%d,"seq":1,"on":true,"dim":1,"faults":[],"x":' % now + b"[" * 1900 + b"]" * 1900 + b"}"
    assert len(deep) <= 4096
    cab = {"ts": now, "seq": 1, "door_open": False, "contactors": [True], "faults": []}
    return [
        # The classes of the issue: a crash, a COPY overflow, PostgreSQL refusing a batch, Infinity stored.
        ("too_large", state, deep),
        ("out_of_range", state, report(energy_wh=2**63)),
        ("out_of_range", state, report(faults=["lamp\u0000failure"])),
        ("ts_in_future", status, json.dumps({"online": True, "ts": 10**16}).encode()),
        ("out_of_range", state, report(power_w=1e39)),
        # One per reject reason.
        # The gateway subscribes to its districts' topics (sl/{district}/lamp/+/state): within them.
        ("bad_topic", f"sl/{district}/lamp//state", report()),
        ("not_json", state, b'{"ts": 1,'),
        ("not_object", state, b"[1, 2]"),
        ("missing_field", state, report(seq=None).replace(b'"seq": null, ', b"")),
        ("wrong_type", state, report(on="yes")),
        ("out_of_range", state, report(dim=101)),
        ("too_large", state, report(note="x" * 5000)),
        ("unknown_device", f"sl/{district}/lamp/XN-ZZ-999999/state", report()),
        ("district_mismatch", device_topic(other, "lamp", lamp, "state"), report()),
        ("ts_in_future", state, report(ts=now + 3_600_000)),
        ("ts_too_old", state, report(ts=now - 91 * 86_400_000)),
        # More: number spellings json.dumps never writes, bad Unicode, a huge topic, deep status and cabinet.
        ("out_of_range", state, report(power_w=0).replace(b'"power_w": 0', b'"power_w": 1e400')),
        ("out_of_range", state, report(ts=2**64)),
        ("out_of_range", state, report(temp_c=-1e308)),
        ("not_json", state, report(faults=["x"]).replace(b'"x"', b'"\\ud800"')),
        ("not_json", state, b"\xff\xfe\xfd"),
        ("unknown_device", device_topic(district, "lamp", "X" * 60_000, "state"), report()),
        ("too_large", status, b'{"online":true,"ts":1,"x":' + b"{" * 600 + b"}" * 600 + b"}"),
        (
            "out_of_range",
            device_topic(district, "cabinet", cabinet, "state"),
            json.dumps({**cab, "leakage_ma": 1e39}).encode(),
        ),
        (
            "out_of_range",  # one bad lamp in a cabinet report: the cabinet lands, that lamp does not
            device_topic(district, "cabinet", cabinet, "state"),
            json.dumps({**cab, "seq": 2, "lamps": [{"id": cab_lamp, **json.loads(report(energy_wh=-1))}]}).encode(),
        ),
        # Accepted by the codec, refused by a constraint of the database's own (the last line of defence).
        ("db_refused", state, report(seq=3, power_w=4321.0)),
    ]

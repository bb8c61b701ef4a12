"""The decoder fuzzed through its public function: whatever arrives, it never raises, and every reading it
accepts is one PostgreSQL stores (through the gateway's own binary COPY) with the values it was sent."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.codec import Message, Registry, decode_batch
from kernel.database import Database
from protocol.messages import MAX_DEPTH, nesting_depth
from telemetry.models import Batch
from telemetry.store import TelemetryStore

NOW = 1_795_900_000_000
RETENTION = 90 * 86_400_000
REG = Registry({"XN-CD-000001": (1, "cd"), "XN-CD-000002": (2, "cd")}, {"XN-CD-C0001": (1, "cd")}, [-1, 1, 1])
TOPICS = [
    "sl/cd/lamp/XN-CD-000001/state",
    "sl/cd/cabinet/XN-CD-C0001/state",
    "sl/cd/lamp/XN-CD-000001/status",
    "sl/cd/cabinet/XN-CD-C0001/status",
]

# Numbers at every edge a column or a parser has.
EDGES: list[Any] = [
    0, -0.0, 1, -1, 2**31 - 1, 2**31, -(2**31), 2**32, 2**53, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), 2**64, 10**30,
    1e308, -1e308, 5e-324, 2.2250738585072014e-308, 3.4028234e38, 3.5e38, 1e39, 1e-46, 0.1, 100, 101, 32768,
    -32769, NOW, NOW + 300_000, NOW + 300_001, NOW - RETENTION, 10**16,
]  # fmt: skip
TEXT = st.text(
    st.characters(codec="utf-8", categories=None)
    | st.sampled_from(["\x00", "\ufeff", "\u202e", "\U0010ffff", "\ud7ff", "\ue000", "é", "亮"]),
    max_size=70,
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.sampled_from(EDGES)
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
TREES = st.recursive(
    SCALARS, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(TEXT, kids, max_size=4), max_leaves=40
)
FIELD_VALUES = st.sampled_from(EDGES) | SCALARS | st.lists(SCALARS, max_size=4)


def _report(base: dict[str, Any], draw: st.DrawFn) -> dict[str, Any]:
    """A report close to valid: every field drawn from the edges, some fields broken or added."""
    doc = dict(base)
    for key in draw(st.lists(st.sampled_from([*sorted(base), "extra", "id"]), max_size=6)):
        doc[key] = draw(FIELD_VALUES)
    return doc


@st.composite
def lamp_doc(draw: st.DrawFn) -> dict[str, Any]:
    base = {
        "ts": draw(st.sampled_from([NOW, NOW - 1, NOW - RETENTION + 60_000, NOW + 299_000])),
        "seq": draw(st.integers(0, 2**31 - 1)),
        "on": draw(st.booleans()),
        "dim": draw(st.integers(0, 100)),
        "faults": draw(st.lists(TEXT, max_size=3)),
        "power_w": draw(st.sampled_from(EDGES) | st.floats(0, 1e6)),
        "voltage_v": draw(st.floats(0, 400)),
        "current_a": draw(st.floats(0, 2)),
        "power_factor": draw(st.floats(0, 1)),
        "energy_wh": draw(st.sampled_from(EDGES) | st.integers(0, 2**63)),
        "temp_c": draw(st.sampled_from(EDGES) | st.floats(-300, 300)),
        "lux": draw(st.floats(0, 1e5)),
        "rssi_dbm": draw(st.sampled_from([-32768, 32767, -70])),
        "mode": draw(st.sampled_from(["auto", "manual"])),
    }
    return _report(base, draw)


@st.composite
def cabinet_doc(draw: st.DrawFn) -> dict[str, Any]:
    lamps = [
        {"id": draw(st.sampled_from(["XN-CD-000001", "XN-CD-000002", "XN-CD-000003"])), **draw(lamp_doc())}
        for _ in range(draw(st.integers(0, 3)))
    ]
    base = {
        "ts": NOW,
        "seq": draw(st.integers(0, 2**31 - 1)),
        "door_open": draw(st.booleans()),
        "contactors": [True, False],
        "faults": draw(st.lists(TEXT, max_size=2)),
        "phase_voltage_v": draw(st.lists(st.sampled_from(EDGES) | st.floats(0, 500), min_size=3, max_size=3)),
        "circuit_current_a": draw(st.lists(st.floats(0, 100), max_size=6)),
        "leakage_ma": draw(st.sampled_from(EDGES) | st.floats(0, 100)),
        "energy_wh": draw(st.sampled_from(EDGES)),
        "lamps": lamps,
    }
    return _report(base, draw)


def _encode(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, allow_nan=False).encode("utf-8", "surrogatepass")


def payloads() -> st.SearchStrategy[tuple[str, bytes]]:
    raw = st.binary(max_size=300)
    trees = TREES.map(_encode)
    deep = st.builds(
        lambda n, wrap: (b'{"ts":1,"x":' if wrap else b"") + b"[" * n + b"1" + b"]" * n + (b"}" if wrap else b""),
        st.integers(1, 3000),
        st.booleans(),
    )
    near = lamp_doc().map(_encode)
    near_cab = cabinet_doc().map(_encode)
    status = st.fixed_dictionaries({"online": st.booleans(), "ts": st.sampled_from(EDGES) | st.integers()}).map(_encode)
    # Number spellings json.dumps never writes.
    literal = st.builds(
        lambda field, number: b'{"ts":%d,"seq":1,"on":true,"dim":1,"faults":[],"%s":%s}' % (NOW, field, number),
        st.sampled_from([b"power_w", b"energy_wh", b"temp_c", b"ts", b"seq", b"dim", b"rssi_dbm"]),
        st.sampled_from([b"1e400", b"-1e400", b"1e-400", b"NaN", b"Infinity", b"-0", b"1E39", b"18446744073709551616"]),
    )
    return st.tuples(
        st.sampled_from(TOPICS) | TEXT, st.one_of(raw, trees, deep, near, near_cab, status, literal, near, near_cab)
    )


@settings(max_examples=500, deadline=None)
@given(st.lists(payloads(), min_size=1, max_size=5))
def test_the_decoder_never_raises_and_accounts_for_every_message(messages: list[tuple[str, bytes]]) -> None:
    batch = decode_batch([Message(t, p, NOW) for t, p in messages], REG, now_ms=NOW, retention_ms=RETENTION)
    lamp_reports = sum(1 for t, _ in messages if t == TOPICS[0])
    # Each message is stored or quarantined (a cabinet's lamps may be both, one by one).
    accepted = len(batch.cabinets) + len(batch.statuses) + sum(1 for r in batch.rejects if "/cabinet/" not in r.topic)
    assert accepted + len(batch.lamps) >= len(messages) - sum(1 for t, _ in messages if "/cabinet/" in t)
    assert len(batch.lamps) <= lamp_reports + 3 * len(messages)
    for r in batch.rejects:
        assert r.detail and "\x00" not in r.detail and "\x00" not in r.topic
        r.topic.encode()  # storable: no lone surrogates


def test_nesting_is_measured_outside_strings() -> None:
    assert nesting_depth(b'{"a": "' + b"[" * 100 + b'"}') <= 1
    assert nesting_depth(b"[" * 40 + b"]" * 40) == 40
    assert nesting_depth(b'["]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]", ' + b"[" * 40 + b"]" * 41) == 41
    assert nesting_depth(b'["\\"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"' + b"," + b"{" * 40 + b"}" * 40 + b"]") == 41
    deep = b'{"ts":1,"x":' + b"[" * 1900 + b"]" * 1900 + b"}"
    (r,) = decode_batch([Message(TOPICS[0], deep, NOW)], REG, now_ms=NOW, retention_ms=RETENTION).rejects
    assert r.reason == "too_large" and f"at most {MAX_DEPTH}" in r.detail


@pytest.fixture
def store(database_url: str) -> Iterator[tuple[TelemetryStore, asyncio.AbstractEventLoop]]:
    loop = asyncio.new_event_loop()
    s = TelemetryStore(Database(database_url))
    yield s, loop
    loop.run_until_complete(s.close())
    loop.close()


def _same_real(stored: float | None, sent: float | None) -> bool:
    """A `real` column keeps the float4 nearest to what was sent (read back in its shortest spelling)."""
    return stored is None if sent is None else stored is not None and np.float32(stored) == np.float32(sent)


@pytest.mark.services
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.just(TOPICS[0]), lamp_doc()) | st.tuples(st.just(TOPICS[1]), cabinet_doc()), max_size=4))
def test_every_accepted_reading_round_trips_through_the_copy(
    store: tuple[TelemetryStore, asyncio.AbstractEventLoop], database_url: str, docs: list[tuple[str, dict[str, Any]]]
) -> None:
    s, loop = store
    batch = decode_batch([Message(t, _encode(d), NOW) for t, d in docs], REG, now_ms=NOW, retention_ms=RETENTION)
    loop.run_until_complete(_write_fresh(s, database_url, batch))
    lamps = batch.lamps
    with psycopg.connect(database_url) as conn:
        rows = {
            (r[0], r[1]): r[2:]
            for r in conn.execute(
                "SELECT lamp_no, seq, (extract(epoch FROM ts) * 1000)::bigint, power_w, temp_c, energy_wh, faults "
                "FROM lamp_readings"
            )
        }
        cabinets = conn.execute("SELECT count(*) FROM cabinet_readings").fetchone()
    wanted = {}
    for i in range(len(lamps)):  # the first of a repeated (lamp, ts, seq) is the one kept
        wanted.setdefault((lamps.lamp_no[i], lamps.seq[i], lamps.ts[i]), i)
    assert len(rows) == len({(k[0], k[1]) for k in wanted}) or len(rows) <= len(wanted)
    for (no, seq, ts), i in wanted.items():
        got = rows.get((no, seq))
        assert got is not None, f"reading {i} of lamp {no} accepted but not stored"
        if got[0] != ts:
            continue  # same lamp and seq at another ts in this batch
        assert _same_real(got[1], lamps.power_w[i]) and _same_real(got[2], lamps.temp_c[i])
        assert got[3] == lamps.energy_wh[i] and got[4] == lamps.faults[i]
        for v in (got[1], got[2]):
            assert v is None or math.isfinite(v)
    assert cabinets is not None and cabinets[0] == len({(c.cabinet_no, c.ts, c.seq) for c in batch.cabinets})


async def _write_fresh(s: TelemetryStore, url: str, batch: Batch) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for table in ("lamp_readings", "cabinet_readings", "lamp_latest", "cabinet_latest"):
            await conn.execute(f"DELETE FROM {table}")
    await s.write(batch)

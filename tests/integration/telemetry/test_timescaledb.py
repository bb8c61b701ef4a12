"""TimescaleDB, where the tests' PostgreSQL has it: hypertables, their policies, a compressed day read back as
stored, and a redelivered reading refused by a compressed chunk. Skipped on plain PostgreSQL (the default here);
docs/operating.md ("The tests on TimescaleDB") says how to run them on a build of TimescaleDB."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from gateway.codec import Message
from lamplighter.runtime import Endpoints
from telemetry.schema import has_timescaledb
from tests.support.auth import sign_in
from tests.support.factories import load_generated
from tests.support.history import OLD_DAYS, TODAY, city_messages, compacted, ingest, midnight

pytestmark = [pytest.mark.services, pytest.mark.timescaledb]


@pytest.fixture
def city(endpoints: Endpoints, owner_url: str) -> Iterator[Endpoints]:
    with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
        if not has_timescaledb(conn):
            pytest.skip("the tests' PostgreSQL has no TimescaleDB")
    load_generated(owner_url, 1000, seed=3)
    yield endpoints


def test_telemetry_tables_are_hypertables_with_their_policies(city: Endpoints) -> None:
    with psycopg.connect(city.database_url) as conn:
        tables = {r[0] for r in conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")}
        assert {"lamp_readings", "cabinet_readings", "lighting_rate_samples"} <= tables
        settings = dict(
            conn.execute(
                "SELECT hypertable::text, segmentby || ' | ' || orderby "
                "FROM timescaledb_information.hypertable_compression_settings"
            ).fetchall()
        )
        assert settings["lamp_readings"] == "lamp_no | ts,seq"
        assert settings["cabinet_readings"] == "cabinet_no | ts,seq"
        assert conn.execute("SELECT to_regclass('lighting_rate_hourly')").fetchone() == (None,)  # migration 016
        jobs = conn.execute(
            "SELECT hypertable_name, proc_name, config FROM timescaledb_information.jobs "
            "WHERE hypertable_name IN ('lamp_readings', 'cabinet_readings') ORDER BY 1, 2"
        ).fetchall()
    assert [(t, p) for t, p, _ in jobs] == [
        ("cabinet_readings", "policy_compression"),
        ("cabinet_readings", "policy_retention"),
        ("lamp_readings", "policy_compression"),
        ("lamp_readings", "policy_retention"),
    ]
    configs = {(t, p): c for t, p, c in jobs}
    assert configs[("lamp_readings", "policy_compression")]["compress_after"] == "2 days"
    assert configs[("lamp_readings", "policy_retention")]["drop_after"] == "90 days"


def _telemetry(c: TestClient, lamp: str, frm: datetime) -> list[dict[str, Any]]:
    r = c.get(f"/api/v1/lamps/{lamp}/telemetry", params={"from": frm.isoformat(), "limit": 10_000})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


@pytest.mark.asyncio
async def test_a_compressed_day_reads_back_as_stored_and_refuses_a_redelivered_reading(
    city: Endpoints, owner_url: str
) -> None:
    messages = city_messages(city, lamps=3)
    await ingest(city, messages)
    app = create_app(database_url=city.database_url, broker=city.as_("lamplighter-api"))
    frm = midnight(OLD_DAYS[0]) - timedelta(days=1)
    with TestClient(app) as c:
        sign_in(c, city.database_url, "viewer")
        before = {lamp: _telemetry(c, lamp, frm) for lamp in ("XN-CD-000001", "XN-CD-000003")}
        assert len(before["XN-CD-000001"]) > 2 * 96
        with psycopg.connect(owner_url, autocommit=True) as owner:  # what the policy does once the days are old
            owner.execute("SELECT compress_chunk(c) FROM show_chunks('lamp_readings', older_than => %s) c",
                          (midnight(TODAY),))  # fmt: skip
            compressed = owner.execute(
                "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'lamp_readings' "
                "AND is_compressed AND range_end <= %s",
                (midnight(TODAY),),
            ).fetchone()
        assert compressed == (len(OLD_DAYS),)
        for lamp, items in before.items():
            assert _telemetry(c, lamp, frm) == items

        old = next(m for m in messages if m.topic.endswith("XN-CD-000001/state"))
        late = dict(json.loads(old.payload), seq=10_000)
        late["ts"] += 60_000
        await ingest(city, [old, Message(old.topic, json.dumps(late).encode(), old.received_ms)])
        after = _telemetry(c, "XN-CD-000001", frm)
        assert [i["seq"] for i in after[:3]] == [0, 10_000, 1]
        assert len(after) == len(before["XN-CD-000001"]) + 1
    with psycopg.connect(city.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM lamp_readings").fetchone() == (len(messages) + 1,)


def test_the_compaction_leaves_timescaledb_to_its_own_compression(city: Endpoints) -> None:
    assert "nothing to compact" in compacted(city)
    with psycopg.connect(city.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM lamp_history").fetchone() == (0,)

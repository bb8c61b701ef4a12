"""Each lamp's days summed up from its stored readings (`lamplighter summarise`), raw or compact alike, and the
burning hours and switch-ons the API shows: the device's own when it reports them, else counted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from gateway.codec import Message
from lamplighter.runtime import Endpoints
from tests.support.auth import sign_in
from tests.support.factories import load_generated
from tests.support.history import TODAY, command, ingest, midnight

DAYS = [TODAY - timedelta(days=4), TODAY - timedelta(days=3)]  # old enough to be compacted


def _night(lamp: str, day_index: int, *, counters: bool) -> list[Message]:
    """A lamp's UTC day every 10 minutes: off, then on at full output from 10:00 to 22:00 (twelve hours), off."""
    out = []
    day = DAYS[day_index]
    for k in range(144):
        ts = int((midnight(day) + timedelta(minutes=10 * k)).timestamp() * 1000)
        on = 60 <= k < 132
        body: dict[str, Any] = {"ts": ts, "seq": day_index * 144 + k, "on": on, "dim": 100 if on else 0, "faults": []}
        body["power_w"] = 97.0 if on else 0.0
        if counters:
            body |= {
                "burn_h": 30_000 + day_index * 12 + max(0, min(k, 132) - 60) // 6,
                "starts": 2_500 + day_index + (k >= 60),
            }
            body |= {"driver_temp_c": 41.0 if on else 12.0, "leakage_ma": 0.5}
        out.append(Message(f"sl/cd/lamp/{lamp}/state", json.dumps(body).encode(), ts + 300))
    return out


@pytest.fixture
def city(endpoints: Endpoints) -> Iterator[Endpoints]:
    load_generated(endpoints.database_url, 200, seed=3)
    yield endpoints


def _summaries(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT * FROM lamp_days ORDER BY lamp_no, day").fetchall()


@pytest.mark.services
@pytest.mark.asyncio
async def test_a_lamp_without_counters_gets_them_counted_and_one_with_them_shows_its_own(city: Endpoints) -> None:
    messages = [m for i in range(2) for lamp in ("XN-CD-000001", "XN-CD-000002") for m in
                _night(lamp, i, counters=lamp.endswith("2"))]  # fmt: skip
    await ingest(city, messages)
    out = command(city, "summarise", "--before", TODAY.isoformat())
    assert "576 readings of 2 days" in out and "into 4 lamp-days" in out, out
    assert "nothing to summarise" in command(city, "summarise", "--before", TODAY.isoformat())
    raw = _summaries(city.database_url)

    app = create_app(database_url=city.database_url, broker=city.as_("lamplighter-api"))
    with TestClient(app) as c:
        sign_in(c, city.database_url, "viewer")
        plain = c.get("/api/v1/lamps/XN-CD-000001").json()["counters"]
        assert plain["source"] == "readings"
        assert plain["burn_h"] == 24.0 and plain["starts"] == 2  # two nights of twelve hours, each one switch-on
        assert plain["derived"]["days"] == 2 and plain["reported"]["burn_h"] is None
        d4i = c.get("/api/v1/lamps/XN-CD-000002").json()["counters"]
        assert d4i["source"] == "device"
        assert (d4i["burn_h"], d4i["starts"]) == (30_024, 2_502)  # what the driver said last
        assert (d4i["derived"]["burn_h"], d4i["derived"]["starts"]) == (24.0, 2)  # and what its readings say
        archive = c.get("/api/v1/lamps/XN-CD-000002/archive").json()
        assert archive["counters"] == d4i

    with psycopg.connect(city.database_url) as conn:
        row = conn.execute(
            "SELECT burn_s, starts, power_norm_med, driver_temp_med, leakage_max, burn_h, starts_reported "
            "FROM lamp_days WHERE lamp_no = 2 AND day = %s",
            (DAYS[1],),
        ).fetchone()
        assert row == (43_200, 1, 97.0, 41.0, 0.5, 30_024, 2_502)
        conn.execute("DELETE FROM lamp_days_done")
        conn.commit()
    # Packed into the compact history, the same days sum up to the same figures.
    command(city, "compact", "--before", TODAY.isoformat())
    command(city, "summarise", "--before", TODAY.isoformat())
    assert _summaries(city.database_url) == raw

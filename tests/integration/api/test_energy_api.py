"""Energy and savings through the API, from meter readings whose true totals are known: every lamp burns 18:00 to
07:00, at full level until midnight and at half after, drawing exactly rated power × level; one lamp's counter is
reset in the night, one falls silent for three hours, one has no counter (its cabinet meter tells), and one
cabinet has no meter (its lamp without a counter is estimated)."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from energy.nights import NoReadings, compute_night, load_nights
from energy.tariff import DEFAULT_CO2_KG_PER_KWH
from gateway.codec import Message, decode_batch
from inventory.index import load_index
from inventory.registry import load_registry
from kernel.clock import Clock
from kernel.database import Database
from lamplighter.runtime import Endpoints
from lighting.engine import LightingEngine
from lighting.sampler import Sampler
from telemetry.store import TelemetryStore
from tests.support.auth import sign_in
from tests.support.factories import load_generated

pytestmark = pytest.mark.services

CST = dt.timezone(dt.timedelta(hours=8))
NIGHT = dt.date(2026, 11, 30)
NOON = dt.datetime(2026, 11, 30, 12, tzinfo=CST)
STEP_S = 600  # every lamp and cabinet reports every 10 minutes
HOUR_MS = 3_600_000
TARIFF = "08:00-22:00=1.0;22:00-08:00=0.5"
RESET_AT = dt.datetime(2026, 12, 1, 2, tzinfo=CST)


def _level(t: dt.datetime) -> int:
    """The night's level at local time t: 100 % 18:00–24:00, 50 % 00:00–07:00, off otherwise."""
    h = t.astimezone(CST).hour
    return 100 if h >= 18 else 50 if h < 7 else 0


def _energy_until(rated: float, t: dt.datetime) -> float:
    """Wh a lamp has used from the window's first reading (11:00) to t, exactly."""
    wh, step = 0.0, dt.timedelta(minutes=1)
    at = NOON - dt.timedelta(hours=1)
    while at < t:
        wh += rated * _level(at) / 100 / 60
        at += step
    return wh


@pytest.fixture
def city(endpoints: Endpoints) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    load_generated(endpoints.database_url, 300, seed=3)
    with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
        registry = load_registry(conn)
        lamps = conn.execute("SELECT l.id, l.district, l.cabinet_id, l.rated_w FROM lamps l ORDER BY l.no").fetchall()
        cabinets = conn.execute("SELECT id, district FROM cabinets ORDER BY no").fetchall()
        conn.execute("UPDATE lamps SET report_interval_s = %s", (STEP_S,))
    metered_cab, meterless_cab = cabinets[0][0], cabinets[1][0]
    in_metered = [lp for lp in lamps if lp[2] == metered_cab]
    in_meterless = [lp for lp in lamps if lp[2] == meterless_cab]
    special = {
        "reset": in_metered[0][0],
        "silent": in_metered[1][0],
        "no_counter": in_metered[2][0],
        "estimated": in_meterless[0][0],
    }
    # Per-minute energy tables, one per rated power, so each reading's counter is exact.
    times = [NOON - dt.timedelta(hours=1) + dt.timedelta(seconds=STEP_S * k) for k in range(26 * 3600 // STEP_S + 1)]
    per_watt = {}
    for rated in {float(lp[3]) for lp in lamps}:
        per_watt[rated] = [_energy_until(rated, t) for t in times]
    msgs: list[Message] = []
    cab_energy = {c[0]: 5_000_000.0 for c in cabinets}
    for k, t in enumerate(times):
        ms = int(t.timestamp() * 1000)
        level = _level(t)
        totals = dict.fromkeys(cab_energy, 0.0)
        for lamp, district, cab, rated in lamps:
            used = per_watt[float(rated)][k]
            totals[cab] += used
            if lamp == special["silent"] and dt.time(14) < t.astimezone(CST).time() < dt.time(17):
                continue
            counter = 1000 + used
            if lamp == special["reset"] and t >= RESET_AT:  # restarted from 0 just after the 01:50 reading
                counter = used - per_watt[float(rated)][times.index(RESET_AT - dt.timedelta(seconds=STEP_S))]
            body = f'"ts": {ms}, "seq": {k}, "on": {"true" if level else "false"}, "dim": {level or 100}, "faults": []'
            body += f', "power_w": {rated * level / 100}'
            if lamp not in (special["no_counter"], special["estimated"]):
                body += f', "energy_wh": {int(counter)}'
            msgs.append(Message(f"sl/{district}/lamp/{lamp}/state", ("{" + body + "}").encode(), ms))
        for cab, district in cabinets:
            meter = "" if cab == meterless_cab else f', "energy_wh": {int(cab_energy[cab] + totals[cab])}'
            body = f'{{"ts": {ms}, "seq": {k}, "door_open": false, "contactors": [true], "faults": []{meter}}}'
            msgs.append(Message(f"sl/{district}/cabinet/{cab}/state", body.encode(), ms))
    end_ms = int(times[-1].timestamp() * 1000)

    async def write() -> None:
        store = TelemetryStore(Database(endpoints.database_url))
        for i in range(0, len(msgs), 20_000):
            batch = decode_batch(msgs[i : i + 20_000], registry, now_ms=end_ms, retention_ms=30 * 86_400_000)
            assert not batch.rejects, batch.rejects[:3]
            await store.write(batch)
        await store.close()

    asyncio.run(write())
    truth = {
        "energy_kwh": sum(float(r) * 9.5 for *_, r in lamps) / 1000,
        "full_power_kwh": sum(float(r) * 13 for *_, r in lamps) / 1000,
        "cost": sum(float(r) * (4 * 1.0 + 5.5 * 0.5) for *_, r in lamps) / 1000,
        "special": special,
        "lamps": lamps,
        "url": endpoints.database_url,
        "cabinet_lamps": len(in_metered),
    }
    clock = Clock(start=dt.datetime(2026, 12, 1, 13, tzinfo=CST))  # the night ended an hour ago
    app = create_app(
        database_url=endpoints.database_url, broker=endpoints.as_("lamplighter-api"), clock=clock, tariff=TARIFF
    )
    with TestClient(app) as c:
        sign_in(c, endpoints.database_url, "viewer")
        yield c, truth


def test_a_night_of_known_meter_data_gives_its_true_totals(city: tuple[TestClient, dict[str, Any]]) -> None:
    c, truth = city
    r = c.get("/api/v1/energy", params={"group_by": "city", "from": "2026-11-30", "to": "2026-11-30"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tariff"] == TARIFF and body["missing"] == []
    (row,) = body["items"]
    assert row["period"] == "2026-11-30" and row["lamps"] == 300
    assert row["energy_kwh"] == pytest.approx(truth["energy_kwh"], rel=1e-3)
    assert row["full_power_kwh"] == pytest.approx(truth["full_power_kwh"], rel=1e-3)
    assert row["saving_kwh"] == pytest.approx(truth["full_power_kwh"] - truth["energy_kwh"], rel=1e-3)
    assert row["saving_pct"] == pytest.approx(100 * 3.5 / 13, abs=0.1)
    assert row["cost"] == pytest.approx(truth["cost"], rel=2e-3)  # time of use: 18–22 h at 1.0, the rest at 0.5
    assert row["co2_kg"] == pytest.approx(truth["energy_kwh"] * DEFAULT_CO2_KG_PER_KWH, rel=1e-3)
    assert row["flagged"] == {"reset": 1, "gap": 1, "partial": 1, "allocated": 1, "estimated": 1}

    # Each special lamp still gets its true energy, and says how it was found.
    lamps = c.get("/api/v1/energy", params={"group_by": "lamp", "from": "2026-11-30", "to": "2026-11-30"})
    by_id = {i["key"]: i for i in lamps.json()["items"]}
    rated = {lp[0]: float(lp[3]) for lp in truth["lamps"]}
    for kind, lamp in truth["special"].items():
        # Counters count whole Wh: a lamp's figure is within 1 Wh; the allocated lamp's, the cabinet meter's
        # remainder, carries up to 1 Wh from each metered lamp beside it.
        slack = truth["cabinet_lamps"] / 1000 if kind == "no_counter" else 0.001
        assert by_id[lamp]["energy_kwh"] == pytest.approx(rated[lamp] * 9.5 / 1000, abs=slack), kind
    assert by_id[truth["special"]["reset"]]["flagged"]["reset"] == 1
    assert by_id[truth["special"]["silent"]]["flagged"]["gap"] == 1
    assert by_id[truth["special"]["no_counter"]]["flagged"]["allocated"] == 1
    assert by_id[truth["special"]["estimated"]]["flagged"]["estimated"] == 1

    # Districts add up to the city; the month holds the night; CSV carries the same figures.
    districts = c.get("/api/v1/energy", params={"group_by": "district", "from": "2026-11-30", "to": "2026-11-30"})
    assert sum(i["energy_kwh"] for i in districts.json()["items"]) == pytest.approx(row["energy_kwh"], rel=1e-6)
    month = c.get("/api/v1/energy", params={"period": "month", "from": "2026-11-01", "to": "2026-11-30"}).json()
    assert month["items"][0]["period"] == "2026-11"
    assert month["items"][0]["energy_kwh"] == pytest.approx(row["energy_kwh"], rel=1e-6)
    assert "2026-11-01" in month["missing"]  # older than the readings: no figures, and said so
    text = c.get(
        "/api/v1/energy", params={"group_by": "district", "from": "2026-11-30", "to": "2026-11-30", "format": "csv"}
    ).text
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == 7 and float(table[0]["energy_kwh"]) == districts.json()["items"][0]["energy_kwh"]
    with psycopg.connect(truth["url"]) as conn:  # computed once, kept: the night had ended
        assert conn.execute("SELECT complete FROM energy_nights WHERE night = %s", (NIGHT,)).fetchone() == (True,)


def test_the_monthly_report_carries_the_month_s_energy(city: tuple[TestClient, dict[str, Any]]) -> None:
    c, truth = city
    r = c.get("/api/v1/reports/monthly", params={"month": "2026-11"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["month"] == "2026-11" and body["currency"] == "CNY" and "2026-11-30" not in body["missing_energy"]
    assert body["city"]["energy_kwh"] == pytest.approx(truth["energy_kwh"], rel=1e-3)
    assert body["city"]["cost"] == pytest.approx(truth["cost"], rel=2e-3)
    assert len(body["districts"]) == 7
    assert sum(d["energy_kwh"] for d in body["districts"]) == pytest.approx(body["city"]["energy_kwh"], rel=1e-6)
    assert body["city"]["nights_reported"] == 0  # no nightly lighting reports were stored in this test
    table = list(
        csv.DictReader(io.StringIO(c.get("/api/v1/reports/monthly", params={"month": "2026-11", "format": "csv"}).text))
    )
    assert [row["section"] for row in table] == ["city"] + ["district"] * 7
    assert float(table[0]["energy_kwh"]) == body["city"]["energy_kwh"]
    assert c.get("/api/v1/reports/monthly", params={"month": "November"}).status_code == 422


def test_the_leader_stores_the_night_once_it_has_ended(city: tuple[TestClient, dict[str, Any]]) -> None:
    """The sampler, a minute after the night's noon, computes the night and keeps it; the API then reads it."""
    _, truth = city

    async def run() -> None:
        with psycopg.connect(truth["url"]) as conn:
            engine = LightingEngine.load(conn)
        clock = Clock(start=dt.datetime(2026, 12, 1, 12, 1, tzinfo=CST))
        async with Database(truth["url"]) as db:
            sampler = Sampler(engine, db, clock)
            await sampler.sample(clock.now_ms() // 60_000 * 60_000)
            assert sampler._energy_task is not None
            await sampler._energy_task

    asyncio.run(run())
    with psycopg.connect(truth["url"]) as conn:
        stored = load_nights(conn, NIGHT, NIGHT)
    assert list(stored) == [NIGHT] and stored[NIGHT].complete
    assert stored[NIGHT].lamp_wh.sum() / 1000 == pytest.approx(truth["energy_kwh"], rel=1e-3)


def test_a_night_no_device_reported_in_has_no_figures(city: tuple[TestClient, dict[str, Any]]) -> None:
    """Before the devices first reported (or with ingest away all night) a night has no energy: said so (the API
    lists it as missing), never 0 kWh of "partial, estimated" lamps."""
    _, truth = city
    later = int(dt.datetime(2026, 12, 3, 13, tzinfo=CST).timestamp() * 1000)
    with psycopg.connect(truth["url"]) as conn:
        index = load_index(conn)
        with pytest.raises(NoReadings, match="no lamp or cabinet reported"):
            compute_night(conn, index, dt.date(2026, 11, 28), CST, later)
        with pytest.raises(NoReadings):
            compute_night(conn, index, dt.date(2026, 12, 2), CST, later)
        assert compute_night(conn, index, NIGHT, CST, later).lamp_wh.sum() > 0

"""A lamp wearing out is foreseen from its own reports: six weeks of a small city's readings go through the broker
and the real gateway into the database, each day is summed up, and the nightly forecast (a model trained on a
generated reference fleet, as a new city starts) flags the worn lamps days before they fail, and none of a district
where every lamp is sound. The API lists them, per cabinet."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from forecast.backtest import Failures, fit_tuned
from forecast.nightly import run, store_model
from lamplighter.runtime import Endpoints
from lamplighter.simcontrol import ScheduleControl
from simulator.days import generate_days
from simulator.degradation import Degradation, Rates
from simulator.fleet import Fleet, FleetSpec
from simulator.wire import RawPublisher
from telemetry.daily import summarise_day
from tests.support.auth import sign_in
from tests.support.factories import load_generated
from tests.support.gateway import gateway, wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow]

DAY_MS = 86_400_000
DAYS = 42
TODAY = dt.datetime.now(dt.UTC).date()
START = dt.datetime.combine(TODAY - dt.timedelta(days=DAYS), dt.time(), dt.UTC)


@pytest.fixture(scope="module")
def reference_model() -> Iterator[object]:
    """A model trained on a generated fleet's two hundred days and failures (lamps of their own kinds)."""
    city = generate_days(6000, dt.date(2026, 1, 1), 200, seed=11, rates=Rates(0.2, 0.05, 0.03, 0.08, 0.0))
    failures = Failures.of([(t.lamp, t.fault, t.day) for t in city.tickets])
    yield fit_tuned(city.table, city.rated_w, failures, known_until=200, horizon=30)


@pytest.mark.asyncio
async def test_worn_lamps_are_flagged_before_they_fail_and_a_sound_district_is_not(
    endpoints: Endpoints, client_id: str, reference_model: object
) -> None:
    url = endpoints.database_url
    load_generated(url, 160, seed=5)
    with psycopg.connect(url) as conn:
        spec = FleetSpec.from_db(conn)
    start_ms = int(START.timestamp() * 1000)
    deg = Degradation(len(spec.lamp_id), seed=2, rates=Rates.zero(), lamp_ids=spec.lamp_id)
    # The devices switch by the city's own schedules, as commissioned: a sound lamp is never on when not due.
    control = ScheduleControl(url, spec.lamp_id, reload_every_s=3600.0)
    fleet = Fleet(spec, interval_s=900, failure_rate_per_day=0.0, start_ms=start_ms, seed=4, degradation=deg,
                  d4i_share=1.0, leak_sensor_share=1.0, control=control)  # fmt: skip
    districts = sorted(set(spec.lamp_district))
    worn_district, sound_district = districts[0], districts[-1]
    in_worn = [i for i, d in enumerate(spec.lamp_district) if d == worn_district]
    photocell, driver = in_worn[3], in_worn[10]
    onsets = {  # day → (lamp, mode, lifetime)
        12: (photocell, "photocell", 23.0),  # fails on day 35
        14: (driver, "driver", 7.0),  # some twenty winter nights
    }
    with psycopg.connect(url) as conn:
        store_model(conn, reference_model, TODAY)  # type: ignore[arg-type]
        numbers = dict(conn.execute("SELECT id, no FROM lamps").fetchall())
        district_of = dict(conn.execute("SELECT no, district FROM lamps").fetchall())
    flagged: dict[dt.date, set[int]] = {}
    summed: list[int] = []
    sent = 0

    async def nightly(day: dt.date) -> None:
        """What the leading gateway's jobs do each morning: sum up yesterday, then forecast."""
        await asyncio.to_thread(pub.drain)
        # Counted by the gateway: its upkeep packs the oldest days into the compact history meanwhile.
        await wait_for(lambda: proc.gateway.stats.lamps_written >= sent, 180, "every reading stored")

        def jobs() -> set[int]:
            with psycopg.connect(url) as conn:
                # Each day summed up once whole (the gateway's own hourly run, on the wall clock, may have summed up
                # a day of this replay before all of it came: it is done again, replaced).
                for back in range(len(summed), (day - START.date()).days):
                    summarise_day(conn, START.date() + dt.timedelta(days=back))
                    summed.append(back)
                run(conn, day)
                rows = conn.execute("SELECT lamp_no FROM lamp_forecasts WHERE day = %s AND at_risk", (day,))
                return {int(r[0]) for r in rows}

        flagged[day] = await asyncio.to_thread(jobs)

    async with gateway(endpoints, client_id) as proc:
        pub = RawPublisher(endpoints.as_("lamplighter-headend"), f"{client_id}-devices")
        try:
            for t in range(start_ms, start_ms + DAYS * DAY_MS + 60_000, 60_000):
                k, into = divmod(t - start_ms, DAY_MS)
                if into == 0 and k in onsets:
                    lamp, mode, lifetime = onsets[k]
                    deg.start([lamp], mode, t, lifetime=lifetime)
                if into == 0 and k >= 29:  # from the first night with 29 days behind it
                    await nightly(START.date() + dt.timedelta(days=k))
                reports = fleet.due_reports(t)
                if reports and t < start_ms + DAYS * DAY_MS:
                    pub.publish_batch([(r.topic, r.payload) for r in reports])
                    sent += sum(r.lamps for r in reports)
                if into % 3_600_000 == 0:
                    await asyncio.sleep(0)  # the gateway shares this loop: let it take what came
        finally:
            pub.close()
    assert proc.gateway.stats.lamps_written == sent and proc.gateway.stats.duplicates == 0
    failed = {e["lamp"]: e["ts"] for e in deg.events if e["event"] == "failure"}
    assert spec.lamp_id[photocell] in failed, deg.events

    def first_flag(lamp: str) -> dt.date | None:
        return next((d for d in sorted(flagged) if numbers[lamp] in flagged[d]), None)

    for index in (photocell, driver):
        lamp = spec.lamp_id[index]
        if lamp not in failed:
            continue  # the driver's wear depends on the nights' cold: judged only when it failed in the window
        failure_day = dt.datetime.fromtimestamp(failed[lamp] / 1000, dt.UTC).date()
        flag = first_flag(lamp)
        if flag is None or (failure_day - flag).days < 3:
            with psycopg.connect(url) as conn:
                said = conn.execute(
                    "SELECT day, risk, at_risk, mode FROM lamp_forecasts WHERE lamp_no = %s ORDER BY day",
                    (numbers[lamp],),
                ).fetchall()
                tickets = conn.execute("SELECT fault, status FROM tickets WHERE asset_id = %s", (lamp,)).fetchall()
            raise AssertionError(f"{lamp} failed on {failure_day}, flagged {flag}: {said}, tickets {tickets}")
    every = set().union(*flagged.values())
    assert not {no for no in every if district_of[no] == sound_district}, every

    app = create_app(database_url=url, broker=endpoints.as_("lamplighter-api"))
    with TestClient(app) as c:
        sign_in(c, url, "viewer")
        r = c.get("/api/v1/maintenance/forecast", params={"district": worn_district})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["run"]["day"] == TODAY.isoformat()
        listed = {i["lamp"] for i in body["items"]}
        assert listed == {lamp for lamp, no in numbers.items() if no in flagged[TODAY]}
        assert sum(g["lamps"] for g in body["cabinets"]) == len(listed)
        assert c.get("/api/v1/maintenance/forecast", params={"district": sound_district}).json()["items"] == []
        assert c.get("/api/v1/maintenance/forecast", params={"mode": "rust"}).status_code == 422

"""Every report a device sends reaches the fault rules, in its order, whatever batch the gateway puts it in: a leak
cleared a moment later and a backlog uploaded at once, sent through the broker as a device would."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time

import psycopg
import pytest

from lamplighter.runtime import Endpoints
from simulator.wire import RawPublisher
from tests.support.factories import GatewayFactory
from tests.support.gateway import count, gateway, seed, wait_for

pytestmark = pytest.mark.services


def _lamp(url: str) -> tuple[str, str]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT id, district FROM lamps WHERE controller = 'single' ORDER BY no").fetchone()
    assert row is not None
    return row[0], row[1]


def _tickets(url: str, lamp: str) -> list[tuple[str, str, dt.datetime]]:
    """The lamp's tickets for what it reported itself (a lamp lit by day may also earn a `day_burning`)."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT fault, priority, first_seen FROM tickets WHERE asset_id = %s "
            "AND fault IN ('leakage_current', 'lamp_failure') ORDER BY id",
            (lamp,),
        ).fetchall()


def _report(ts: int, seq: int, faults: list[str]) -> bytes:
    dark = "lamp_failure" in faults
    body = {"ts": ts, "seq": seq, "on": True, "dim": 100, "power_w": 0.0 if dark else 95.0, "faults": faults}
    return json.dumps(body).encode()


@pytest.mark.asyncio
async def test_a_leak_cleared_50_ms_later_opens_one_p1(
    endpoints: Endpoints, client_id: str, start_gateway: GatewayFactory
) -> None:
    url = endpoints.database_url
    seed(url, 50)
    lamp, district = _lamp(url)
    topic = f"sl/{district}/lamp/{lamp}/state"
    async with start_gateway():
        pub = RawPublisher(endpoints.as_("lamplighter-headend"), client_id + "-dev")
        now = int(time.time() * 1000)
        pub.publish(topic, _report(now, 1, ["leakage_current"]))
        await asyncio.sleep(0.05)
        pub.publish(topic, _report(now + 50, 2, []))
        pub.close()
        await wait_for(lambda: count(url, "SELECT count(*) FROM lamp_readings") == 2, 10, "both reports stored")
        await wait_for(lambda: len(_tickets(url, lamp)) == 1, 10, "the leakage ticket")
    fault, priority, first_seen = _tickets(url, lamp)[0]
    assert (fault, priority) == ("leakage_current", "P1")
    assert int(first_seen.timestamp() * 1000) == now


async def _backlog(endpoints: Endpoints, client_id: str, failing: set[int]) -> tuple[str, int, str]:
    """Six reports five minutes apart, ending now, published back to back; those in `failing` report
    `lamp_failure` and draw nothing. Returns the lamp, the first report's time and the database URL."""
    url = endpoints.database_url
    seed(url, 50)
    lamp, district = _lamp(url)
    topic = f"sl/{district}/lamp/{lamp}/state"
    now = int(time.time() * 1000)
    first = now - 25 * 60_000
    async with gateway(endpoints, client_id):
        pub = RawPublisher(endpoints.as_("lamplighter-headend"), client_id + "-dev")
        for k in range(6):
            pub.publish(topic, _report(first + k * 5 * 60_000, k + 1, ["lamp_failure"] if k in failing else []))
        pub.close()
        await wait_for(lambda: count(url, "SELECT count(*) FROM lamp_readings") == 6, 10, "the backlog stored")
        await asyncio.sleep(1.5)  # the rules judge a batch once it is committed: time for a ticket to appear
    return lamp, first, url


@pytest.mark.asyncio
async def test_a_backlog_with_two_failing_reports_opens_one_ticket_dated_at_the_first(
    endpoints: Endpoints, client_id: str
) -> None:
    lamp, first, url = await _backlog(endpoints, client_id, {2, 3})
    tickets = _tickets(url, lamp)
    assert [(f, p) for f, p, _ in tickets] == [("lamp_failure", "P3")]
    assert int(tickets[0][2].timestamp() * 1000) == first + 10 * 60_000


@pytest.mark.asyncio
async def test_a_backlog_with_one_failing_report_opens_none(endpoints: Endpoints, client_id: str) -> None:
    lamp, _, url = await _backlog(endpoints, client_id, {3})
    assert _tickets(url, lamp) == []

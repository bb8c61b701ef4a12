"""`lamplighter bench faults`: the failures ingest must survive, run against private services, counted.

1. Poison: every kind of bad message (simulator.poison) and then healthy reports, to `lamplighter gateway` as a
   process: each bad one quarantined with its reason, every good one stored, the gateway still running.
2. SIGKILL: the gateway killed at random points while publisher processes stream lamp reports, started again
   each time: every reading stored once.
3. Broker restart: the gateway stopped, readings published, the broker restarted, the gateway started: all
   stored once.
4. Viewers: `lamplighter api` with many live ticket streams open (users of 16 streams each, the most one user
   may hold), the busiest calls answered meanwhile.
5. Reports and callers that once cost data or the city: a P1 reported and cleared 50 ms later, backlogs of six
   reports uploaded at once, the database read-only for 15 s mid-stream, a notification larger than the broker
   takes, a NaN stream period, 50 concurrent wrong logins.

Prints a table and, last, one JSON line. Asserts nothing: the figures are what it measured.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2

from alerts.crews import Crew, save_crew
from alerts.queries import assets_ticketed_since, dead_lettered, newest_ticket_id, queue_notification
from alerts.tickets import open_ticket
from api.auth import add_user
from bench.ingest import run_publishers
from inventory.queries import first_lamp_on_a_cabinet, lamps_listed
from inventory.registry import district_codes
from kernel.database import Connection, connect
from lamplighter.config import Settings
from lamplighter.runtime import Endpoints, bench_city, private_ports
from lamplighter.services import PrivateServices
from lamplighter.simproc import lamplighter_process
from protocol.topics import device_topic
from simulator.poison import DB_CONSTRAINT, poison_messages
from simulator.wire import RawPublisher
from telemetry.schema import add_readings_check, drop_readings_check
from telemetry.store import count_readings, empty_readings, quarantine_reasons

__all__ = ["run_faults_bench"]

_API_PORT = 18082
_CLIENT = "bench-faults-gateway"


class _Gateway:
    """`lamplighter gateway` as a child process, started again after each kill."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.exits: list[int] = []  # exit codes it ended with by itself (not killed by us)
        self.proc: subprocess.Popen[str] | None = None
        self.link_connects = 0  # its outbound (commands) link's connections to the broker, over every run
        self.start()

    def start(self) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lamplighter", "gateway"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        up = threading.Event()

        def drain() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                if "subscribed to" in line:
                    up.set()
                if "connected to broker" in line and f"{_CLIENT}-commands'" in line:
                    self.link_connects += 1

        threading.Thread(target=drain, daemon=True).start()
        if not up.wait(60):
            proc.kill()
            raise RuntimeError("`lamplighter gateway` did not subscribe within 60 s")
        self.proc = proc

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        """Count an exit of its own (the thing that must never happen) and start it again."""
        if self.proc is not None and self.proc.poll() is not None:
            self.exits.append(self.proc.returncode)
            self.start()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.proc = None


def _count(url: str, how: Callable[[Connection], int]) -> int:
    with connect(url) as conn:
        return how(conn)


def _stored(min_seq: int | None = None, below_seq: int | None = None) -> Callable[[Connection], int]:
    """Counting the stored readings (of a range of seq, when given)."""
    return lambda conn: count_readings(conn, min_seq=min_seq, below_seq=below_seq)[0]


def _distinct(min_seq: int | None = None, below_seq: int | None = None) -> Callable[[Connection], int]:
    """Counting the distinct readings stored (of a range of seq, when given)."""
    return lambda conn: count_readings(conn, min_seq=min_seq, below_seq=below_seq)[1]


def _wait(url: str, how: Callable[[Connection], int], n: int, timeout_s: float, gw: _Gateway) -> int:
    deadline = time.monotonic() + timeout_s
    got = _count(url, how)
    while got < n and time.monotonic() < deadline:
        gw.check()
        time.sleep(0.2)
        got = _count(url, how)
    return got


def _poison_phase(url: str, ep: Endpoints, gw: _Gateway, good_n: int) -> dict[str, Any]:
    with connect(url, autocommit=True) as conn:
        cabinet, cab_lamp = first_lamp_on_a_cabinet(conn) or ("", "")
        lamps = [(i, d) for i, d, _ in lamps_listed(conn, good_n)]
        add_readings_check(conn, DB_CONSTRAINT, "power_w < 4000")
        others = [d for d in district_codes(conn) if d != lamps[0][1]]
    other = others[0] if others else lamps[0][1]
    now = int(time.time() * 1000)
    poison = poison_messages(now, lamps[0][0], lamps[0][1], cabinet, cab_lamp, other)
    pub = RawPublisher(ep.as_("lamplighter-headend"), "bench-faults-poison")
    for _, topic, payload in poison:
        pub.publish(topic, payload)
    good = [
        (
            device_topic(d, "lamp", lamp, "state").encode(),
            json.dumps({"ts": now + i, "seq": 1_000 + i, "on": True, "dim": 100, "faults": []}).encode(),
        )
        for i, (lamp, d) in enumerate(lamps)
    ]
    pub.publish_batch(good)
    pub.close()
    t0 = time.monotonic()
    stored = _wait(url, _stored(min_seq=1000), len(good), 30, gw)
    stored_in = time.monotonic() - t0
    time.sleep(1.0)
    with connect(url, autocommit=True) as conn:
        got = Counter(quarantine_reasons(conn))
        drop_readings_check(conn, DB_CONSTRAINT)
        empty_readings(conn)
    want = Counter(reason for reason, _, _ in poison)
    return {
        "poison_classes": len(poison),
        "poison_quarantined_as_expected": sum((got & want).values()),
        "good_published": len(good),
        "good_stored": stored,
        "good_stored_in_s": round(stored_in, 2),
        "gateway_alive_after_poison": gw.alive(),
    }


def _sigkill_phase(url: str, ep: Endpoints, gw: _Gateway, messages: int, kills: int) -> dict[str, Any]:
    with connect(url) as conn:
        ids = lamps_listed(conn)
    result: dict[str, Any] = {}

    def publish() -> None:
        published, seconds, _ = run_publishers(ep.as_("lamplighter-headend"), ids, messages, 2, "faults")
        result.update(published=published, publish_s=seconds)

    rng = random.Random(7)
    marks = sorted(rng.uniform(0.03, 0.9) * messages for _ in range(kills))
    sender = threading.Thread(target=publish)
    sender.start()
    done = 0
    for mark in marks:
        while _count(url, _stored()) < mark and sender.is_alive():
            gw.check()
            time.sleep(0.05)
        gw.kill()
        done += 1
        print(f"  SIGKILL {done} of {kills} at {int(mark):,} readings stored; starting the gateway again", flush=True)
        gw.start()
    sender.join()
    published = int(result.get("published", 0))
    _wait(url, _stored(), published, 300, gw)
    time.sleep(1.0)
    rows, distinct = _count(url, _stored()), _count(url, _distinct())
    return {
        "sigkill_runs": done,
        "sigkill_published": published,
        "sigkill_lost": published - distinct,
        "sigkill_duplicated": rows - distinct,
    }


def _broker_phase(url: str, ep: Endpoints, gw: _Gateway, settings: Settings, n: int) -> dict[str, Any]:
    with connect(url, autocommit=True) as conn:
        empty_readings(conn)
        ids = [(i, d) for i, d, _ in lamps_listed(conn, 1000)]
    gw.stop()
    now = int(time.time() * 1000)
    msgs = [
        (
            device_topic(ids[i % len(ids)][1], "lamp", ids[i % len(ids)][0], "state").encode(),
            json.dumps(
                {"ts": now + i // len(ids), "seq": 5_000_000 + i, "on": True, "dim": 100, "faults": []}
            ).encode(),
        )
        for i in range(n)
    ]
    pub = RawPublisher(ep.as_("lamplighter-headend"), "bench-faults-broker")
    pub.publish_batch(msgs)
    pub.close()
    pg_port, mqtt_port = private_ports(settings, "bench")
    PrivateServices(Path(settings.run_dir) / "bench", pg_port=pg_port, mqtt_port=mqtt_port).restart_mosquitto()
    gw.start()
    # Only this phase's readings: late redeliveries of the SIGKILL stream may land too.
    stored = _wait(url, _stored(min_seq=5_000_000), n, 60, gw)
    time.sleep(1.0)
    distinct = _count(url, _distinct(min_seq=5_000_000))
    return {"broker_restart_published": n, "broker_restart_lost": n - distinct, "broker_restart_stored": stored}


async def _viewers(base: str, tokens: list[str], streams: int) -> dict[str, Any]:
    statuses: Counter[int] = Counter()
    limits = httpx2.Limits(max_connections=streams + 20, max_keepalive_connections=streams + 20)
    headers = {"Authorization": f"Bearer {tokens[0]}"}
    async with httpx2.AsyncClient(base_url=base, timeout=30, limits=limits, headers=headers) as http:
        opened = 0
        ready = asyncio.Event()

        async def follow(i: int) -> None:
            nonlocal opened
            mine = {"Authorization": f"Bearer {tokens[i % len(tokens)]}"}
            async with http.stream("GET", "/api/v1/tickets/events", headers=mine) as r:
                statuses[r.status_code] += 1
                if r.status_code != 200:
                    return
                async for _ in r.aiter_lines():
                    opened += 1
                    if opened >= streams:
                        ready.set()
                    await asyncio.sleep(3600)

        tasks = [asyncio.create_task(follow(i)) for i in range(streams)]
        try:
            await asyncio.wait_for(ready.wait(), 60)
            latencies = []
            for _ in range(20):
                for path in ("/api/v1/lighting-rate", "/api/v1/tickets", "/api/v1/health"):
                    t0 = time.perf_counter()
                    r = await http.get(path)
                    latencies.append((time.perf_counter() - t0) * 1000)
                    statuses[r.status_code] += 1
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "stream_clients": opened,
        "api_errors_5xx": sum(n for code, n in statuses.items() if code >= 500),
        "api_calls_max_ms_with_streams": round(max(latencies), 1),
    }


def _issue28_phase(url: str, ep: Endpoints, gw: _Gateway, base: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with connect(url, autocommit=True) as conn:
        empty_readings(conn)
        singles = [(i, d) for i, d, _ in lamps_listed(conn, 150, single=True)]
        tickets_before = newest_ticket_id(conn)
    pub = RawPublisher(ep.as_("lamplighter-headend"), "bench-faults-28")
    now = int(time.time() * 1000)

    def report(ts: int, seq: int, faults: list[str]) -> bytes:
        dark = "lamp_failure" in faults
        body = {"ts": ts, "seq": seq, "on": True, "dim": 100, "power_w": 0.0 if dark else 95.0, "faults": faults}
        return json.dumps(body).encode()

    # A leak reported and cleared 50 ms later, by 50 lamps; 50 lamps' backlogs of six reports five minutes apart
    # with the third and fourth failing, each uploaded at once.
    cleared, backlogs = singles[:50], singles[50:100]
    msgs = []
    for lamp, d in cleared:
        topic = device_topic(d, "lamp", lamp, "state").encode()
        msgs += [(topic, report(now, 10, ["leakage_current"])), (topic, report(now + 50, 11, []))]
    for lamp, d in backlogs:
        topic = device_topic(d, "lamp", lamp, "state").encode()
        first = now - 25 * 60_000
        msgs += [
            (topic, report(first + k * 300_000, 20 + k, ["lamp_failure"] if k in (2, 3) else [])) for k in range(6)
        ]
    pub.publish_batch(msgs)
    _wait(url, _stored(), len(msgs), 60, gw)
    time.sleep(3.0)  # the rules judge each batch once it is committed

    def ticketed(lamps: list[Any], fault: str) -> int:
        with connect(url) as conn:
            return assets_ticketed_since(conn, tickets_before, fault, [lp for lp, _ in lamps])

    out["p1_cleared_sent"] = len(cleared)
    out["p1_missed"] = len(cleared) - ticketed(cleared, "leakage_current")
    out["backlogs_sent"] = len(backlogs)
    out["backlog_missed"] = len(backlogs) - ticketed(backlogs, "lamp_failure")

    # The database read-only for 15 s while 20 lamps send 200 reports.
    with connect(url, autocommit=True) as conn:
        empty_readings(conn)
        name = conn.info.dbname
    stream = singles[100:120]
    assert ep.admin_url is not None  # the bench's own PostgreSQL
    with connect(ep.admin_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    started = time.monotonic()
    for k in range(200):
        lamp, d = stream[k % 20]
        pub.publish(device_topic(d, "lamp", lamp, "state"), report(now + 1000 + k, 9_000_000 + k, []))
        time.sleep(0.05)
    time.sleep(max(0.0, 15.0 - (time.monotonic() - started)))
    with connect(ep.admin_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    mine = {"min_seq": 9_000_000, "below_seq": 9_000_200}  # late redeliveries of earlier phases land too
    _wait(url, _stored(**mine), 200, 60, gw)
    time.sleep(1.0)
    out["readonly_sent"] = 200
    out["readonly_lost"] = 200 - _count(url, _distinct(**mine))
    out["readonly_duplicated"] = _count(url, _stored(**mine)) - 200 + out["readonly_lost"]
    out["readonly_quarantined"] = _count(url, lambda conn: sum(quarantine_reasons(conn).values()))
    pub.close()

    # A notification larger than the broker takes, to a crew on MQTT.
    connects = gw.link_connects
    with connect(url, autocommit=True) as conn:
        lamp, d = singles[120]
        save_crew(conn, Crew(id="bench-big", name="bench crew", districts=[d], mqtt=True))
        at = dt.datetime.now(dt.UTC)
        tid = open_ticket(
            conn, priority="P3", fault="lamp_failure", asset_type="lamp", asset_id=lamp, district=d,
            source="device", first_seen=at, now=at,
        ).ticket_id  # fmt: skip
        # A notification built to be larger than the broker takes (notes are limited; a bug or a future field
        # need not be), queued for the crew's MQTT channel as the ticket service queues one.
        key = queue_notification(conn, tid, "bench-big", "mqtt", {"padding": "x" * 2 * 1048576})

    def dead(conn: Connection) -> int:
        return int(dead_lettered(conn, key))

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _count(url, dead):
        time.sleep(0.5)
    out["oversized_dead_lettered"] = _count(url, dead)
    out["link_drops"] = gw.link_connects - connects

    # A NaN stream period and 50 concurrent wrong logins, while /lighting-rate is read.
    with connect(url, autocommit=True) as conn:
        _, token = add_user(conn, "bench-faults-28", "viewer")
        add_user(conn, "bench-faults-login", "viewer", password="a-long-password-1")
    out.update(asyncio.run(_callers(base, token)))
    return out


async def _callers(base: str, token: str) -> dict[str, Any]:
    viewer = {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(base_url=base, timeout=30, limits=httpx2.Limits(max_connections=80)) as http:
        nan = await http.get("/api/v1/overview/stream", params={"every_s": "nan"}, headers=viewer)
        for _ in range(3):  # the first calls of a fresh API compute the city's breakdown: not the logins' doing
            await http.get("/api/v1/lighting-rate", headers=viewer)
        took: list[float] = []
        stop = asyncio.Event()

        async def read() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                await http.get("/api/v1/lighting-rate", headers=viewer)
                took.append((time.perf_counter() - t0) * 1000)
                await asyncio.sleep(0.02)

        reader = asyncio.create_task(read())
        await asyncio.sleep(0.3)
        body = {"name": "bench-faults-login", "password": "wrong-password"}
        answers = await asyncio.gather(*(http.post("/api/v1/login", json=body) for _ in range(50)))
        await asyncio.sleep(0.3)
        stop.set()
        await reader
    took.sort()
    return {
        "nan_period_status": nan.status_code,
        "login_statuses": dict(sorted(Counter(r.status_code for r in answers).items())),
        "login_rate_p99_ms": round(took[int(len(took) * 0.99)], 1) if took else None,
        "login_rate_p50_ms": round(took[len(took) // 2], 1) if took else None,
        "login_rate_reads": len(took),
    }


def run_faults_bench(settings: Settings, *, lamps: int, messages: int, kills: int, streams: int) -> int:
    out: dict[str, Any] = {"lamps": lamps}
    with bench_city(settings, lamps) as ep:
        url = (
            ep.schema_url
        )  # the harness adds a constraint and empties tables: the owner's work (the gateway's role may not)
        env = {
            **os.environ,
            **ep.env(),
            "LAMPLIGHTER_GATEWAY_CLIENT_ID": _CLIENT,
            "LAMPLIGHTER_METRICS_PORT": "0",
            "LAMPLIGHTER_API_PORT": str(_API_PORT),
        }
        print(f"bench faults: {lamps:,} lamps; `lamplighter gateway` as a process", flush=True)
        gw = _Gateway(env)
        try:
            print("1. poison messages, then healthy reports", flush=True)
            out.update(_poison_phase(url, ep, gw, 1000))
            print(f"2. {kills} SIGKILLs of the gateway during a {messages:,}-message stream", flush=True)
            out.update(_sigkill_phase(url, ep, gw, messages, kills))
            print("3. the broker restarted with 20,000 readings queued for a stopped gateway", flush=True)
            out.update(_broker_phase(url, ep, gw, settings, 20_000))
            print(f"4. {streams} live streams open on `lamplighter api`", flush=True)
            with connect(url, autocommit=True) as conn:
                tokens = [add_user(conn, f"bench-faults-viewer-{k}", "viewer")[1] for k in range(streams // 16 + 1)]
            with lamplighter_process(["api"], env, ready="Application startup complete"):
                out.update(asyncio.run(_viewers(f"http://127.0.0.1:{_API_PORT}", tokens, streams)))
                print(
                    "5. a P1 cleared within a batch, backlogs, the database read-only for 15 s, an oversized",
                    flush=True,
                )
                print("   notification, a NaN stream period, 50 concurrent wrong logins", flush=True)
                out.update(_issue28_phase(url, ep, gw, f"http://127.0.0.1:{_API_PORT}"))
            gw.check()
        finally:
            gw.stop()
        out["gateway_exits"] = len(gw.exits)
    rows = [
        (
            "poison classes sent / quarantined with the expected reason",
            "poison_classes",
            "poison_quarantined_as_expected",
        ),
        ("good reports published / stored after the poison", "good_published", "good_stored"),
        ("gateway exits of its own", "gateway_exits", None),
        ("SIGKILLs / readings published", "sigkill_runs", "sigkill_published"),
        ("readings lost / duplicated across the kills", "sigkill_lost", "sigkill_duplicated"),
        ("readings lost across the broker restart", "broker_restart_lost", None),
        ("live streams open / API answers 5xx meanwhile", "stream_clients", "api_errors_5xx"),
        ("P1s reported and cleared 50 ms later / missed", "p1_cleared_sent", "p1_missed"),
        ("backlogs with two failing reports / missed", "backlogs_sent", "backlog_missed"),
        ("readings sent while read-only / lost", "readonly_sent", "readonly_lost"),
        ("... duplicated / quarantined", "readonly_duplicated", "readonly_quarantined"),
        ("oversized notification dead-lettered / link drops", "oversized_dead_lettered", "link_drops"),
        ("stream period NaN: status", "nan_period_status", None),
        ("50 wrong logins: statuses / lighting-rate p99 ms", "login_statuses", "login_rate_p99_ms"),
    ]
    for label, a, b in rows:
        value = f"{out.get(a)}" + (f" / {out.get(b)}" if b else "")
        print(f"{label:64} {value:>20}")
    print(json.dumps(out))
    return 0

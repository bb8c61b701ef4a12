"""`lamplighter bench api`: the control room's two busiest calls, `/lighting-rate` and `/tickets`, timed while the
gateway ingests at full speed.

Private broker and PostgreSQL with a generated city and a few hundred open tickets; `lamplighter gateway` and
`lamplighter api` as separate processes, the way a city runs them; publisher processes blasting lamp reports
through the broker. The same requests are timed first with nothing else running and then from the start of
the blast until the gateway has committed all of it, so the two sets of figures come from one run on one
machine. The blast runs twice: with the gateway alone, then with the API process following the fleet and
`--clients` clients asking for both calls every `--every` seconds; the ratio of the two committed rates is what
viewers cost ingest. Prints a table and, as its last line, one JSON object. Asserts nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from typing import Any

import httpx2
import numpy as np

from alerts.crews import Crew, save_crew
from alerts.tickets import open_ticket
from api.auth import add_user
from bench.ingest import run_publishers
from inventory.queries import lamps_listed
from kernel.database import connect
from lamplighter.config import Settings
from lamplighter.runtime import bench_city
from lamplighter.simproc import lamplighter_process
from seeds.generator import DISTRICTS

__all__ = ["run_api_bench"]

_API_PORT = 18081
_METRICS_PORT = 9120
_PATHS = ("/api/v1/lighting-rate?group_by=district", "/api/v1/tickets?limit=100")


def _tickets(url: str, n: int) -> None:
    now = dt.datetime.now(dt.UTC)
    with connect(url, autocommit=True) as conn:
        for d in DISTRICTS:
            save_crew(conn, Crew(id=f"{d.code}-crew", name=f"{d.name_en} crew", districts=[d.code], mqtt=False))
        lamps = lamps_listed(conn, n)
        for i, (lamp, district, _) in enumerate(lamps):
            open_ticket(
                conn,
                priority=("P1", "P2", "P3", "P4")[i % 4],
                fault="lamp_failure",
                asset_type="lamp",
                asset_id=lamp,
                district=district,
                source="backend",
                first_seen=now,
                now=now,
            )


def _time(
    client: httpx2.Client, stop: threading.Event | None, rounds: int, every_s: float = 0.0
) -> dict[str, list[float]]:
    """Each path in turn until `stop` is set (or `rounds` rounds), a round every `every_s` at most: milliseconds
    per request."""
    out: dict[str, list[float]] = {p: [] for p in _PATHS}
    i = 0
    while (stop is None and i < rounds) or (stop is not None and not stop.is_set()):
        started = time.perf_counter()
        for path in _PATHS:
            t0 = time.perf_counter()
            r = client.get(path)
            out[path].append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200:
                raise RuntimeError(f"GET {path}: {r.status_code} {r.text[:200]}")
        i += 1
        rest = every_s - (time.perf_counter() - started)
        if rest > 0 and stop is not None:
            stop.wait(rest)
    return out


def _ingest(ep: Any, ids: list[Any], messages: int, publishers: int, tag: str) -> tuple[int, float, float]:
    """Publish `messages` and wait until the gateway committed them: (published, publish seconds, committed per
    second from the first message to the last committed)."""
    written0, t0 = _written(), time.monotonic()
    published, seconds, _ = run_publishers(ep.as_("lamplighter-headend"), ids, messages, publishers, tag)
    # The broker holds what the gateway has not taken yet: wait until it is all committed.
    deadline = time.monotonic() + 300
    while _written() - written0 < published and time.monotonic() < deadline:
        time.sleep(0.1)
    return published, seconds, (_written() - written0) / (time.monotonic() - t0)


def _written() -> float:
    """Lamp readings the gateway has committed, from its Prometheus counters."""
    text = httpx2.get(f"http://127.0.0.1:{_METRICS_PORT}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith('lamplighter_gateway_readings_written_total{kind="lamp"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if values else float("nan")


def run_api_bench(
    settings: Settings, *, lamps: int, messages: int, publishers: int, clients: int = 20, every_s: float = 1.0
) -> int:
    with bench_city(settings, lamps) as ep:
        _tickets(ep.database_url, 500)
        with connect(ep.database_url, autocommit=True) as conn:
            _, token = add_user(conn, "bench-viewer", "viewer")
            ids = lamps_listed(conn)
        env = {
            **os.environ,
            **ep.env(),
            "LAMPLIGHTER_GATEWAY_CLIENT_ID": "bench-api-gateway",
            "LAMPLIGHTER_METRICS_PORT": str(_METRICS_PORT),
            "LAMPLIGHTER_API_PORT": str(_API_PORT),
        }
        print(
            f"bench api: {lamps:,} lamps, 500 open tickets; `lamplighter gateway`, then `lamplighter api` with "
            f"{clients} clients each asking for both calls every {every_s:g} s",
            flush=True,
        )
        with lamplighter_process(["gateway"], env, ready="subscribed to"):
            # 1. Ingest alone: the gateway, no API process.
            _, _, alone = _ingest(ep, ids, messages, publishers, "alone")
            print(f"ingest alone: {alone:,.0f} lamp readings/s committed", flush=True)
            with lamplighter_process(["api"], env, ready="Application startup complete"):
                headers = {"Authorization": f"Bearer {token}"}
                base = f"http://127.0.0.1:{_API_PORT}"
                pool = [httpx2.Client(base_url=base, headers=headers, timeout=30) for _ in range(clients)]
                try:
                    _time(pool[0], None, 20)  # warm-up: the engine's first breakdown, connections in the pools
                    idle = _time(pool[0], None, 300)
                    print("idle: done; now the same load again, with the clients polling", flush=True)
                    stop = threading.Event()
                    results: list[dict[str, list[float]]] = []

                    def poll(client: httpx2.Client, offset_s: float) -> None:
                        # Screens are not in step: each begins its rounds at its own point of the period. In
                        # lockstep, the 40 calls of a round arrive together and queue behind one another.
                        if not stop.wait(offset_s):
                            results.append(_time(client, stop, 0, every_s))

                    threads = [
                        threading.Thread(target=poll, args=(c, i * every_s / clients)) for i, c in enumerate(pool)
                    ]
                    for t in threads:
                        t.start()
                    time.sleep(every_s)  # every client has begun
                    published, seconds, viewed = _ingest(ep, ids, messages, publishers, "viewed")
                    stop.set()
                    for t in threads:
                        t.join(60)
                finally:
                    for c in pool:
                        c.close()
    loaded = {p: [ms for r in results for ms in r[p]] for p in _PATHS}
    result: dict[str, Any] = {
        "lamps": lamps,
        "clients": clients,
        "poll_every_s": every_s,
        "published": published,
        "publish_per_s": round(published / seconds),
        "committed_per_s_alone": round(alone),
        "committed_per_s_with_api": round(viewed),
        "ratio_with_api": round(viewed / alone, 3) if alone else None,
    }
    print(f"{'committed, ingest alone':44} {alone:>10,.0f} lamp readings/s")
    print(f"{'committed, API and clients polling':44} {viewed:>10,.0f} lamp readings/s")
    print(f"{'ratio':44} {result['ratio_with_api']:>10}")
    print(f"{'':44} {'idle p50':>9} {'idle p99':>9} {'load p50':>9} {'load p99':>9} {'n load':>7}")
    for path in _PATHS:
        name = path.split("?")[0].rsplit("/", 1)[-1]
        row = {
            "idle_p50_ms": _pct(idle[path], 50),
            "idle_p99_ms": _pct(idle[path], 99),
            "load_p50_ms": _pct(loaded.get(path, []), 50),
            "load_p99_ms": _pct(loaded.get(path, []), 99),
            "load_requests": len(loaded.get(path, [])),
        }
        result[name] = row
        print(
            f"{'GET ' + path:44} {row['idle_p50_ms']:>9} {row['idle_p99_ms']:>9} {row['load_p50_ms']:>9} "
            f"{row['load_p99_ms']:>9} {row['load_requests']:>7}"
        )
    print(json.dumps(result))
    return 0

"""A gateway for a test: in this process (`gateway`) or as its own `lamplighter gateway` (`GatewayChild`); a
seeded city, readings published as devices do, and waiting for what lands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import psycopg

from lamplighter.config import Settings
from lamplighter.runtime import Endpoints, GatewayProcess
from lamplighter.simproc import stop_process
from simulator.fleet import FleetSpec
from simulator.wire import RawPublisher
from tests.support.factories import load_generated


def seed(url: str, lamps: int) -> None:
    """The generated city of `lamps` (seed 7) in the database at `url` (`tests.support.factories.seed_city`)."""
    load_generated(url, lamps, seed=7)


def seeded_spec(url: str, lamps: int) -> FleetSpec:
    seed(url, lamps)
    with psycopg.connect(url) as conn:
        return FleetSpec.from_db(conn)


def count(url: str, sql: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
        return int(row[0]) if row else 0


async def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(pred):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def gateway(ep: Endpoints, client_id: str, **kwargs: Any) -> AsyncIterator[GatewayProcess]:
    settings = Settings(
        database_url=ep.database_url, mqtt_url=ep.mqtt_url, gateway_client_id=client_id, flush_interval_s=0.1
    )
    proc = GatewayProcess.start(settings, ep, **kwargs)
    task = asyncio.create_task(proc.run())
    await asyncio.wait_for(proc.subscriber.connected.wait(), 10)
    try:
        yield proc
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def publish_readings(
    ep: Endpoints, spec_ids: list[tuple[str, str]], n: int, client: str, *, bad_every: int = 0
) -> tuple[int, Counter[str]]:
    """Publish n good single-lamp readings (and a bad one after every `bad_every`); returns (good, bad reasons)."""
    now = int(time.time() * 1000)
    pub = RawPublisher(ep.as_("lamplighter-headend"), client)
    bad = Counter[str]()
    bad_kinds = [
        ("not_json", lambda lamp: b"{not json"),
        ("missing_field", lambda lamp: json.dumps({"ts": now, "on": True, "dim": 1, "faults": []}).encode()),
        ("wrong_type", lambda lamp: json.dumps({"ts": now, "seq": 1, "on": 1, "dim": 1, "faults": []}).encode()),
        ("out_of_range", lambda lamp: json.dumps({"ts": now, "seq": 1, "on": True, "dim": 999, "faults": []}).encode()),
        ("not_object", lambda lamp: b"[]"),
        ("too_large", lambda lamp: b" " * 5000),
        (
            "ts_in_future",
            lambda lamp: json.dumps({"ts": now + 3_600_000, "seq": 1, "on": True, "dim": 1, "faults": []}).encode(),
        ),
    ]
    msgs: list[tuple[bytes, bytes]] = []
    for i in range(n):
        lamp_id, district = spec_ids[i % len(spec_ids)]
        seq = i // len(spec_ids)
        topic = f"sl/{district}/lamp/{lamp_id}/state".encode()
        msgs.append(
            (
                topic,
                json.dumps(
                    {"ts": now + seq, "seq": seq, "on": True, "dim": 100, "power_w": 100.0, "faults": []}
                ).encode(),
            )
        )
        if bad_every and i % bad_every == bad_every - 1:
            reason, make = bad_kinds[(i // bad_every) % len(bad_kinds)]
            bad[reason] += 1
            msgs.append((topic, make(lamp_id)))
        if len(msgs) >= 2000:
            pub.publish_batch(msgs)
            msgs = []
    if msgs:
        pub.publish_batch(msgs)
    pub.close()
    return n, bad


def lamp_ids(url: str, limit: int) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [(r[0], r[1]) for r in conn.execute("SELECT id, district FROM lamps ORDER BY no LIMIT %s", (limit,))]


class GatewayChild:
    """`lamplighter gateway` as its own process, as in production; its log kept."""

    def __init__(
        self, ep: Endpoints, client_id: str, *, args: Sequence[str] = (), env: Mapping[str, str] | None = None
    ) -> None:
        full_env = {
            **os.environ,
            **ep.env(),
            "LAMPLIGHTER_GATEWAY_CLIENT_ID": client_id,
            "LAMPLIGHTER_METRICS_PORT": "0",
            **(env or {}),
        }
        self.subscribed = threading.Event()
        self.log: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lamplighter", "gateway", *args],
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.decode(errors="replace"))
            if b"subscribed to" in line:
                self.subscribed.set()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(15)
        self._close_log()

    def stop(self) -> None:
        stop_process(self.proc, "the gateway", grace_s=15.0, last_lines=self.log[-10:])
        self._close_log()

    def _close_log(self) -> None:
        self._reader.join(5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()

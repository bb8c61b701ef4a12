"""A few days of a small city's readings, as devices send them, for the compact history's tests."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from gateway.codec import Message, decode_batch
from inventory.registry import load_registry
from kernel.database import Database
from lamplighter.runtime import Endpoints
from telemetry.store import TelemetryStore

TODAY = datetime.now(UTC).date()

OLD_DAYS = [TODAY - timedelta(days=4), TODAY - timedelta(days=3)]  # compacted (older than 2 days)

KEPT_DAYS = [TODAY]  # stays raw

STEP = timedelta(minutes=15)


def city_report(rng: random.Random, ts_ms: int, seq: int) -> bytes:
    """A protocol state report with the variety a city's devices send: missing fields, odd floats, faults."""
    on = rng.random() < 0.6
    body: dict[str, Any] = {"ts": ts_ms, "seq": seq, "on": on, "dim": rng.choice([0, 50, 80, 100]), "faults": []}
    if rng.random() < 0.9:
        body["power_w"] = round(rng.uniform(80, 160), 1) if on else 0.0
    if rng.random() < 0.8:
        body["voltage_v"] = round(rng.gauss(220, 2), 1)
        body["current_a"] = round(rng.uniform(0.3, 0.8), 3)
    if rng.random() < 0.5:
        body["power_factor"] = rng.choice([0.95, 0.9, 0.987654321])
    if rng.random() < 0.9:
        body["energy_wh"] = 1_000_000 + ts_ms // 60_000
    if rng.random() < 0.7:
        body["temp_c"] = round(rng.gauss(5, 3), 2)
    if rng.random() < 0.2:
        body["lux"] = rng.uniform(0, 60)  # full precision: kept as its float32 bits
    if rng.random() < 0.7:
        body["rssi_dbm"] = rng.randint(-110, -40)
    if rng.random() < 0.5:
        body["mode"] = "manual" if rng.random() < 0.1 else "auto"
    if rng.random() < 0.05:
        body["faults"] = rng.sample(["lamp_failure", "driver_failure", "leakage_current", "overvoltage"], 2)
    if rng.random() < 0.6:  # a D4i driver's counters and temperature; older controllers send none
        body["burn_h"] = 20_000 + ts_ms // 3_600_000 % 10_000
        body["starts"] = 4_000 + ts_ms // 86_400_000 % 1_000
        body["driver_temp_c"] = round(rng.gauss(35, 8), 1)
    if rng.random() < 0.3:
        body["leakage_ma"] = rng.uniform(0, 12)  # full precision
    return json.dumps(body).encode()


def city_messages(endpoints: Endpoints, lamps: int, per_lamp_step: timedelta = STEP) -> list[Message]:
    """Readings for the first `lamps` Chengdong lamps on the old days and today, as the gateway receives them."""
    rng = random.Random(7)
    out: list[Message] = []
    for n in range(1, lamps + 1):
        lamp = f"XN-CD-{n:06d}"
        for seq, ts in enumerate(report_times(rng, per_lamp_step)):
            out.append(Message(f"sl/cd/lamp/{lamp}/state", city_report(rng, ts, seq), ts + rng.randint(5, 900)))
    return out


def report_times(rng: random.Random, step: timedelta) -> Iterator[int]:
    """A device's report times (ms) every `step` on the old days and today, up to a minute ago."""
    for day in OLD_DAYS + KEPT_DAYS:
        t = datetime(day.year, day.month, day.day, tzinfo=UTC)
        end = min(t + timedelta(days=1), datetime.now(UTC) - timedelta(minutes=1))
        while t < end:
            yield int(t.timestamp() * 1000) + rng.randint(0, 999)
            t += step


async def ingest(endpoints: Endpoints, messages: list[Message]) -> None:
    with psycopg.connect(endpoints.database_url) as conn:
        registry = load_registry(conn)
    store = TelemetryStore(Database(endpoints.database_url))
    try:
        now = int(datetime.now(UTC).timestamp() * 1000)
        for i in range(0, len(messages), 5000):
            batch = decode_batch(messages[i : i + 5000], registry, now_ms=now, retention_ms=10 * 86_400_000)
            assert not batch.rejects, batch.rejects[:3]
            await store.write(batch)
    finally:
        await store.close()


def compact(endpoints: Endpoints, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, **endpoints.env()}
    return subprocess.Popen(
        [sys.executable, "-m", "lamplighter", "compact", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def compacted(endpoints: Endpoints, *args: str) -> str:
    return command(endpoints, "compact", *args)


def command(endpoints: Endpoints, *argv: str) -> str:
    """`lamplighter` run with `argv` against these services, to its end; its output."""
    run = subprocess.run(
        [sys.executable, "-m", "lamplighter", *argv],
        env={**os.environ, **endpoints.env()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)

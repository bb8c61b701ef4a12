"""The minutes before the fleet could have reported once have no lighting-rate data: a fresh city's first minutes
are not a night's minimum. Pure: no database is touched while warming up (the sampler is given none)."""

from __future__ import annotations

import asyncio
from typing import Any

from kernel.clock import Clock
from lighting.engine import LightingEngine
from lighting.sampler import Sampler
from telemetry.models import Batch, LampRows
from tests.support.rates import NIGHT, fleet, ms

T0 = ms(NIGHT)


def _batch(slots: list[int], ts: int) -> Batch:
    rows = LampRows()
    for seq, slot in enumerate(slots):
        rows.ts.append(ts)
        rows.lamp_no.append(slot + 1)
        rows.seq.append(seq)
        rows.on.append(True)
        rows.dim.append(100)
        rows.power_w.append(95.0)
        for column in ("voltage_v", "current_a", "power_factor", "energy_wh", "temp_c", "lux", "rssi_dbm", "mode"):
            getattr(rows, column).append(None)
        rows.faults.append([])
        rows.received_ms.append(ts)
    return Batch(lamps=rows, now_ms=ts)


def test_a_fresh_city_has_no_samples_until_every_lamp_could_have_reported() -> None:
    engine = LightingEngine(fleet([("arterial", 10)], interval_s=300), {})
    published: list[bytes] = []
    sampler = Sampler(engine, None, Clock(), publish=published.append)  # type: ignore[arg-type]

    def sample(at: int) -> Any:
        return asyncio.run(sampler.sample(at))

    sample(T0)  # nothing reported yet
    engine.on_batch(_batch([0, 1], T0 + 10_000))  # the first two lamps report
    b = sample(T0 + 60_000)
    assert b.city.due[0] == 10 and sampler.warm_up_skipped == 2 and len(published) == 2  # live figures still out
    assert sampler.warming_up(T0 + 10_000 + 300_000 + 59_000)
    assert not sampler.warming_up(T0 + 10_000 + 300_000 + 60_000)
    assert sampler.samples == 0


def test_an_engine_started_on_stored_states_is_not_warming_up() -> None:
    engine = LightingEngine(fleet([("arterial", 3)], interval_s=300), {})
    engine.on_batch(_batch([0, 1, 2], T0 - 3_600_000))  # reports from an hour ago, as a restart loads them
    sampler = Sampler(engine, None, Clock())  # type: ignore[arg-type]
    assert not sampler.warming_up(T0)

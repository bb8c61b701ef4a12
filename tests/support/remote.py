"""A city under remote control for a test: the gateway with its command engine and the API in this process, the
devices in a simulator process; and waiting from async tests."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from fastapi.testclient import TestClient

from api.app import create_app
from kernel.clock import Clock
from lamplighter.config import Settings
from lamplighter.runtime import Endpoints, GatewayProcess
from lamplighter.simproc import simulator_process
from simulator.commands import outcome_masks
from simulator.fleet import FleetSpec
from tests.support.auth import sign_in
from tests.support.factories import load_generated
from tests.support.services import clear_statuses, provision

CST = dt.timezone(dt.timedelta(hours=8))

NIGHT = dt.datetime(2026, 12, 1, 21, 0, tzinfo=CST)


@dataclass
class City:
    url: str
    api: TestClient
    gw: GatewayProcess
    spec: FleetSpec
    clock: Clock
    operator: str
    unreachable: npt.NDArray[np.bool_]  # the lamps the simulator never lets answer
    failing: npt.NDArray[np.bool_]  # the lamps whose devices refuse every command
    settings: Settings
    task: asyncio.Task[None]  # the gateway's
    sim: subprocess.Popen[str]  # the devices' process


@contextlib.asynccontextmanager
async def remote_city(
    endpoints: Endpoints,
    client_id: str,
    *,
    lamps: int,
    pace: float = 2000.0,
    unreachable: float = 0.0,
    failing: float = 0.0,
    ack_timeout_s: float = 2.0,
    per_device: bool = False,
) -> AsyncIterator[City]:
    """The gateway with its command engine and the API in this process; the devices in a simulator process
    (`per_device`: each device on its own connection with its own account)."""
    url = endpoints.database_url
    load_generated(url, lamps, seed=4)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE lamps SET report_interval_s = 3600")  # quiet reporting: commands are what is tested
        spec = FleetSpec.from_db(conn)
    if per_device:
        provision(endpoints)
    clock = Clock(start=NIGHT, speed=1.0)
    settings = Settings(
        database_url=url,
        mqtt_url=endpoints.mqtt_url,
        gateway_client_id=client_id,
        flush_interval_s=0.1,
        command_pace=pace,
        command_ack_timeout_s=ack_timeout_s,
        command_retries=2,
        dispatch=False,
    )
    gw = GatewayProcess.start(settings, endpoints, clock=clock)
    gw.commands.keep_send_times = True
    task = asyncio.create_task(gw.run())
    app = create_app(
        database_url=url,
        broker=endpoints.as_("lamplighter-api"),
        engine=gw.engine,
        clock=clock,
        command_pace=pace,
    )
    silent, refusing = outcome_masks(len(spec.lamp_id), unreachable=unreachable, failing=failing, seed=1)
    try:
        await asyncio.wait_for(gw.subscriber.connected.wait(), 10)
        with (
            simulator_process(
                endpoints,
                clock,
                client_id + "-sim",
                unreachable=unreachable,
                failing=failing,
                seed=1,
                per_device=per_device,
            ) as sim,
            TestClient(app) as api,
        ):
            operator = sign_in(api, url, "operator")
            yield City(url, api, gw, spec, clock, operator, silent, refusing, settings, task, sim)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if per_device:
            clear_statuses(endpoints, spec, client_id)


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """An API call from an async test, off the event loop the gateway runs on."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def until(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(pred)
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)

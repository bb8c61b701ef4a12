"""`lamplighter bench campaign`: a whole-city command at the default pace, through the broker to simulated devices.

Private broker and PostgreSQL; the gateway (with its command engine) runs in this process and the simulated
devices (obeying and acknowledging) in a simulator process beside it, as in a city. Measures the time from
submission until every lamp has acknowledged, the highest number of sends in any one second, and how much the
gateway's process grew while tracking the campaign. With `--gateways N` they all run (in this process, each with
its own connections and leases), one leads and sends; the commands the engines wrote and those the broker carried
(counted by a subscriber on every lamp's command topic) say whether anything was sent twice. Prints a table and,
as its last line, one JSON object. Asserts nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import threading
import time
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from commands.model import CommandRequest
from commands.queries import lamp_states
from commands.submit import submit
from inventory.queries import set_report_interval
from kernel.clock import Clock
from kernel.database import connect
from lamplighter.config import Settings
from lamplighter.runtime import GatewayProcess, bench_city
from lamplighter.simproc import simulator_process
from protocol.topics import CMD_FILTERS

__all__ = ["run_campaign_bench"]

_NIGHT = dt.datetime(2026, 12, 1, 21, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class _CommandCounter:
    """Every device command the broker carries (as the field receives them)."""

    def __init__(self, ep: Any) -> None:
        self.carried = 0
        self.ready = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-cmd-counter")
        self.client.on_connect = lambda c, *_: (c.subscribe(CMD_FILTERS[0], qos=1), None)[1]
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = self._on_message
        ep.as_("lamplighter-headend").setup_paho(self.client)
        self.client.connect(ep.mqtt_host, ep.mqtt_port)
        self.client.loop_start()

    def _on_message(self, *_: Any) -> None:
        self.carried += 1

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def _campaign(settings: Settings, ep: Any, lamps: int, gateways: int) -> dict[str, Any]:
    with connect(ep.database_url, autocommit=True) as conn:
        set_report_interval(conn, 3600)  # quiet devices: the commands are measured
    clock = Clock(start=_NIGHT, speed=1.0)
    gws = [
        GatewayProcess.start(dataclasses.replace(settings, gateway_instance=f"bench-gateway-{i}"), ep, clock=clock)
        for i in range(gateways)
    ]
    for g in gws:
        g.commands.keep_send_times = True
    tasks = [asyncio.create_task(g.run()) for g in gws]
    stack = contextlib.ExitStack()
    counter = _CommandCounter(ep)
    stack.callback(counter.close)
    try:
        for g in gws:
            await asyncio.wait_for(g.subscriber.connected.wait(), 30)
        deadline = time.monotonic() + 30
        while sum(g.leading for g in gws) != 1:
            if time.monotonic() > deadline:
                raise RuntimeError("no gateway took the lead within 30 s")
            await asyncio.sleep(0.1)
        gw = next(g for g in gws if g.leading)
        if not counter.ready.wait(10):
            raise RuntimeError("the command counter did not subscribe within 10 s")
        stack.enter_context(simulator_process(ep, clock, "bench-sim", interval_s=3600.0, ack_latency_s=0.05))
        await asyncio.sleep(1.0)
        rss_before = _rss_mb()
        req = CommandRequest(target={"all": True}, op="dim", level=60, reason="campaign benchmark")
        started = time.monotonic()
        with connect(ep.database_url, autocommit=True) as conn:
            cid = submit(
                conn,
                gw.engine.index,
                gw.engine.expected,
                req,
                actor="bench",
                now=clock.now(),
                pace=settings.command_pace,
            ).id
        stored = time.monotonic() - started
        rss_peak = rss_before
        acked_at = None
        counts: dict[str, int] = {}
        last_print = started
        finished = 0.0
        # The engine's own tally, read in memory: polling PostgreSQL from this loop would stall the gateway.
        while True:
            await asyncio.sleep(0.25)
            rss_peak = max(rss_peak, _rss_mb())
            campaign = gw.commands.campaigns.get(cid)
            now = time.monotonic()
            if campaign is None:  # not loaded yet, or finished and dropped by the engine
                finished = now - started
                if counts or finished > 30:
                    break
                continue
            counts = campaign.counts()
            if counts["acked"] == lamps and acked_at is None:
                acked_at = now - started
            if now - last_print >= 5:
                last_print = now
                print(
                    f"  {now - started:5.1f} s  sent {gw.commands.sent:>7,}  acked {counts['acked']:>7,}  "
                    f"awaiting an answer {counts['sent']:>6,}  expired {counts['expired']:,}",
                    flush=True,
                )
            if now - started > lamps / settings.command_pace * 3 + 120:
                break
        await asyncio.sleep(1.0)  # the engine's last flush
        with connect(ep.database_url, autocommit=True) as conn:
            counts = lamp_states(conn, cid)
        if acked_at is None and counts.get("acked", 0) == lamps:
            acked_at = finished  # the last answers came within the last poll (0.25 s)
        await asyncio.sleep(1.0)  # the counter's last deliveries
        times = np.sort(np.array([t for g in gws for t in g.commands.send_times]))
        published = sum(g.commands.sent for g in gws)
        per_second = int((np.searchsorted(times, times + 1.0) - np.arange(len(times))).max()) if len(times) else 0
    finally:
        stack.close()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return {
        "lamps": lamps,
        "gateways": gateways,
        "commands_published": published,
        "commands_carried": counter.carried,
        "pace_per_s": settings.command_pace,
        "max_sends_in_any_second": per_second,
        "acked": counts.get("acked", 0),
        "expired": counts.get("expired", 0),
        "failed": counts.get("failed", 0),
        "seconds_to_all_acked": None if acked_at is None else round(acked_at, 2),
        "seconds_to_store": round(stored, 2),
        "seconds_to_first_send": round(times[0] - started, 2) if len(times) else None,
        "seconds_to_last_send": round(times[-1] - started, 2) if len(times) else None,
        "pace_bound_s": round(lamps / settings.command_pace, 2),
        "tracker_rss_mb": round(rss_peak - rss_before, 1),
    }


def run_campaign_bench(settings: Settings, *, lamps: int, gateways: int = 1) -> int:
    with bench_city(settings, lamps) as ep:
        run_settings = Settings(
            database_url=ep.database_url,
            mqtt_url=ep.mqtt_url,
            mqtt_accounts=ep.accounts,
            dispatch=False,
            command_pace=settings.command_pace,
            gateway_client_id="bench-gateway",
        )
        print(
            f"bench campaign: dim all {lamps:,} lamps at {settings.command_pace:,.0f} commands/s, "
            f"{gateways} gateway{'s' if gateways > 1 else ''}",
            flush=True,
        )
        r = asyncio.run(_campaign(run_settings, ep, lamps, gateways))
    print(f"{'lamps acked / expired / failed':44} {r['acked']:>10,} / {r['expired']:,} / {r['failed']:,}")
    print(f"{'seconds until every lamp acked':44} {r['seconds_to_all_acked']!s:>10} (pace-bound {r['pace_bound_s']} s)")
    print(f"{'  of which storing the campaign':44} {r['seconds_to_store']!s:>10}")
    print(f"{'  first command sent':44} {r['seconds_to_first_send']!s:>10}")
    print(f"{'  last command sent':44} {r['seconds_to_last_send']!s:>10}")
    print(f"{'most commands sent in any one second':44} {r['max_sends_in_any_second']:>10,}")
    print(
        f"{'commands written by the engines / carried':44} {r['commands_published']:>10,} / {r['commands_carried']:,}"
    )
    print(f"{'process growth while tracking (RSS)':44} {r['tracker_rss_mb']:>10} MB")
    print(json.dumps(r))
    return 0

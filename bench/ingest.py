"""`lamplighter bench ingest`: publish lamp reports at full speed through a private broker into the gateway.

Each of `--runs` runs measures, one right after the other, (1) the broker's relay ceiling: the same publisher
processes and payloads to Mosquitto's own C subscriber (`mosquitto_sub -q 1`, every message counted), on a
district nobody else reads; (2) the same load through the gateways, committed to PostgreSQL. Broker, database,
gateways and publishers share this machine, so figures from different runs of a noisy machine differ; the ratio
of the two, taken within a run, is what says how close the gateway comes to what the broker can relay. Prints
a table and, as its last line, one JSON object with the medians. It measures, it asserts nothing.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from fieldnet.broker import Broker
from gateway.heartbeat import districts_held
from inventory.queries import lamps_listed
from inventory.registry import district_codes
from kernel.database import connect
from lamplighter.config import Settings
from lamplighter.runtime import bench_city
from protocol.topics import device_topic
from simulator.wire import RawPublisher, encode_varint
from telemetry.store import count_readings

__all__ = ["run_ingest_bench", "run_publishers"]

_TS_SLOT = b'"ts":0000000000000'  # patched with the send time, chunk by chunk, in one bytes.replace
_CHUNK = 2000
_METRICS_PORT = 9119
_RELAY_DISTRICT = "zz"  # a district code no inventory has: no gateway subscribes to it
_PROBE = b"RELAY-PROBE"

# A lamp to publish for: (id, district), or (id, district, rated watts) for a plausible power reading.
Lamp = tuple[Any, ...]


def _packets(lamps: list[Lamp], n: int, first_id: int) -> list[tuple[bytes, int]]:
    """Pre-encoded QoS 1 PUBLISH packets in chunks: (bytes, count). A lamp given as (id, district, rated watts)
    reports 97 % of its rating, as a healthy lamp at full output does (a fixed figure would make every lamp of
    another rating a power anomaly, and the benchmark a ticket storm)."""
    seqs = [0] * len(lamps)
    out: list[tuple[bytes, int]] = []
    parts: list[bytes] = []
    pid = first_id
    for i in range(n):
        k = i % len(lamps)
        lamp, district = lamps[k][0], lamps[k][1]
        watts = float(lamps[k][2]) * 0.97 if len(lamps[k]) > 2 else 148.2
        seq = seqs[k]
        seqs[k] += 1
        topic = device_topic(district, "lamp", lamp, "state").encode()
        payload = (
            b"{" + _TS_SLOT + b',"seq":%d,"on":true,"dim":100,"power_w":%.1f,"voltage_v":221.4,'
            b'"current_a":0.68,"power_factor":0.98,"energy_wh":123456,"temp_c":-12.5,"rssi_dbm":-87,'
            b'"mode":"auto","burn_h":21874,"starts":3306,"driver_temp_c":9,"faults":[]}' % (seq, watts)
        )
        body = len(topic).to_bytes(2, "big") + topic + pid.to_bytes(2, "big") + payload
        parts.append(b"\x32" + encode_varint(len(body)) + body)
        pid = pid % 65535 + 1
        if len(parts) == _CHUNK:
            out.append((b"".join(parts), len(parts)))
            parts = []
    if parts:
        out.append((b"".join(parts), len(parts)))
    return out


def _publisher(broker: Broker, name: str, lamps: list[Lamp], n: int, go: Any, q: Any) -> None:
    pub = RawPublisher(broker, name)
    chunks = _packets(lamps, n, pub.next_id)
    q.put(("ready", name))
    go.wait()
    t0 = time.perf_counter()
    for buf, count in chunks:
        stamp = b'"ts":%13d' % (time.time_ns() // 1_000_000)
        pub.send_prebuilt(buf.replace(_TS_SLOT, stamp), count)
    pub.drain(120)
    q.put(("done", name, pub.sent, time.perf_counter() - t0))
    pub.close()


def run_publishers(broker: Broker, lamps: list[Lamp], messages: int, procs: int, tag: str) -> tuple[int, float, float]:
    """Returns (published, seconds, start time); each process owns a disjoint set of lamps."""
    ctx = mp.get_context("fork")
    go, q = ctx.Event(), ctx.Queue()
    share = [lamps[i::procs] for i in range(procs)]
    ps = [
        ctx.Process(target=_publisher, args=(broker, f"bench-{tag}-{i}", share[i], messages // procs, go, q))
        for i in range(procs)
    ]
    for p in ps:
        p.start()
    for _ in ps:
        q.get(timeout=300)
    start = time.time()
    t0 = time.perf_counter()
    go.set()
    sent = 0
    for _ in ps:
        msg = q.get(timeout=600)
        sent += msg[2]
    elapsed = time.perf_counter() - t0
    for p in ps:
        p.join(30)
    return sent, elapsed, start


def _scrape(i: int = 0) -> dict[str, float]:
    """Gateway number `i`'s Prometheus metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{_METRICS_PORT + i}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^(lamplighter_gateway_\w+)(\{[^}]*\})? ([0-9.eE+-]+)$", line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def _proc_cpu_rss(pid: int) -> tuple[float, float]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    hwm = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return cpu, hwm


def _database_cpu(port: int) -> float:
    """CPU seconds of the PostgreSQL listening on `port`: its postmaster and every process it started (what has
    exited is not counted; the gateway's connections live through a run)."""
    procs: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        procs[int(entry)] = (ppid, cmd)
    master = next((pid for pid, (_, cmd) in procs.items() if "postgres" in cmd and f"-p {port}" in cmd), None)
    if master is None:
        return 0.0
    total = 0.0
    for pid, (ppid, _) in procs.items():
        if pid == master or ppid == master:
            with contextlib.suppress(OSError):
                total += _proc_cpu_rss(pid)[0]
    return total


def _start_gateways(ep: Any, n: int) -> list[tuple[subprocess.Popen[bytes], threading.Event]]:
    """`n` gateway processes, each with its own metrics port and name; the same role-named sessions, so they
    share the districts between them."""
    out = []
    for i in range(n):
        env = {
            **os.environ,
            **ep.env(),
            "LAMPLIGHTER_METRICS_PORT": str(_METRICS_PORT + i),
            "LAMPLIGHTER_GATEWAY_CLIENT_ID": "bench-gateway",
            "LAMPLIGHTER_GATEWAY_INSTANCE": f"bench-gateway-{i}",
        }
        gw = subprocess.Popen(
            [sys.executable, "-m", "lamplighter", "gateway"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        ready = threading.Event()

        def read_log(gw: subprocess.Popen[bytes] = gw, ready: threading.Event = ready) -> None:
            assert gw.stderr is not None
            for line in gw.stderr:
                if b"subscribed to" in line:
                    ready.set()
                if b"ERROR" in line:
                    sys.stderr.write(line.decode(errors="replace"))

        threading.Thread(target=read_log, daemon=True).start()
        out.append((gw, ready))
    return out


def _stop_gateways(gws: list[tuple[subprocess.Popen[bytes], threading.Event]]) -> None:
    """SIGTERM, and a kill (said) for one that has not stopped in 30 s."""
    for gw, _ in gws:
        gw.terminate()
    for gw, _ in gws:
        try:
            gw.wait(30)
        except subprocess.TimeoutExpired:
            print(f"gateway {gw.pid} did not stop within 30 s of SIGTERM: killed", file=sys.stderr, flush=True)
            gw.kill()
            gw.wait()
        if gw.stderr:
            gw.stderr.close()


def _wait_balanced(database_url: str, n: int, timeout_s: float = 120.0) -> list[list[str]]:
    """Until the `n` gateways hold every district between them, each its fair share; returns their districts."""
    deadline = time.monotonic() + timeout_s
    with connect(database_url, autocommit=True) as conn:
        every = set(district_codes(conn))
        share = -(-len(every) // n)
        while True:
            held = districts_held(conn, "bench-gateway-")
            union = {d for h in held for d in h}
            if len(held) == n and union == every and all(len(h) <= share for h in held):
                return held
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {n} gateways did not share the districts within {timeout_s:.0f} s: {held}")
            time.sleep(0.5)


def _written(n: int) -> float:
    return sum(_scrape(i).get('lamplighter_gateway_readings_written_total{kind="lamp"}', 0.0) for i in range(n))


class _RelaySubscriber:
    """`mosquitto_sub -q 1` (Mosquitto's own C client) on the relay topics, counting what it receives: the
    broker's relay ceiling for these publishers, with nothing of lamplighter's in the path."""

    def __init__(self, broker: Broker, topic_filter: str, client_id: str) -> None:
        binary = shutil.which("mosquitto_sub")
        if binary is None:
            raise RuntimeError("mosquitto_sub not found: install mosquitto-clients (make does it as root on Debian)")
        login = broker.login
        argv = [binary, "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", topic_filter, "-i", client_id]
        argv += ["-F", "%t"]  # one short line (the topic) per message
        if login is not None:
            argv += ["-u", login.username, "-P", login.password]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.count = 0  # messages of the run (probe lines not counted)
        self.probed = threading.Event()
        self.target = 0
        self.reached = threading.Event()
        self.reached_at = 0.0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, 1 << 20):
            probes = chunk.count(_PROBE)
            if probes:
                self.probed.set()
            self.count += chunk.count(b"\n") - probes
            if self.target and self.count >= self.target and not self.reached.is_set():
                self.reached_at = time.time()
                self.reached.set()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _relay_run(ep: Any, lamps: list[Lamp], n: int, publishers: int, run: int) -> tuple[float, int]:
    """One relay-ceiling run: the same publishers, the same payloads and topic lengths, on a district nobody else
    reads, to `mosquitto_sub`. Returns (messages per second, messages received)."""
    relay: list[Lamp] = [(lamp[0], _RELAY_DISTRICT, *lamp[2:]) for lamp in lamps]
    sub = _RelaySubscriber(ep.as_("lamplighter-ingest"), f"sl/{_RELAY_DISTRICT}/lamp/+/state", f"bench-relay-{run}")
    try:
        probe = RawPublisher(ep.as_("lamplighter-headend"), f"bench-relay-probe-{run}")
        while not sub.probed.wait(0.2):  # until its subscription is in place
            probe.publish(device_topic(_RELAY_DISTRICT, "lamp", _PROBE.decode(), "state"), b"{}")
        probe.close()
        time.sleep(0.2)
        sub.count, sub.target = 0, n // publishers * publishers  # what the publishers send between them
        published, _, start = run_publishers(ep.as_("lamplighter-headend"), relay, n, publishers, f"relay{run}")
        if not sub.reached.wait(120):
            return 0.0, sub.count
        return published / (sub.reached_at - start), sub.count
    finally:
        sub.stop()


def _gateway_run(
    ep: Any, lamps: list[Lamp], n: int, publishers: int, gws: list[Any], run: int
) -> tuple[float, int, float, float]:
    """One run through the gateways: (readings committed per second, published, the gateways' and the database's
    CPU seconds)."""
    gateways = len(gws)
    cpu0 = sum(_proc_cpu_rss(gw.pid)[0] for gw, _ in gws)
    db0 = _database_cpu(urlsplit(ep.database_url).port or 5432)
    before = _written(gateways)
    published, _, start = run_publishers(ep.as_("lamplighter-headend"), lamps, n, publishers, f"run{run}")
    written = before
    last_change, last = time.monotonic(), -1.0
    while written - before < published and time.monotonic() - last_change < 15:
        time.sleep(0.1)  # each look is a metrics scrape the gateway serves: not much more often than this
        written = _written(gateways)
        if written != last:
            last, last_change = written, time.monotonic()
    # The gateways' own time of their last commit, not the look that saw it: up to 0.1 s later, 1-2 % of a run.
    stamp = "lamplighter_gateway_last_commit_timestamp_seconds"
    done = max(_scrape(i).get(stamp, 0.0) for i in range(gateways)) if written - before >= published else 0.0
    done = done or time.time() - 15
    cpu = sum(_proc_cpu_rss(gw.pid)[0] for gw, _ in gws) - cpu0
    return (
        (written - before) / (done - start),
        published,
        cpu,
        _database_cpu(urlsplit(ep.database_url).port or 5432) - db0,
    )


_API_PORT = 18082


def _api_peak_rss(ep: Any) -> float:
    """Peak RSS (MB) of `lamplighter api` over the bench's city: started beside the gateways once their runs are
    done, then asked for the whole-city breakdown, the tickets and a page of lamps a few times (the fleet loaded
    and followed, its pools and caches warm)."""
    import httpx2

    from api.auth import add_user
    from lamplighter.simproc import lamplighter_process

    with connect(ep.database_url, autocommit=True) as conn:
        _, token = add_user(conn, "bench-ingest-viewer", "viewer")
    env = {**os.environ, **ep.env(), "LAMPLIGHTER_API_PORT": str(_API_PORT)}
    with lamplighter_process(["api"], env, ready="Application startup complete") as api:
        base = f"http://127.0.0.1:{_API_PORT}/api/v1"
        with httpx2.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            for _ in range(5):
                for path in ("/lighting-rate", "/tickets", "/lamps?limit=1000"):
                    client.get(path).raise_for_status()
                time.sleep(2.5)  # the API follows the fleet's latest state every 2 s
        return _proc_cpu_rss(api.pid)[1]


def run_ingest_bench(
    settings: Settings, *, lamps: int, messages: int, publishers: int, gateways: int = 1, runs: int = 3
) -> int:
    # Always private services: the bench recreates its database.
    with bench_city(settings, lamps) as ep:
        with connect(ep.database_url) as conn:
            ids = lamps_listed(conn)
        print(
            f"bench ingest: {messages:,} lamp messages over {lamps:,} lamps, {publishers} publisher processes, "
            f"{gateways} gateway process{'es' if gateways > 1 else ''}, {runs} interleaved runs",
            flush=True,
        )
        gws = _start_gateways(ep, gateways)
        relays: list[float] = []
        committed: list[float] = []
        published_total = 0
        relay_lost = 0
        cpu_s = db_cpu_s = 0.0  # the gateways' and PostgreSQL's CPU during the gateway runs only
        try:
            for gw, ready in gws:
                if not ready.wait(60):
                    raise RuntimeError(f"gateway {gw.pid} did not subscribe within 60 s")
            shares = _wait_balanced(ep.database_url, gateways)
            if gateways > 1:
                print(f"districts per gateway: {' | '.join(','.join(h) for h in shares)}", flush=True)
            print(f"{'run':>4}{'relay ceiling (msg/s)':>24}{'gateway committed (msg/s)':>28}{'ratio':>8}", flush=True)
            for run in range(1, runs + 1):
                # 1. The broker's relay ceiling: the same publishers, to Mosquitto's own C subscriber.
                relay, received = _relay_run(ep, ids, messages, publishers, run)
                relay_lost += max(0, messages - received)
                # 2. The same load through the gateways into PostgreSQL, committed.
                rate, published, cpu, db_cpu = _gateway_run(ep, ids, messages, publishers, gws, run)
                published_total += published
                cpu_s += cpu
                db_cpu_s += db_cpu
                relays.append(relay)
                committed.append(rate)
                ratio = rate / relay if relay else 0.0
                print(f"{run:>4}{relay:>24,.0f}{rate:>28,.0f}{ratio:>8.2f}", flush=True)
            rss = max(_proc_cpu_rss(gw.pid)[1] for gw, _ in gws)
            metrics = _scrape(0)
            api_rss = _api_peak_rss(ep)
        finally:
            _stop_gateways(gws)
        with connect(ep.database_url) as conn:
            rows, distinct = count_readings(conn)
        ratios = [c / r for c, r in zip(committed, relays, strict=True) if r]
        result = {
            "published": published_total,
            "committed": distinct,
            "committed_per_s": round(statistics.median(committed), 1),
            "relay_ceiling_per_s": round(statistics.median(relays), 1),
            "ratio_to_relay_ceiling": round(statistics.median(ratios), 3) if ratios else None,
            "runs": runs,
            "committed_per_s_runs": [round(x, 1) for x in committed],
            "relay_ceiling_per_s_runs": [round(x, 1) for x in relays],
            "relay_lost": relay_lost,
            "latency_p50_ms": round(metrics.get('lamplighter_gateway_commit_latency_ms{quantile="0.5"}', -1), 1),
            "latency_p99_ms": round(metrics.get('lamplighter_gateway_commit_latency_ms{quantile="0.99"}', -1), 1),
            "gateway_cpu_s": round(cpu_s, 2),
            "gateway_cpu_us_per_msg": round(cpu_s / distinct * 1e6, 1) if distinct else None,
            "gateway_peak_rss_mb": round(rss, 1),
            "api_peak_rss_mb": round(api_rss, 1),
            "database_cpu_us_per_msg": round(db_cpu_s / distinct * 1e6, 1) if distinct else None,
            "lost": published_total - distinct,
            "duplicated": rows - distinct,
            "lamps": lamps,
            "publishers": publishers,
            "gateways": gateways,
            "cpus": os.cpu_count(),
        }
        print(f"{'published (gateway runs)':<30}{published_total:>14,}")
        print(f"{'committed':<30}{distinct:>14,}")
        print(f"{'committed per second, median':<30}{result['committed_per_s']:>14,.0f}")
        print(f"{'relay ceiling, median':<30}{result['relay_ceiling_per_s']:>14,.0f}")
        print(f"{'ratio to the ceiling, median':<30}{result['ratio_to_relay_ceiling']:>14}")
        print(f"{'latency p50 / p99 (ms)':<30}{result['latency_p50_ms']:>7} / {result['latency_p99_ms']}")
        print(f"{'gateway CPU per message (us)':<30}{result['gateway_cpu_us_per_msg']:>14}")
        print(f"{'PostgreSQL CPU per message (us)':<30}{result['database_cpu_us_per_msg']:>14}")
        print(f"{'gateway peak RSS, most (MB)':<30}{result['gateway_peak_rss_mb']:>14}")
        print(f"{'API peak RSS (MB)':<30}{result['api_peak_rss_mb']:>14}")
        print(f"{'lost / duplicated':<30}{result['lost']:>7} / {result['duplicated']}")
        print(json.dumps(result), flush=True)
    return 0

"""`lamplighter bench provision`: broker accounts for a generated city, and how long Mosquitto takes to load them.

For the seeded city of `--lamps` lamps (no database: the inventory straight from the generator) it provisions
the password file and ACL twice, once with the concentrators' lamps as ACL lines (any Mosquitto) and once for
lamplighter's plugin (`fieldnet/plugin/concentrators.c`), then for each starts a Mosquitto of its own on a free
loopback port and measures the time to its first CONNACK, and the time to answer again after a SIGHUP reload
(while it re-reads, it answers nobody). Prints a table and, as its last line, one JSON object. Asserts nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import mqtt5

from fieldnet import broker_plugin
from fieldnet.accounts import DeviceKey, cabinet_user, lamp_user
from fieldnet.provision import ACL, PASSWD, Inventory, provision
from seeds.generator import generate

__all__ = ["run_provision_bench"]

_WAIT_S = 600.0


def _inventory(lamps: int, *, singles: bool = False) -> Inventory:
    """The seeded city's accounts; with `singles`, as if every lamp had a controller of its own (one account a
    lamp, no concentrators: the most accounts a city of that size can have)."""
    inv = generate(lamps, seed=1)
    if singles:
        return Inventory([lamp_user(inv.lamp_district[i], inv.lamp_id[i]) for i in range(inv.lamps)], {}, [], {})
    devices = [
        lamp_user(inv.lamp_district[i], inv.lamp_id[i]) for i in range(inv.lamps) if not inv.lamp_concentrator[i]
    ]
    concentrators: dict[str, list[str]] = {}
    for c in range(len(inv.cabinet_id)):
        if inv.cabinet_concentrator[c]:
            user = cabinet_user(inv.cabinet_district[c], inv.cabinet_id[c])
            devices.append(user)
            concentrators[user] = []
    cab_users = [cabinet_user(inv.cabinet_district[c], inv.cabinet_id[c]) for c in range(len(inv.cabinet_id))]
    for i in range(inv.lamps):
        if inv.lamp_concentrator[i]:
            concentrators[cab_users[int(inv.lamp_cabinet[i])]].append(lamp_user(inv.lamp_district[i], inv.lamp_id[i]))
    return Inventory(devices, concentrators, [], {})


def _connack_after(port: int, deadline_s: float) -> float:
    """Seconds until the broker on `port` answers a CONNECT (refused or not: it is reading its files otherwise)."""
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=deadline_s) as sock:
                sock.sendall(mqtt5.ConnectPacket("bench-provision-probe", clean_start=True).write())
                if sock.recv(16):
                    return time.monotonic() - started
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"the broker on port {port} did not answer in {deadline_s:.0f} s")


def _broker(directory: Path, plugin: Path | None) -> tuple[float, float]:
    """(start, reload) seconds of a Mosquitto loading the files in `directory`."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous false",
        f"password_file {directory / PASSWD}",
        f"acl_file {directory / ACL}",
        *(broker_plugin.config_lines(plugin, directory) if plugin else []),
        "persistence false",
        "log_type error",
    ]
    if os.geteuid() == 0:
        lines.append("user root")
    conf = directory / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    t0 = time.monotonic()
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _connack_after(port, _WAIT_S)
        start = time.monotonic() - t0
        # The broker takes the signal in its loop, then re-reads, answering nobody meanwhile: the longest wait of
        # CONNECTs sent one after another for 2 s after the signal is the stall.
        os.kill(proc.pid, signal.SIGHUP)
        stall, t1 = 0.0, time.monotonic()
        while time.monotonic() - t1 < 2.0:
            stall = max(stall, _connack_after(port, _WAIT_S))
        return start, stall
    finally:
        proc.terminate()
        proc.wait(30)


def run_provision_bench(*, lamps: int, singles: bool = False) -> int:
    out: dict[str, Any] = {"lamps": lamps, "singles": singles}
    inventory = _inventory(lamps, singles=singles)
    lamp_lines = sum(len(v) for v in inventory.concentrators.values())
    out.update(devices=len(inventory.devices), concentrators=len(inventory.concentrators), lamps_behind=lamp_lines)
    print(
        f"bench provision: {lamps:,} lamps, {len(inventory.devices):,} devices "
        f"({len(inventory.concentrators):,} concentrators speaking for {lamp_lines:,} lamps)",
        flush=True,
    )
    key = DeviceKey(os.urandom(32))
    with tempfile.TemporaryDirectory(prefix="lamplighter-bench-provision-") as tmp:
        acl_dir, plugin_dir = Path(tmp) / "acl", Path(tmp) / "plugin"
        done = provision(key, acl_dir, inventory, plugin=False)
        out.update(provision_s=round(done.seconds, 1), acl_lines_without_plugin=done.acl_lines)
        again = provision(key, acl_dir, inventory, plugin=False)
        out["provision_again_s"] = round(again.seconds, 1)
        plugin_dir.mkdir()
        shutil.copy(acl_dir / PASSWD, plugin_dir / PASSWD)
        with_plugin = provision(key, plugin_dir, inventory, plugin=True)
        out["acl_lines_with_plugin"] = with_plugin.acl_lines
        plugin = broker_plugin.build(Path(tmp))
        for name, directory, use in (("acl", acl_dir, None), ("plugin", plugin_dir, plugin)):
            if name == "plugin" and use is None:
                print("  the plugin did not build here: its figures are missing", flush=True)
                continue
            start, reload = _broker(directory, use)
            out[f"broker_start_s_{name}"] = round(start, 2)
            out[f"broker_reload_s_{name}"] = round(reload, 2)
        sizes = {f: (plugin_dir / f).stat().st_size for f in (PASSWD, ACL, "concentrators")}
    print(f"{'':<34}{'ACL lines':>12}{'broker start':>14}{'SIGHUP reload':>15}")
    for name, lines, key_ in (
        ("concentrators in the ACL", "acl_lines_without_plugin", "acl"),
        ("lamplighter's plugin", "acl_lines_with_plugin", "plugin"),
    ):
        print(
            f"{name:<34}{out[lines]:>12,}{out.get(f'broker_start_s_{key_}', float('nan')):>13.2f}s"
            f"{out.get(f'broker_reload_s_{key_}', float('nan')):>14.2f}s"
        )
    print(
        f"provision {out['provision_s']} s (again, unchanged: {out['provision_again_s']} s); files: "
        + ", ".join(f"{f} {n / 1e6:.1f} MB" for f, n in sizes.items())
    )
    print(json.dumps(out))
    return 0

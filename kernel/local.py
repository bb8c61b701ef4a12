"""The local machine as the private services meet it: whether a loopback port is taken and by whom, whether a
process lives, and stopping a process of ours that a killed run left behind (checked by its command line first);
and this process's own tuning for a long life (the garbage collector)."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import time
from pathlib import Path

from kernel.files import our_pid

__all__ = ["GC_THRESHOLD", "listener", "pid_alive", "port_open", "quiet_collector", "stop_stale"]

logger = logging.getLogger(__name__)


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def listener(port: int) -> str:
    """Who listens on a loopback TCP port, as "pid N (command line)" when /proc tells (root sees every process);
    "an unknown program" otherwise."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(f"socket:[{f[9]}]")
    if inodes:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                for fd in (proc / "fd").iterdir():
                    if os.readlink(fd) in inodes:
                        cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                        return f"pid {proc.name} ({cmd[:200]})"
    return "an unknown program"


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a running process: a zombie (ended, not yet reaped by a parent that is not us) is not."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_stale(pidfile: Path, what: str, *also: str) -> None:
    """Stop what a run killed before its end left behind, if the pid file still names it: a process running
    `what` with `also` on its command line. Any other process now holding that pid is left alone."""
    if not pidfile.exists():
        return
    pid = our_pid(pidfile, what, *also)
    if pid is None:
        logger.debug("%s's pid file %s names no process of ours; removed", what, pidfile)
    elif pid_alive(pid):
        for sig in (signal.SIGTERM, signal.SIGKILL):  # the second only if the first was not heeded in 5 s
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            for _ in range(100):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                if not pid_alive(pid):
                    break
                time.sleep(0.05)
            else:
                continue
            break
        logger.debug("stopped %s pid %d", what, pid)
    pidfile.unlink(missing_ok=True)


# The cyclic garbage collector's first generation runs after this many new container objects (Python's default is
# 700). The gateway makes a few per message, nearly all freed by reference counting the moment their batch is
# done; but while a batch waits, its messages are alive, and at the default every young collection walked them
# again: 4,900 collections in 900,000 messages, 2.7-2.8 s of the gateway's time (gc.callbacks, bench ingest).
# At 50,000: 17 collections, 0.26 s.
GC_THRESHOLD = (50_000, 20, 10)


def quiet_collector() -> None:
    """Tune the garbage collector for a long-lived process that allocates per message or per request: what is
    loaded at start (modules, the inventory) is frozen out of every collection, and young collections run less
    often (GC_THRESHOLD). Call once the process has loaded what it keeps."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)

"""The simulator as a separate process, as in the field: the devices do not share the gateway's interpreter.

Used by the tests and the benchmarks that run a gateway in their own process: in the same interpreter, a
simulator answering thousands of commands a second starves the gateway of the GIL."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from kernel.clock import Clock
from lamplighter.runtime import Endpoints

__all__ = ["lamplighter_process", "simulator_process", "stop_process"]

logger = logging.getLogger(__name__)

_READY = "simulator: "  # the line the simulator logs once its connections are up


@contextlib.contextmanager
def simulator_process(
    endpoints: Endpoints,
    clock: Clock,
    client_prefix: str,
    *,
    interval_s: float = 3600.0,
    jitter: float = 1.0,
    ack_latency_s: float = 0.02,
    unreachable: float = 0.0,
    failing: float = 0.0,
    seed: int = 1,
    per_device: bool = False,
) -> Iterator[subprocess.Popen[str]]:
    """`lamplighter simulate` on the test's database, broker and clock; yields once its devices are connected."""
    assert clock.start is not None, "the simulator process shares the test's clock through its start and origin"
    argv = [
        "simulate", "--quiet",
        "--interval", str(interval_s), "--jitter", str(jitter),
        "--failure-rate", "0", "--seed", str(seed), "--ack-latency", str(ack_latency_s),
        "--unreachable", str(unreachable), "--failing", str(failing), "--client-prefix", client_prefix,
        "--clock-start", clock.start.isoformat(), "--clock-speed", str(clock.speed),
    ]  # fmt: skip
    if per_device:
        argv.append("--per-device")  # every device on its own connection, as its own account
    env = {**os.environ, **endpoints.env(), "LAMPLIGHTER_CLOCK_ORIGIN": repr(clock.origin)}
    with lamplighter_process(argv, env, ready=_READY) as proc:
        yield proc


@contextlib.contextmanager
def lamplighter_process(
    args: list[str], env: dict[str, str], *, ready: str, timeout_s: float = 60.0
) -> Iterator[subprocess.Popen[str]]:
    """`lamplighter ARGS` as a child process; yields once it has logged a line containing `ready`, and stops it
    (SIGTERM, then a kill after 30 s) on the way out. Its stderr is kept for the error messages."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lamplighter", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    name = f"`lamplighter {args[0]}`"
    lines: list[str] = []
    up = threading.Event()

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if ready in line:
                up.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not up.wait(0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{name} did not start:\n" + "".join(lines[-20:]))
        yield proc
    finally:
        stop_process(proc, name, grace_s=30.0, last_lines=lines[-10:])
        reader.join(5)
        if proc.stderr is not None:
            proc.stderr.close()


def stop_process(proc: subprocess.Popen[Any], name: str, *, grace_s: float, last_lines: Sequence[str] = ()) -> None:
    """SIGTERM, and a kill (said in the log, with its last lines) if it has not stopped within `grace_s`."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        logger.warning(
            "%s did not stop within %.0f s of SIGTERM; killed.%s",
            name,
            grace_s,
            " Its last lines:\n" + "".join(last_lines) if last_lines else "",
        )
        proc.kill()
        proc.wait(10)


def spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start `lamplighter ...` as a child process with the given extra environment."""
    return subprocess.Popen([sys.executable, "-m", "lamplighter", *argv], env={**os.environ, **env})

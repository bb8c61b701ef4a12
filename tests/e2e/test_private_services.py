"""The private services a developer's command starts: they stop with the command whatever signal ends it
(SIGHUP when its terminal closes), a leftover of ours from a killed run is stopped at the next start, a stranger
holding a port is named, and the cluster's data never lands in a directory someone else prepared."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamplighter.services import PrivateServices, ServiceError
from tests.support.services import free_ports

pytestmark = pytest.mark.slow


def _open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A run directory the postgres user can enter (pytest's own is root's and closed, which the fallback test
    below is about)."""
    d = Path(tempfile.mkdtemp(prefix="lamplighter-signals-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


class _Command:
    """A `lamplighter` command as a developer runs it (`services`, `demo`), on ports of its own, once it says it
    is ready."""

    def __init__(self, argv: list[str], ready: str, run_dir: Path, ports: dict[str, int]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAMPLIGHTER_")}
        env |= {"LAMPLIGHTER_RUN_DIR": str(run_dir)} | {f"LAMPLIGHTER_{k.upper()}": str(v) for k, v in ports.items()}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lamplighter", *argv],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        seen: list[str] = []
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            seen.append(line)
            if ready in line:
                return
        raise AssertionError(f"`lamplighter {' '.join(argv)}` ended with {self.close(0)}: {''.join(seen)}")

    def close(self, timeout: float = 60) -> int:
        """Its exit status once it ended (terminated if it has not within `timeout`), its output pipe closed."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            return self.proc.wait(timeout=timeout)
        finally:
            assert self.proc.stdout is not None
            self.proc.stdout.close()


def _pids(run_dir: Path) -> dict[str, int]:
    data = run_dir / "dev" / "postgres" / "data" / "postmaster.pid"
    return {
        "postgres": int(data.read_text().split()[0]),
        "mosquitto": int((run_dir / "dev" / "mosquitto" / "pid").read_text()),
    }


def _services(run_dir: Path, pg_port: int, mqtt_port: int) -> _Command:
    ports = {"private_pg_port": pg_port, "private_mqtt_port": mqtt_port}
    return _Command(["services"], "private services running", run_dir, ports)  # once both services answer


def _stopped(pids: dict[str, int], *ports: int) -> None:
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {name: _alive(pid) for name, pid in pids.items()} == dict.fromkeys(pids, False)
    assert not any(_open(port) for port in ports)


def test_services_stop_on_sighup_and_a_killed_runs_leftovers_are_stopped_at_the_next_start(run_dir: Path) -> None:
    pg_port, mqtt_port = free_ports(2, pairs=True)
    first = _services(run_dir, pg_port, mqtt_port)
    leftovers = _pids(run_dir)
    first.proc.kill()  # SIGKILL: no chance to stop anything
    assert first.close() == -signal.SIGKILL
    assert all(_alive(pid) for pid in leftovers.values()) and _open(pg_port) and _open(mqtt_port)

    second = _services(run_dir, pg_port, mqtt_port)  # finds our leftovers on its ports, stops them, starts anew
    try:
        running = _pids(run_dir)
        assert not any(_alive(pid) for pid in leftovers.values())
        assert all(_alive(pid) for pid in running.values())
        second.proc.send_signal(signal.SIGHUP)  # its terminal closed
        assert second.close() == 0
        _stopped(running, pg_port, mqtt_port)
    finally:
        if second.proc.poll() is None:
            second.proc.terminate()
        second.close()


def test_the_demo_answers_and_stops_everything_it_started_when_its_terminal_closes(run_dir: Path) -> None:
    """`make demo`'s command on a small city: its API answers healthy once devices report, and SIGHUP (the
    terminal closed) ends it with its broker and database stopped."""
    pg_port, mqtt_port, api_port, metrics_port = free_ports(4, pairs=True)
    ports = {"private_pg_port": pg_port, "private_mqtt_port": mqtt_port, "api_port": api_port}
    demo = _Command(["demo", "--lamps", "300"], "stops everything", run_dir, ports | {"metrics_port": metrics_port})
    try:
        running = _pids(run_dir)
        deadline, status = time.monotonic() + 60, 0
        while status != 200 and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/api/v1/health", timeout=5) as r:
                    status = r.status
            except urllib.error.HTTPError as e:  # 503 until ingest hears the simulator's devices
                status = e.code
            except urllib.error.URLError:  # the server is still starting
                status = 0
            if status != 200:
                time.sleep(0.5)
        assert status == 200
        demo.proc.send_signal(signal.SIGHUP)
        assert demo.close() == 0
        _stopped(running, pg_port, mqtt_port, api_port)
    finally:
        if demo.proc.poll() is None:
            demo.proc.terminate()
        demo.close()


def test_a_port_taken_by_a_stranger_is_named_with_its_pid(tmp_path: Path) -> None:
    """The private broker cannot start on a port someone holds: the error says who (pid and command line)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        svc = PrivateServices(tmp_path / "run", mqtt_port=port, tls_port=port + 1)
        with pytest.raises(ServiceError) as refused:
            svc.start_mosquitto()
    assert f"port {port} on 127.0.0.1 is taken by pid {os.getpid()} (" in str(refused.value)
    assert "LAMPLIGHTER_PRIVATE_MQTT_PORT" in str(refused.value)


def test_the_clusters_fallback_under_tmp_is_used_only_when_private_to_postgres(tmp_path: Path) -> None:
    """Root's checkout in a directory the postgres user cannot enter keeps the cluster under /tmp, in a directory
    whose name anyone can guess: one planted there first (a symlink, root's own, open to others) is refused by
    name, and nothing is followed or changed through it."""
    if os.geteuid() != 0:
        pytest.skip("the fallback is root's: an ordinary user's cluster stays in the checkout")
    tmp_path.chmod(0o700)  # root's and closed: the postgres user cannot reach run/postgres
    svc = PrivateServices(tmp_path / "run")
    alt = svc._pg_dir
    try:
        assert alt.parent == Path("/tmp") and not alt.is_relative_to(tmp_path)
        st = os.lstat(alt)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
        assert st.st_uid == pwd.getpwnam("postgres").pw_uid
        bait = tmp_path / "bait"
        bait.mkdir()
        before = os.stat(bait)
        planted = {
            "symlink": lambda: alt.symlink_to(bait),
            "root's": lambda: alt.mkdir(mode=0o700),
            "open to others": lambda: (alt.mkdir(), shutil.chown(alt, "postgres", "postgres"), alt.chmod(0o777)),
        }
        for what, plant in planted.items():
            _remove(alt)
            plant()
            with pytest.raises(ServiceError, match="not a private directory of the postgres user") as refused:
                _ = PrivateServices(tmp_path / "run")._pg_dir
            assert str(alt) in str(refused.value), what
            after = os.stat(bait)
            assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode), what
    finally:
        _remove(alt)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        path.rmdir()


def test_a_signal_during_the_services_start_leaves_nothing_running(run_dir: Path) -> None:
    """SIGHUP while the cluster is being made (the broker already runs): both stop, nothing holds the ports, and
    the next start makes the cluster whole."""
    pg_port, mqtt_port = free_ports(2, pairs=True)
    ports = {"private_pg_port": pg_port, "private_mqtt_port": mqtt_port}
    starting = _Command(["services"], "private mosquitto", run_dir, ports)
    starting.proc.send_signal(signal.SIGHUP)
    assert starting.close() == 130  # as Ctrl-C
    deadline = time.monotonic() + 10
    while _ours(run_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _ours(run_dir) == [] and not _open(pg_port) and not _open(mqtt_port)

    again = _Command(["services"], "private services running", run_dir, ports)
    running = _pids(run_dir)
    again.proc.terminate()
    assert again.close() == 0
    _stopped(running, pg_port, mqtt_port)


def _ours(run_dir: Path) -> list[str]:
    """Command lines of running processes that name `run_dir` (the broker's config, the cluster's data)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _alive(int(entry.name)):
            try:
                argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(run_dir) in argv:
                found.append(argv)
    return found

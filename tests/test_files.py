"""Secret files written atomically with their final permissions and never through a planted link; pid files
trusted only when the process they name is ours."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import sys
import time
from pathlib import Path

from telemetry.files import atomic_write, our_pid


def test_a_secret_replaces_a_planted_symlink_and_never_writes_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("not yours")
    secret = tmp_path / "postgres.pgpass"
    secret.symlink_to(victim)
    atomic_write(secret, "127.0.0.1:*:*:owner:s3cret\n", mode=0o600)
    assert victim.read_text() == "not yours"
    assert not secret.is_symlink() and secret.read_text() == "127.0.0.1:*:*:owner:s3cret\n"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["postgres.pgpass", "victim"]  # no temporary left


def test_a_pid_file_is_trusted_only_for_a_process_of_ours(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "--marker-of-ours"])
    try:
        pid_file.write_text(str(child.pid))
        deadline = time.monotonic() + 10  # until the child has exec'd (before, /proc shows its parent's command)
        while our_pid(pid_file, "python", "--marker-of-ours") is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert our_pid(pid_file, "python", "--marker-of-ours") == child.pid
        assert our_pid(pid_file, "mosquitto") is None  # the number now names someone else's program
    finally:
        child.kill()
        child.wait()
    assert our_pid(pid_file, "python") is None  # gone
    pid_file.write_text("not a pid")
    assert our_pid(pid_file) is None
    assert our_pid(tmp_path / "absent") is None
    assert os.getpid() == our_pid(_write(tmp_path / "me", os.getpid()), "python")


def _write(path: Path, pid: int) -> Path:
    path.write_text(str(pid))
    return path


def test_a_port_taken_by_a_stranger_is_named_with_its_pid(tmp_path: Path) -> None:
    """The private broker cannot start on a port someone holds: the error says who (pid and command line)."""
    import socket

    import pytest

    from lamplighter.services import PrivateServices, ServiceError

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
    import shutil

    import pytest

    from lamplighter.services import PrivateServices, ServiceError

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

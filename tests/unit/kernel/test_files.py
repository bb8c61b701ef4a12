"""Secret files written atomically with their final permissions and never through a planted link; pid files
trusted only when the process they name is ours (the private services' own checks:
tests/e2e/test_private_services.py)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from kernel.files import atomic_write, our_pid


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

"""Files that hold secrets or that other programs read whole: written so that nobody sees them half-written or
with looser permissions than their final ones, and never through a link someone else planted."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "our_pid"]


def atomic_write(path: Path, data: bytes | str, *, mode: int = 0o600) -> None:
    """Write `data` to `path` atomically: into a new file of a random name beside it (created exclusively, so
    never through a symlink, with `mode` from the start), synced, then renamed over `path` (a symlink at `path` is
    replaced, not followed)."""
    body = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def our_pid(pid_file: Path, *needles: str) -> int | None:
    """The pid in `pid_file` if that process still runs and its command line holds every one of `needles` (the
    program and, say, its config file); None otherwise. A pid file outlives its process, and the number may by
    now belong to someone else's program, which must never be signalled."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and all(n in cmdline for n in needles) else None

"""lamplighter's Mosquitto plugin (`fieldnet/plugin/concentrators.c`): concentrators' rights to their lamps' topics.

The plugin is built here, on the machine that runs the broker, with the system's C compiler and Mosquitto's
plugin headers (Debian: `mosquitto-dev` and `libmosquitto-dev`; `make` installs them). Built once per source
version into the broker's directory. Without a compiler or the headers the broker runs without it, and
provisioning writes the concentrators' lamps into the ACL file instead (correct, but slow to load at a million
lamps: see docs/security.md).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
from pathlib import Path

from fieldnet.provision import CONCENTRATORS, PLUGIN_OPTION

__all__ = ["SOURCE", "build", "config_lines"]

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent / "plugin" / "concentrators.c"


def build(directory: Path) -> Path | None:
    """The plugin compiled into `directory` (now, if this source version was not built there yet); None, with a
    warning saying why, when it cannot be built here."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    out = directory / f"lamplighter-concentrators-{digest}.so"
    if out.exists():
        return out
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        logger.warning("no C compiler: the broker runs without lamplighter's plugin (concentrators' lamps in the ACL)")
        return None
    directory.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".so.new")
    run = subprocess.run(
        [cc, "-std=c11", "-O2", "-Wall", "-shared", "-fPIC", "-o", str(tmp), str(SOURCE)],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        logger.warning(
            "lamplighter's broker plugin did not build (install mosquitto-dev and libmosquitto-dev); the broker "
            "runs without it and concentrators' lamps go into the ACL: %s",
            run.stderr.strip().splitlines()[-1] if run.stderr.strip() else f"exit {run.returncode}",
        )
        tmp.unlink(missing_ok=True)
        return None
    tmp.replace(out)
    for old in directory.glob("lamplighter-concentrators-*.so"):
        if old != out:
            old.unlink(missing_ok=True)
    logger.info("built lamplighter's broker plugin %s", out)
    return out


def config_lines(plugin: Path, files: Path) -> list[str]:
    """Mosquitto config lines loading `plugin` with the concentrators file in `files` (made empty if missing)."""
    table = files / CONCENTRATORS
    if not table.exists():
        table.write_text("")
    return [f"plugin {plugin}", f"{PLUGIN_OPTION} {table}"]

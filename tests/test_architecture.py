"""The house's rules (pyproject.toml, [tool.importlinter]): rooms import only the rooms below them, and no
package's modules import each other in a circle."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold() -> None:
    run = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "3 kept, 0 broken" in run.stdout, run.stdout[-2000:]


def test_http_statuses_are_chosen_only_in_the_api() -> None:
    """Domain errors say what kind of problem they are (kernel.errors); no error raised below the API carries
    an HTTP status of its own."""
    pattern = re.compile(r"raise \w+\(.*\bstatus=|def __init__\(.*\bstatus: int|ApiError|HTTPException")
    offenders = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for package in ("kernel", "telemetry", "fieldnet", "alerts", "commands", "gateway", "seeds", "simulator")
        for path in sorted((ROOT / package).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_every_room_is_packaged_type_checked_and_held_to_the_contracts() -> None:
    """A new top-level package is a new room: it must be installed, type-checked and placed in the layers, or it
    would silently escape all three."""
    import tomllib

    rooms = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    installed = {name.rstrip("*") for name in conf["tool"]["setuptools"]["packages"]["find"]["include"]}
    linter = conf["tool"]["importlinter"]
    layered = {
        room.strip()
        for contract in linter["contracts"]
        if contract["type"] == "layers"
        for layer in contract["layers"]
        for room in layer.split("|")
        if "." not in room.strip()
    } | {"lamplighter"}
    acyclic = next(set(c["ancestors"]) for c in linter["contracts"] if c["type"] == "acyclic_siblings")
    assert {
        "installed": installed,
        "type-checked": set(conf["tool"]["mypy"]["packages"]),
        "import-linter's root packages": set(linter["root_packages"]),
        "layered": layered,
        "acyclic": acyclic,
    } == dict.fromkeys(["installed", "type-checked", "import-linter's root packages", "layered", "acyclic"], rooms)

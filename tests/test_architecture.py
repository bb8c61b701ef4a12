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

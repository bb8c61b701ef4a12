"""The house's rules (pyproject.toml, [tool.importlinter]): rooms import only the rooms below them, and no
package's modules import each other in a circle."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT


def test_import_contracts_hold() -> None:
    run = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "4 kept, 0 broken" in run.stdout, run.stdout[-2000:]


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


# Which room owns each table: only it writes SQL against it, its migrations (<room>/migrations/*.sql) included; the
# others use what it offers (commands/queries.py is the model).
_OWNERS = {
    "inventory": ("seed_info", "districts", "roads", "cabinets", "lamps", "waterways"),
    "telemetry": (
        "lamp_latest",
        "cabinet_latest",
        "device_status",
        "quarantine",
        "lamp_readings",
        "cabinet_readings",
        "lamp_readings_default",
        "cabinet_readings_default",
        "telemetry_settings",
        "lamp_history",
        "cabinet_history",
        "lamp_days",
        "lamp_days_done",
    ),
    "lighting": ("schedules", "lighting_rate_samples", "nightly_reports", "operator_alerts"),
    "energy": ("energy_nights",),
    "alerts": (
        "crews",
        "crew_shifts",
        "tickets",
        "ticket_lamps",
        "ticket_events",
        "outbox",
        "deliveries",
        "citizen_reports",
    ),
    "commands": ("commands", "command_lamps"),
    "api": ("users", "user_tokens"),
    "gateway": ("ingest_heartbeat",),
    "fieldnet": ("device_credentials",),
    "forecast": ("forecast_models", "forecast_runs", "lamp_forecasts"),
    "kernel": ("schema_migrations", "schema_repeatables"),
}

# A table named after FROM, JOIN, INTO, UPDATE, TABLE or COPY (a comment that reads so counts too: reword it).
_SQL_USE = r"\b(?:FROM|JOIN|INTO|UPDATE|TABLE|COPY)\s+(?:ONLY\s+)?(?:public\.)?{}\b(?!\.)"


def test_each_room_writes_sql_only_against_its_own_tables() -> None:
    """Python and migrations alike: a table is named in SQL only by the room `_OWNERS` gives it to."""
    owner = {table: room for room, tables in _OWNERS.items() for table in tables}
    uses = {table: re.compile(_SQL_USE.format(table), re.IGNORECASE) for table in owner}
    found: dict[str, set[str]] = {}
    for path in sorted([*ROOT.glob("*/**/*.py"), *ROOT.glob("*/migrations/*.sql")]):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("tests", ".venv", ".venv-dev", "build"):
            continue
        text = path.read_text()
        foreign = {t for t, rx in uses.items() if owner[t] != rel.parts[0] and rx.search(text)}
        if foreign:
            found[str(rel)] = foreign
    crossings = {m: sorted(ts) for m, ts in found.items()}
    assert crossings == {}, f"SQL against another room's tables (go through what the owner offers): {crossings}"


def test_only_the_kernel_and_the_rooms_that_own_tables_import_psycopg() -> None:
    """A room without tables (the composition root, the benchmarks, the generator, the simulator, the protocol)
    reaches the database through what the kernel and the owning rooms offer (`kernel.database.connect` and their
    queries), so psycopg's errors are read into ours in one place."""
    may = set(_OWNERS) | {"kernel", "tests"}
    importing = re.compile(r"^\s*(?:import|from) psycopg\b", re.MULTILINE)
    found = sorted(
        str(path.relative_to(ROOT))
        for path in ROOT.glob("*/**/*.py")
        if path.relative_to(ROOT).parts[0] not in may | {".venv", ".venv-dev", "build"}
        and importing.search(path.read_text())
    )
    assert found == [], f"psycopg imported outside the kernel and the rooms that own tables: {found}"


def test_every_rooms_package_is_cheap_to_import() -> None:
    """Importing a room's package loads none of its modules: a process that wants one error class does not pay
    for numpy, psycopg's pool or FastAPI."""
    rooms = sorted(p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests")
    heavy = {"numpy", "psycopg", "psycopg_pool", "fastapi", "msgspec", "mqtt5", "paho"}
    probe = "\n".join(
        [
            "import sys",
            *(f"import {r}" for r in rooms),
            f"heavy, rooms = {heavy!r}, {set(rooms)!r}",
            "top = lambda m: m.split('.')[0]",
            "print(sorted(m for m in sys.modules if top(m) in heavy or ('.' in m and top(m) in rooms)))",
        ]
    )
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]", run.stdout


def test_the_pages_scripts_pass_eslint_the_type_checker_and_their_unit_tests() -> None:
    """The browser code is held to a standard too: ESLint's recommended rules, TypeScript's checker over the JSDoc
    types (api/web/eslint.config.mjs, api/web/tsconfig.json; pinned in api/web/package.json and installed by
    `scripts/build-web`), and the unit tests of its pure parts under Node (api/web/tests)."""
    web = ROOT / "api" / "web"
    for tool in (["eslint", "."], ["tsc", "-p", "."], ["node", "--test", "tests/"]):
        binary = shutil.which("node") or "node" if tool[0] == "node" else str(web / "node_modules" / ".bin" / tool[0])
        run = subprocess.run([binary, *tool[1:]], cwd=web, capture_output=True, text=True)
        assert run.returncode == 0, f"{tool[0]}:\n{run.stdout[-3000:]}{run.stderr[-1000:]}"

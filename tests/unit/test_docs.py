"""The protocol and domain pages in docs/ stay in step with the code and the protocol's JSON Schemas: every field,
topic, command, reject reason and fault the code knows is described there, and the README sends readers there."""

from __future__ import annotations

import json
import re

from alerts.faults import CABINET_FAULTS, CABINET_OUTAGE_CODES, LAMP_FAULTS
from gateway.codec import INTERNAL_REASONS, REASONS
from inventory.index import FRESH_GRACE_MS
from lighting.rate import CITY_TARGET
from protocol.messages import FUTURE_TOLERANCE_MS, MAX_CABINET_PAYLOAD, MAX_PAYLOAD
from telemetry.fleet import FAULT_BITS, MIN_POWER_SHARE
from tests.support import ROOT

PROTOCOL = (ROOT / "docs" / "protocol.md").read_text()
DOMAIN = (ROOT / "docs" / "domain.md").read_text()
SCHEMAS = {p.name: json.loads(p.read_text()) for p in (ROOT / "tests" / "schemas").glob("*.schema.json")}


def _named(text: str) -> set[str]:
    """Every `code` span of a page."""
    return set(re.findall(r"`([^`]+)`", text))


def test_every_schema_field_and_command_is_described() -> None:
    assert len(SCHEMAS) == 5
    named = _named(PROTOCOL)
    missing = [
        f"{name}: {field}"
        for name, schema in SCHEMAS.items()
        for field in schema.get("properties", {})
        if field not in named and f'"{field}"' not in PROTOCOL
    ]
    assert missing == []
    ops = SCHEMAS["command.schema.json"]["properties"]["op"]["enum"]
    assert all(f"`{op}`" in PROTOCOL for op in ops), ops
    for schema in SCHEMAS:
        assert schema.removesuffix(".schema.json") in PROTOCOL, schema


def test_every_reject_reason_limit_and_topic_is_described() -> None:
    named = _named(PROTOCOL)
    assert [r for r in (*REASONS, *INTERNAL_REASONS) if r not in named] == []
    assert f"{MAX_PAYLOAD // 1024} KiB" in PROTOCOL and f"{MAX_CABINET_PAYLOAD // 1024} KiB" in PROTOCOL
    assert f"{FUTURE_TOLERANCE_MS // 60_000} minutes" in PROTOCOL
    for topic in ("state", "status", "cmd", "ack"):
        assert f"sl/{{district}}/lamp/{{lamp}}/{topic}" in PROTOCOL
    assert "sl/ops/lighting-rate" in PROTOCOL and "sl/crews/{crew}/tickets" in PROTOCOL


def test_every_fault_code_is_described_with_its_priority() -> None:
    named = _named(DOMAIN)
    codes = {k.code for k in (*LAMP_FAULTS, *CABINET_FAULTS)} | set(CABINET_OUTAGE_CODES) | set(FAULT_BITS)
    assert sorted(c for c in codes if c not in named) == []
    rows = [line for line in DOMAIN.splitlines() if line.startswith("| `")]
    for asset, kinds in (("lamp", LAMP_FAULTS), ("cabinet", CABINET_FAULTS)):
        for kind in kinds:
            row = next(r for r in rows if f"`{kind.code}`" in r.split("|")[1] and asset in r.split("|")[2])
            assert row.rstrip(" |").endswith(kind.priority), (kind, row)


def test_the_rate_rules_carry_the_codes_figures() -> None:
    assert f"{int(MIN_POWER_SHARE * 100)} %" in DOMAIN
    assert f"plus {FRESH_GRACE_MS // 1000} s" in DOMAIN
    assert f"{CITY_TARGET:g} %" in DOMAIN


def test_the_readme_points_to_the_docs_in_the_repository() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docs/protocol.md" in readme and "docs/domain.md" in readme
    assert not re.search(r"(?<!docs/)\b(PROTOCOL|DOMAIN)\.md", readme)


def test_every_length_limit_of_what_people_write_is_in_the_api_doc() -> None:
    import re

    import msgspec

    from alerts.crews import Crew
    from api.routes.auth import LoginBody
    from api.routes.public import ReportBody
    from api.routes.tickets import ActionBody
    from api.routes.users import UserBody
    from commands.model import CommandRequest

    doc = (ROOT / "docs" / "api.md").read_text()
    rows: dict[tuple[str, str], str] = {}
    body = ""
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and cells[1].startswith("`"):
            body = cells[0].split(" (")[0] or body
            rows[(body, cells[1].strip("`"))] = cells[2].replace(",", "")
    bodies = {
        "ticket action": ActionBody,
        "citizen's report": ReportBody,
        "user": UserBody,
        "login": LoginBody,
        "command": CommandRequest,
        "crew": Crew,
    }
    for name, kind in bodies.items():
        _, components = msgspec.json.schema_components([kind])
        props = components[kind.__name__]["properties"]
        for field, spec in props.items():
            options = [spec, *spec.get("anyOf", [])]
            limits = [(o.get("maxLength"), o.get("maxItems"), o.get("items", {}).get("maxLength")) for o in options]
            limit = next((x for x in limits if any(x)), None)
            if limit is None:
                continue
            length, items, each = limit
            written = rows.get((name, field))
            assert written is not None, f"docs/api.md does not give the limit of {name} {field}"
            numbers = [int(n) for n in re.findall(r"\d+", written)]
            assert numbers == [n for n in (items or length, each) if n], (name, field, written, limit)


def test_every_setting_is_documented_for_whoever_runs_it() -> None:
    """Each field of `Settings` has its row in docs/operating.md's table, by the variable that sets it."""
    from dataclasses import fields

    from lamplighter.config import Settings

    doc = (ROOT / "docs" / "operating.md").read_text()
    rows = [line for line in doc.splitlines() if line.startswith("| `LAMPLIGHTER_")]
    documented = {name for row in rows for name in re.findall(r"`(LAMPLIGHTER_[A-Z0-9_]+)`", row.split("|")[1])}
    assert sorted(f"LAMPLIGHTER_{f.name.upper()}" for f in fields(Settings)) == sorted(
        documented - {"LAMPLIGHTER_CONFIG"}
    )


def test_the_pages_name_every_fault_the_catalogue_can_put_on_a_ticket() -> None:
    """The fault labels of the pages (api/web/static/i18n.js, English and Chinese) are the catalogue's codes: a
    fault added to alerts/faults.py without its words would show as its code to a crew."""
    from alerts.citizens import CITIZEN_FAULT

    source = (ROOT / "api" / "web" / "static" / "i18n.js").read_text()
    block = source[source.index("FAULTS = {") :]
    block = block[: block.index("\n};")]
    labels = {
        lang: set(re.findall(r"\b([a-z_]+): \"", block[block.index(f"{lang}: {{") :].split("}", 1)[0]))
        for lang in ("en", "zh")
    }
    catalogue = {k.code for k in (*LAMP_FAULTS, *CABINET_FAULTS)} | {CITIZEN_FAULT}
    assert labels == {"en": catalogue, "zh": catalogue}

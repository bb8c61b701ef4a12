"""schemathesis against the API's own OpenAPI document, on a real server over a seeded city: signed in as an
admin, as a crew and not at all, every operation answers within its declared statuses and schemas, and never
with a 5xx but the documented 503."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from alerts.crews import Crew, save_crew
from api.app import create_app
from tests.support.auth import make_user
from tests.support.factories import load_generated
from tests.support.services import Services, fresh_database, serve

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(services: Services) -> Iterator[tuple[str, dict[str, str]]]:
    with fresh_database(services) as url:
        load_generated(url, 300, seed=3)
        with psycopg.connect(url, autocommit=True) as conn:
            save_crew(conn, Crew(id="cd-a", name="Chengdong A", districts=["cd"], mqtt=False))
        tokens = {"admin": make_user(url, "admin")[1], "crew": make_user(url, "crew", crew="cd-a")[1], "none": ""}
        ep = services.endpoints
        app = create_app(database_url=url, broker=ep.as_("lamplighter-api"))
        with serve(app) as base:
            yield base, tokens


@pytest.mark.parametrize("who", ["admin", "crew", "none"])
def test_every_operation_keeps_to_its_schema(server: tuple[str, dict[str, str]], who: str) -> None:
    """schemathesis's own runner: examples, the coverage phase (boundary values: ±2^63, NUL, huge strings) and
    fuzzing, a few cases per operation."""
    base, tokens = server
    auth = ["-H", f"Authorization: Bearer {tokens[who]}"] if tokens[who] else []
    run = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{base}/openapi.json",
            *auth,
            "--max-examples",
            "5",
            "--seed",
            "1",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--exclude-path-regex",
            "/stream$|/events$",  # live streams never end; test_api_viewers covers them
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    # It reached every operation but the live streams.
    with urllib.request.urlopen(f"{base}/openapi.json") as r:
        spec = json.load(r)
    ops = [p for p, item in spec["paths"].items() for m in item if not re.search("/stream$|/events$", p)]
    tested = re.search(r"Tested: (\d+)", run.stdout)
    assert tested is not None and int(tested[1]) == len(ops), run.stdout[-3000:]

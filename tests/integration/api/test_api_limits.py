"""What a careless or hostile caller sends the API gets a clear 4xx naming what was wrong, never a 500, and
a body too large is refused before it is read into memory."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from api.limits import MAX_BODY, MAX_SMALL_BODY, overrunning_field
from lamplighter.runtime import Endpoints
from tests.support.factories import load_generated

pytestmark = pytest.mark.services


@pytest.fixture
def client(endpoints: Endpoints, api_as: Callable[..., TestClient]) -> Iterator[TestClient]:
    load_generated(endpoints.database_url, 300, seed=3)
    c = api_as("admin", raise_server_exceptions=False)
    yield c


def _error(r: object, status: int) -> dict[str, str]:
    assert r.status_code == status, (r.status_code, r.text)  # type: ignore[attr-defined]
    body: dict[str, str] = r.json()["error"]  # type: ignore[attr-defined]
    assert body["message"]
    return body


def test_bodies_over_the_limits_are_refused_with_413(client: TestClient) -> None:
    assert _error(client.post("/api/v1/login", content=b"x" * (MAX_SMALL_BODY + 1)), 413)["code"] == "too_large"
    _error(client.post("/api/v1/public/reports", content=b"{" + b" " * MAX_SMALL_BODY + b"}"), 413)
    _error(client.put("/api/v1/schedules/city/all", content=b" " * (MAX_BODY + 1)), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(64):
            yield b" " * 65536

    _error(client.post("/api/v1/crews", content=chunks()), 413)
    # Within the limits the route answers as before.
    assert client.post("/api/v1/login", json={"name": "nobody", "password": "wrong"}).status_code == 401


def test_nul_characters_are_a_422_naming_the_field(client: TestClient) -> None:
    assert _error(client.get("/api/v1/lamps", params={"district": "c\x00d"}), 422)["field"] == "district"
    assert _error(client.get("/api/v1/lamps/XN-CD-%00001"), 422)["field"] == "path"
    assert _error(client.get("/api/v1/quarantine", params={"reason": "\x00"}), 422)["field"] == "reason"
    assert _error(client.post("/api/v1/login", json={"name": "a\x00", "password": "b"}), 422)["field"] == "name"
    report = {"description": "dark\x00lamp", "lamp_id": "XN-CD-000001"}
    assert _error(client.post("/api/v1/public/reports", json=report), 422)["field"] == "description"
    crew = {"id": "cd-day", "name": "Chengdong", "districts": ["cd\x00"]}
    assert _error(client.post("/api/v1/crews", json=crew), 422)["field"] == "districts[0]"
    window = {"kind": "maintenance", "start": "2026-12-01T01:00:00+08:00", "end": "2026-12-01T05:00:00+08:00"}
    doc = {"windows": [{**window, "note": "cable\x00repair"}]}
    assert _error(client.put("/api/v1/schedules/city/all", json=doc), 422)["field"] == "windows[0].note"


def test_numbers_out_of_range_are_a_422(client: TestClient) -> None:
    for path in ("/api/v1/lamps", "/api/v1/tickets", "/api/v1/quarantine", "/api/v1/commands", "/api/v1/alerts"):
        assert _error(client.get(path, params={"offset": 2**63}), 422)["field"] == "offset", path
    assert _error(client.get("/api/v1/reports/nightly", params={"date": "9999-12-31"}), 422)["field"] == "date"
    command = {"target": {"road": "²"}, "op": "switch", "on": True, "reason": "test"}
    assert _error(client.post("/api/v1/commands", json=command), 422)["field"] == "target.road"


def test_what_people_write_has_limits_named_in_the_422(client: TestClient) -> None:
    """A note pasted a megabyte long is refused naming the field, also one past the body limit (the body is read
    no further than the limit, with or without a Content-Length). The limits are in docs/api.md."""
    note = {"action": "comment", "note": "x" * 1_000_000}
    assert _error(client.post("/api/v1/tickets/1/actions", json=note), 422)["field"] == "note"
    parts = {"action": "resolve", "parts": ["driver"] * 51}
    assert _error(client.post("/api/v1/tickets/1/actions", json=parts), 422)["field"] == "parts"
    two_mib = b'{"action": "comment", "note": "' + b"x" * 2**21 + b'"}'
    assert _error(client.post("/api/v1/tickets/1/actions", content=two_mib), 422)["field"] == "note"

    def streamed() -> Iterator[bytes]:
        yield from (two_mib[i : i + 65536] for i in range(0, len(two_mib), 65536))

    r = client.post("/api/v1/tickets/1/actions", content=streamed())
    assert "too long" in _error(r, 422)["message"] and r.json()["error"]["field"] == "note"
    report = {"description": "dark " * 300, "lamp_id": "XN-CD-000001"}
    assert _error(client.post("/api/v1/public/reports", json=report), 422)["field"] == "description"
    user = {"name": "n" * 65, "role": "viewer"}
    assert _error(client.post("/api/v1/users", json=user), 422)["field"] == "name"
    crew = {"id": "cd-day", "name": "Chengdong " * 20, "districts": ["cd"]}
    assert _error(client.post("/api/v1/crews", json=crew), 422)["field"] == "name"


def test_numbers_that_are_no_numbers_and_odd_headers_and_deep_bodies_are_422(client: TestClient) -> None:
    for every in ("nan", "NaN", "inf", "-Infinity", "1e400", "0.5", "61"):
        r = client.get("/api/v1/overview/stream", params={"every_s": every})
        assert _error(r, 422).get("field") in ("every_s", "query.every_s"), (every, r.text)
    r = client.get("/api/v1/tickets/events", headers={"Last-Event-ID": "²".encode()})
    assert _error(r, 422)["field"] == "Last-Event-ID"
    deep = b'{"target": {"a": ' + b"[" * 5000 + b"]" * 5000 + b'}, "op": "report"}'
    assert "nest" in _error(client.post("/api/v1/commands", content=deep), 422)["message"]
    deep_schedule = b'{"profile": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert "nest" in _error(client.put("/api/v1/schedules/city/all", content=deep_schedule), 422)["message"]
    crew = {"id": "cd-day\n", "name": "Chengdong", "districts": ["cd"]}
    assert _error(client.post("/api/v1/crews", json=crew), 422)["field"] == "id"  # a whole match, no newline


@given(st.binary(max_size=2000) | st.text(alphabet='{}[]":, \\ax\u00e9', max_size=200).map(str.encode))
def test_naming_the_field_that_ran_over_takes_any_bytes(prefix: bytes) -> None:
    """Whatever a body's first bytes are, naming the field is an answer or None, never an exception."""
    field = overrunning_field(prefix)
    assert field is None or (0 < len(field) <= 400 and field in prefix.decode("utf-8", "ignore"))

"""Logins and roles on the real database: tokens from the command line, the login form's session cookie, what
each role may do, a crew limited to its own tickets, and every endpoint stating the role it enforces."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from alerts.crews import Crew, save_crew
from alerts.tickets import open_ticket
from api.app import ROUTERS
from api.auth import add_user
from api.deps import Role
from lamplighter.runtime import Endpoints
from tests.support.auth import sign_in
from tests.support.factories import load_generated

pytestmark = pytest.mark.services

NOW = dt.datetime(2026, 12, 1, 14, 0, tzinfo=dt.UTC)


@pytest.fixture
def client(endpoints: Endpoints, api_as: Callable[..., TestClient]) -> Iterator[TestClient]:
    load_generated(endpoints.database_url, 1000, seed=3)
    with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
        save_crew(conn, Crew(id="cd-a", name="Chengdong A", districts=["cd"], mqtt=False))
        save_crew(conn, Crew(id="cd-b", name="Chengdong B", districts=["cd"], mqtt=False))
    c = api_as(None)
    yield c


def _lamcli(endpoints: Endpoints, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **endpoints.env()}
    return subprocess.run(
        [sys.executable, "-m", "lamplighter", *args], input=stdin, env=env, capture_output=True, text=True, timeout=60
    )


def test_users_add_prints_a_token_once_and_stores_only_hashes(endpoints: Endpoints, client: TestClient) -> None:
    out = _lamcli(endpoints, "users", "add", "zhang.min", "--role", "operator", "--password", stdin="lantern-42\n")
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip().splitlines()[-1]
    assert token.startswith("ll_") and len(token) > 40
    with psycopg.connect(endpoints.database_url) as conn:
        stored = conn.execute(
            "SELECT u.password_hash, t.token_hash FROM users u JOIN user_tokens t ON t.user_id = u.id"
        )
        password_hash, token_hash = stored.fetchone()  # type: ignore[misc]
    assert "lantern-42" not in password_hash and password_hash.startswith("scrypt$")
    assert token.encode() not in bytes(token_hash)

    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert (me["name"], me["role"], me["crew"], me["lang"]) == ("zhang.min", "operator", None, "zh")

    again = _lamcli(endpoints, "users", "add", "zhang.min", "--role", "viewer")
    assert again.returncode == 2 and "already exists" in again.stderr
    bad = _lamcli(endpoints, "users", "add", "li.wei", "--role", "crew")
    assert bad.returncode == 2 and "--crew" in bad.stderr
    bad = _lamcli(endpoints, "users", "add", "li.wei", "--role", "crew", "--crew", "nowhere")
    assert bad.returncode == 2 and "crew 'nowhere' does not exist" in bad.stderr
    listed = _lamcli(endpoints, "users", "list")
    assert "zhang.min" in listed.stdout and token not in listed.stdout

    assert _lamcli(endpoints, "users", "disable", "zhang.min").returncode == 0
    r = client.post("/api/v1/login", json={"name": "zhang.min", "password": "lantern-42"})
    assert r.status_code == 401


def test_the_login_form_sets_a_session_cookie_and_logout_revokes_it(endpoints: Endpoints, client: TestClient) -> None:
    make_user_with = _lamcli(
        endpoints, "users", "add", "wang.fang", "--role", "viewer", "--password", stdin="dusk-till-dawn\n"
    )
    assert make_user_with.returncode == 0, make_user_with.stderr
    wrong = client.post("/api/v1/login", json={"name": "wang.fang", "password": "dawn-till-dusk"})
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "wrong user name or password"
    nobody = client.post("/api/v1/login", json={"name": "nobody", "password": "dawn-till-dusk"})
    assert nobody.json() == wrong.json()  # the same answer whether the name exists or not

    r = client.post("/api/v1/login", json={"name": "wang.fang", "password": "dusk-till-dawn"})
    assert r.status_code == 200 and r.json()["user"]["role"] == "viewer"
    cookie = r.headers["set-cookie"]
    assert "ll_token=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert client.get("/api/v1/lighting-rate").status_code == 200  # the cookie alone signs the page in
    page = {"Origin": "http://testserver"}  # what the browser adds to the pages' own requests
    assert client.patch("/api/v1/me", json={"lang": "en"}, headers=page).json()["lang"] == "en"
    assert client.get("/api/v1/me").json()["lang"] == "en"
    assert client.patch("/api/v1/me", json={"lang": "fr"}, headers=page).status_code == 422
    # Another site's page can make the browser send the cookie; it cannot make the request look like ours.
    for headers in ({"Origin": "https://evil.example"}, {}, {"Referer": "https://evil.example/x"}):
        refused = client.patch("/api/v1/me", json={"lang": "zh"}, headers=headers)
        assert refused.status_code == 403 and "cookie" in refused.json()["error"]["message"], (headers, refused.text)
    form = client.patch(
        "/api/v1/me", content=b'{"lang": "zh"}', headers={**page, "Content-Type": "text/plain"}
    )  # a form or text/plain body is what a cross-site page could send without asking
    assert form.status_code == 403
    assert client.post("/api/v1/logout", headers={"Referer": "http://testserver/"}).status_code == 200
    client.cookies.set("ll_token", r.json()["token"])
    assert client.get("/api/v1/me").status_code == 401  # revoked, not merely forgotten by the browser


def test_a_login_takes_as_long_for_an_unknown_name_and_old_hashes_are_redone(
    endpoints: Endpoints, client: TestClient
) -> None:
    url = endpoints.database_url
    salt = b"0123456789abcdef"
    old = hashlib.scrypt(b"moon-over-xining", salt=salt, n=2**14, r=8, p=1, dklen=32)  # the earlier, cheaper cost
    stored = f"scrypt$16384$8$1${base64.b64encode(salt).decode()}${base64.b64encode(old).decode()}"
    with psycopg.connect(url, autocommit=True) as conn:
        add_user(conn, "zhao.lei", "viewer")
        conn.execute("UPDATE users SET password_hash = %s WHERE name = 'zhao.lei'", (stored,))

    def took(name: str) -> float:
        t = time.perf_counter()
        r = client.post("/api/v1/login", json={"name": name, "password": "wrong-password"})
        assert r.status_code == 401
        return time.perf_counter() - t

    known = statistics.median(took("zhao.lei") for _ in range(3))
    unknown = statistics.median(took("nobody-at-all") for _ in range(3))
    # Without the decoy hash an unknown name was refused in about a millisecond, a known one after scrypt.
    assert unknown > 0.5 * known, (unknown, known)

    assert client.post("/api/v1/login", json={"name": "zhao.lei", "password": "moon-over-xining"}).status_code == 200
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT password_hash FROM users WHERE name = 'zhao.lei'").fetchone()
    assert row is not None and row[0].startswith("scrypt$16384$8$5$") and row[0] != stored
    again = client.post("/api/v1/login", json={"name": "zhao.lei", "password": "moon-over-xining"})
    assert again.status_code == 200  # the new hash checks out


def test_each_role_gets_what_it_may_and_a_clear_refusal_otherwise(endpoints: Endpoints, client: TestClient) -> None:
    url = endpoints.database_url
    assert client.get("/api/v1/lamps").status_code == 401
    assert client.get("/api/v1/health").status_code == 200  # public
    assert client.get("/api/v1/public/notices").status_code == 200
    codes = [client.get("/api/v1/health").status_code for _ in range(40)]  # public, so rate-limited per client
    assert 429 in codes and codes[0] == 200, codes

    sign_in(client, url, "viewer")
    assert client.get("/api/v1/lamps").status_code == 200
    assert client.get("/api/v1/users").status_code == 403
    r = client.put("/api/v1/schedules/city/all", json={"profile": {"kind": "always"}})
    assert r.status_code == 403 and "operator" in r.json()["error"]["message"]

    sign_in(client, url, "operator")
    assert client.post("/api/v1/crews", json={"id": "x-1", "name": "x"}).status_code == 403
    assert client.get("/api/v1/users").status_code == 403

    sign_in(client, url, "admin")
    r = client.post("/api/v1/users", json={"name": "li.wei", "role": "crew", "crew": "cd-a"})
    assert r.status_code == 201 and r.json()["token"].startswith("ll_")
    assert client.post("/api/v1/users", json={"name": "li.wei", "role": "viewer"}).status_code == 409
    r = client.post("/api/v1/users", json={"name": "x", "role": "root"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "role"
    names = [u["name"] for u in client.get("/api/v1/users").json()["items"]]
    assert "li.wei" in names and all("token" not in u for u in client.get("/api/v1/users").json()["items"])


def test_a_crew_sees_and_works_only_its_own_tickets(endpoints: Endpoints, client: TestClient) -> None:
    url = endpoints.database_url
    with psycopg.connect(url, autocommit=True) as conn:
        ours = open_ticket(
            conn, priority="P3", fault="lamp_failure", asset_type="lamp", asset_id="XN-CD-000001", district="cd",
            source="backend", first_seen=NOW, now=NOW,
        ).ticket_id  # fmt: skip
        theirs = open_ticket(
            conn, priority="P3", fault="lamp_failure", asset_type="lamp", asset_id="XN-CD-000002", district="cd",
            source="backend", first_seen=NOW, now=NOW,
        ).ticket_id  # fmt: skip
        conn.execute("UPDATE tickets SET crew_id = 'cd-a', status = 'dispatched' WHERE id = %s", (ours,))
        conn.execute("UPDATE tickets SET crew_id = 'cd-b', status = 'dispatched' WHERE id = %s", (theirs,))

    sign_in(client, url, "crew", crew="cd-a")
    assert [t["id"] for t in client.get("/api/v1/tickets").json()["items"]] == [ours]
    assert client.get("/api/v1/tickets", params={"crew": "cd-b"}).status_code == 403
    assert client.get(f"/api/v1/tickets/{theirs}").status_code == 404
    assert client.post(f"/api/v1/tickets/{theirs}/actions", json={"action": "acknowledge"}).status_code == 404
    r = client.post(f"/api/v1/tickets/{ours}/actions", json={"action": "cancel"})
    assert r.status_code == 403 and r.json()["error"]["field"] == "action"
    r = client.post(f"/api/v1/tickets/{ours}/actions", json={"action": "acknowledge"})
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    assert r.json()["history"][-1]["actor"].startswith("crew-")  # the signed-in user, not a name it chose
    assert client.get("/api/v1/lighting-rate").status_code == 403
    assert client.post("/api/v1/commands", json={"target": {"all": True}, "op": "report"}).status_code == 403


def test_every_endpoint_enforces_the_role_its_documentation_states() -> None:
    seen = 0
    for route in (route for router in ROUTERS for route in router.routes):
        assert isinstance(route, APIRoute) and route.path.startswith(("/api/v1/", "/ngsi-ld/v1/"))
        doc = (route.endpoint.__doc__ or "").strip()
        assert doc.startswith("Role: "), f"{route.path} does not state its role"
        roles = [d.call for d in route.dependant.dependencies if isinstance(d.call, Role)]
        if doc.startswith("Role: none"):
            assert roles == [], f"{route.path} says no role but enforces {roles[0].doc}"
        else:
            assert len(roles) == 1, f"{route.path} enforces no role"
            assert doc.removeprefix("Role: ").startswith(roles[0].doc), (route.path, roles[0].doc, doc[:60])
        seen += 1
    assert seen >= 35


# GET endpoints that answer one thing, a stream or a time range rather than a list to page through.
_NOT_LISTS = {
    "/api/v1/health", "/api/v1/me", "/api/v1/overview", "/api/v1/overview/stream", "/api/v1/tickets/events",
    "/api/v1/map/layout", "/api/v1/map/state", "/api/v1/reports/nightly", "/api/v1/lighting-rate/history",
    "/api/v1/reports/monthly",
}  # fmt: skip


def test_every_list_pages_with_limit_and_offset() -> None:
    lists = [
        r
        for router in ROUTERS
        for r in router.routes
        if isinstance(r, APIRoute)
        and "GET" in r.methods
        and r.path not in _NOT_LISTS
        and not r.path.endswith(("}", "/archive"))
    ]
    assert len(lists) >= 12
    for route in lists:
        params = {p.name for p in route.dependant.query_params}
        assert {"limit", "offset"} <= params, f"{route.path} has no limit/offset"

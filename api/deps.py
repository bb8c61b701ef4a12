"""Typed dependencies shared by the routers."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

import msgspec
import psycopg
from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from msgspec import inspect as mi
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from api.auth import User, cached_user, user_for_token
from api.errors import ApiError
from api.limits import nul_path
from kernel.clock import Clock
from kernel.instants import MAX_EPOCH_MS, decode_json
from lighting.engine import LightingEngine
from protocol.messages import MAX_DEPTH, nesting_depth

__all__ = [
    "JSON_OR_CSV",
    "Admin",
    "ClockDep",
    "ConnDep",
    "EngineDep",
    "Offset",
    "Operator",
    "OperatorOrCrew",
    "PoolDep",
    "Role",
    "SignedIn",
    "SyncPoolDep",
    "Viewer",
    "ViewerOrCrew",
    "authenticate",
    "check_depth",
    "decode_body",
    "filter_param",
    "in_thread",
    "json_body",
    "limit_param",
    "page",
    "time_param",
]

T = TypeVar("T")


def get_pool(request: Request) -> AsyncConnectionPool:
    pool: AsyncConnectionPool = request.app.state.pool
    return pool


PoolDep = Annotated[AsyncConnectionPool, Depends(get_pool)]


async def get_conn(pool: PoolDep) -> AsyncIterator[psycopg.AsyncConnection]:
    async with pool.connection() as conn:
        conn.row_factory = dict_row  # type: ignore[assignment]
        try:
            yield conn
        finally:
            conn.row_factory = tuple_row  # back to the pool as it came


ConnDep = Annotated[psycopg.AsyncConnection, Depends(get_conn)]


def get_engine(request: Request) -> LightingEngine:
    engine: LightingEngine | None = getattr(request.app.state, "engine", None)
    if engine is None:
        raise ApiError(503, "starting", "the lighting engine is still loading the fleet; try again in a moment")
    return engine


EngineDep = Annotated[LightingEngine, Depends(get_engine)]


def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


ClockDep = Annotated[Clock, Depends(get_clock)]


def get_sync_pool(request: Request) -> ConnectionPool:
    pool: ConnectionPool = request.app.state.sync_pool
    return pool


# Report and history queries are plain functions over a synchronous connection, run in a worker thread.
SyncPoolDep = Annotated[ConnectionPool, Depends(get_sync_pool)]


async def in_thread(pool: ConnectionPool, fn: Callable[[psycopg.Connection], T]) -> T:
    def run() -> T:
        with pool.connection() as conn:
            return fn(conn)

    return await asyncio.to_thread(run)


def page(items: list[T], limit: int, offset: int) -> dict[str, Any]:
    """One page of a list held in memory, in the shape every list endpoint answers."""
    return {"items": items[offset : offset + limit], "total": len(items), "limit": limit, "offset": offset}


# Request bodies are decoded by msgspec (decode_body), so FastAPI cannot see them: each such route declares its
# body with `openapi_extra=json_body(Kind)`, whose schemas join the document's components (api.app).
BODY_SCHEMAS: dict[str, Any] = {}


def _time_fields(t: mi.Type, out: dict[str, list[str]]) -> None:
    """Per struct name, the fields that hold a datetime (alone or beside None), found through the whole type."""
    if isinstance(t, mi.StructType | mi.DataclassType):
        name = t.cls.__name__
        if name in out:
            return
        out[name] = []
        for f in t.fields:
            subs = f.type.types if isinstance(f.type, mi.UnionType) else (f.type,)
            if any(isinstance(x, mi.DateTimeType) for x in subs):
                out[name].append(f.encode_name)
            for x in subs:
                _time_fields(x, out)
    elif isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        _time_fields(t.item_type, out)
    elif isinstance(t, mi.DictType):
        _time_fields(t.value_type, out)
    elif isinstance(t, mi.UnionType):
        for x in t.types:
            _time_fields(x, out)


_TIME = {
    "anyOf": [
        {"type": "string", "format": "date-time", "description": "ISO 8601 with an offset"},
        {"type": "integer", "minimum": 0, "maximum": MAX_EPOCH_MS, "description": "epoch milliseconds (UTC)"},
    ]
}


def json_body(kind: Any) -> dict[str, Any]:
    """The OpenAPI `requestBody` of a route whose JSON body is decoded as `kind`."""
    (schema,), components = msgspec.json.schema_components([kind], ref_template="#/components/schemas/{name}")
    fields: dict[str, list[str]] = {}
    _time_fields(mi.type_info(kind), fields)
    for name, names in fields.items():  # the times: ISO 8601 or epoch milliseconds, as decode_body takes them
        props = components.get(name, {}).get("properties", {})
        for field in names:
            old = props[field]
            nullable = {"type": "null"} in old.get("anyOf", ())
            rest = {k: v for k, v in old.items() if k not in ("anyOf", "type", "format")}  # default, description
            props[field] = {**rest, "anyOf": [*_TIME["anyOf"], *([{"type": "null"}] if nullable else [])]}
    BODY_SCHEMAS.update(components)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def check_depth(raw: bytes) -> None:
    """A body whose arrays and objects nest deeper than any of ours is refused before it is parsed: a 422, not the
    recursion of whoever walks it afterwards."""
    if (depth := nesting_depth(raw)) > MAX_DEPTH:
        raise ApiError(
            422, "invalid", f"the body's arrays and objects nest {depth} deep; at most {MAX_DEPTH} are accepted"
        )


_AT = re.compile(r" - at `\$\.?(.+)`$")


async def decode_body(request: Request, kind: type[T]) -> T:
    """The request's JSON body as `kind`; a 422 naming what is wrong otherwise (text PostgreSQL cannot store
    included). Its times take ISO 8601 or epoch milliseconds (kernel.instants)."""
    raw = await request.body()
    check_depth(raw)
    try:
        body = decode_json(raw, kind)
    except msgspec.ValidationError as exc:
        at = _AT.search(str(exc))  # msgspec ends its message with the path: "… - at `$.note`"
        raise ApiError(422, "invalid", str(exc), at.group(1) if at else None) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ApiError(422, "invalid", f"not a JSON object: {exc}") from None
    if where := nul_path(msgspec.to_builtins(body)):
        raise ApiError(422, "invalid", f"{where}: holds a NUL character (U+0000)", where)
    return body


# Offsets past any list's length are empty pages; past this, PostgreSQL's bigint would refuse them.
MAX_OFFSET = 1_000_000_000


# The 200 of a route that answers JSON, or CSV with `format=csv`.
JSON_OR_CSV: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON, or CSV with `format=csv`",
        "content": {"application/json": {}, "text/csv": {"schema": {"type": "string"}}},
    }
}


def _shown(examples: list[object]) -> dict[str, Any]:
    """Parameter-level examples, which /docs offers to fill in (the schema-level ones only document)."""
    return {json.dumps(v): {"value": v} for v in examples}


Offset = Annotated[
    int,
    Query(ge=0, le=MAX_OFFSET, description="items to skip", examples=[0, 100], openapi_examples=_shown([0, 100])),
]


def limit_param(most: int) -> Any:
    """A list's page size, 1 to `most` (`Annotated[int, limit_param(1000)] = 100`)."""
    shown: list[object] = [min(100, most)]
    return Query(
        ge=1, le=most, description=f"items per page, 1 to {most:,}", examples=shown, openapi_examples=_shown(shown)
    )


def time_param(meaning: str, alias: str | None = None) -> Any:
    """A time in a query: ISO 8601 with an offset, or epoch milliseconds as the field protocol writes times."""
    shown: list[object] = ["2026-11-28T18:00:00+08:00", 1764324000000]
    return Query(
        alias=alias,
        description=f"{meaning}: ISO 8601 with an offset, or epoch milliseconds",
        examples=shown,
        openapi_examples=_shown(shown),
    )


def filter_param(
    meaning: str, *examples: object, alias: str | None = None, ge: float | None = None, le: float | None = None
) -> Any:
    """A list's filter, described with examples for the OpenAPI document (/docs); `ge`/`le` bound a number."""
    return Query(
        alias=alias,
        description=meaning,
        examples=list(examples),
        openapi_examples=_shown(list(examples)),
        ge=ge,
        le=le,
    )


TOKEN_COOKIE = "ll_token"
# Declares the bearer scheme in the OpenAPI document, so /docs offers "Authorize"; the token is read below.
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))]


_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _same_origin(request: Request) -> bool:
    """Whether the request says it comes from a page of this site (Origin, or else Referer)."""
    here = f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        referer = request.headers.get("referer")
        if not referer:
            return False
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    return origin == here


def check_cookie_request(request: Request) -> None:
    """A state-changing request signed in by the login cookie must come from this site's own pages and carry
    JSON: another site's page can make the browser send the cookie, but not forge these (403 otherwise)."""
    if request.method in _SAFE_METHODS:
        return
    if not _same_origin(request):
        raise ApiError(
            403,
            "forbidden",
            "a request signed in by the login cookie must come from this site's pages (Origin or Referer); "
            "scripts send 'Authorization: Bearer <token>' instead",
        )
    has_body = request.headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in request.headers
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if has_body and kind != "application/json":
        raise ApiError(403, "forbidden", f"a request signed in by the login cookie must send JSON, not {kind!r}")


def request_token(request: Request) -> str | None:
    """The bearer token of the request: the Authorization header, or the login form's cookie (pages, SSE)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(TOKEN_COOKIE) or None


def _from_cookie(request: Request) -> bool:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return not (scheme.lower() == "bearer" and value.strip())


async def authenticate(request: Request, token: str) -> User | None:
    """The token's user: from the last few seconds' checks, or from the database through the API's own small
    pool for token checks, so sign-ins and calls are never queued behind busy queries or streams."""
    user = cached_user(token)
    if user is None:
        async with request.app.state.auth_pool.connection() as conn:
            user = await user_for_token(conn, token)
    return user


class Role:
    """A dependency that admits the users holding `need` (None: any signed-in user); with `crew`, crew users
    too, whom the endpoint then limits to their own crew's tickets. `doc` is what the endpoint's docstring says."""

    def __init__(self, need: str | None, *, crew: bool = False, doc: str) -> None:
        self.need = need
        self.crew = crew
        self.doc = doc

    async def __call__(self, request: Request, _: BearerDep) -> User:
        token = request_token(request)
        if token is not None and _from_cookie(request):
            check_cookie_request(request)
        if token is None:
            raise ApiError(
                401,
                "unauthorized",
                "sign in first: send 'Authorization: Bearer <token>' (a token from `lamplighter users add`) "
                "or log in at /login",
            )
        user = await authenticate(request, token)
        if user is None:
            raise ApiError(401, "unauthorized", "this token is unknown, expired or revoked; log in again")
        if self.need is not None and not user.can(self.need) and not (self.crew and user.role == "crew"):
            raise ApiError(403, "forbidden", f"this needs the {self.doc} role; {user.name} is {user.role}")
        request.state.user = user
        return user


Viewer = Annotated[User, Depends(Role("viewer", doc="viewer"))]
ViewerOrCrew = Annotated[User, Depends(Role("viewer", crew=True, doc="viewer (crew: its own)"))]
Operator = Annotated[User, Depends(Role("operator", doc="operator"))]
OperatorOrCrew = Annotated[User, Depends(Role("operator", crew=True, doc="operator or the ticket's crew"))]
Admin = Annotated[User, Depends(Role("admin", doc="admin"))]
SignedIn = Annotated[User, Depends(Role(None, doc="any signed-in user"))]

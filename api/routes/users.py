"""Users and their roles, for administrators (the command line does the same: `lamplighter users`)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import psycopg
from fastapi import APIRouter, Request

from api.auth import AuthError, add_user
from api.deps import Admin, ConnDep, Offset, SyncPoolDep, decode_body, in_thread, json_body, limit_param
from api.errors import ApiError

router = APIRouter(prefix="/api/v1/users", tags=["users"])


@router.get("")
async def list_users(
    user: Admin,
    conn: ConnDep,
    limit: Annotated[int, limit_param(1000)] = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Role: admin. Users by name with role, crew, language, whether they can use the login form, and when
    their tokens were last used. Tokens and password hashes are never shown."""
    total = await (await conn.execute("SELECT count(*) AS n FROM users")).fetchone()
    rows = await (
        await conn.execute(
            """SELECT u.id, u.name, u.role, u.crew_id AS crew, u.lang, u.password_hash IS NOT NULL AS can_log_in,
                      u.created_at, u.disabled_at, (SELECT max(last_used_at) FROM user_tokens t
                                                    WHERE t.user_id = u.id) AS last_seen_at
               FROM users u ORDER BY u.name LIMIT %s OFFSET %s""",
            (limit, offset),
        )
    ).fetchall()
    return {"items": rows, "total": total["n"] if total else 0, "limit": limit, "offset": offset}  # type: ignore[call-overload]


class UserBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(max_length=64)]
    role: Annotated[str, msgspec.Meta(max_length=16)]
    crew: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    password: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    lang: Annotated[str, msgspec.Meta(max_length=8)] = "zh"


@router.post("", status_code=201, openapi_extra=json_body(UserBody))
async def create_user(user: Admin, request: Request, pool: SyncPoolDep) -> dict[str, Any]:
    """Role: admin. `{"name", "role": "viewer" | "operator" | "crew" | "admin", "crew"?, "password"?, "lang"?}`
    → the user and its API token, shown this once."""
    body = await decode_body(request, UserBody)
    if body.lang not in ("zh", "en"):
        raise ApiError(422, "invalid", f"lang must be zh or en, got {body.lang!r}", "lang")

    def run(conn: psycopg.Connection) -> dict[str, Any]:
        made, token = add_user(conn, body.name, body.role, crew=body.crew, password=body.password, lang=body.lang)
        return {**made.as_dict(), "token": token}

    try:
        return await in_thread(pool, run)
    except AuthError as exc:
        raise ApiError(exc.status, "conflict" if exc.status == 409 else "invalid", str(exc), exc.field) from None


@router.post("/{name}/disable")
async def disable_user(user: Admin, conn: ConnDep, name: str) -> dict[str, Any]:
    """Role: admin. The user can no longer sign in, and its tokens stop working within seconds."""
    row = await (
        await conn.execute(
            "UPDATE users SET disabled_at = coalesce(disabled_at, now()) WHERE name = %s RETURNING id, disabled_at",
            (name,),
        )
    ).fetchone()
    if row is None:
        raise ApiError(404, "not_found", f"user {name!r} does not exist", "name")
    await conn.execute("DELETE FROM user_tokens WHERE user_id = %s", (row["id"],))  # type: ignore[call-overload]
    return {"name": name, "disabled_at": row["disabled_at"]}  # type: ignore[call-overload]

"""Signing in and out, and who the caller is: the login form's session tokens and the user's own settings."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Request

from api.auth import AuthError, PasswordChecks, check_login, find_login, finish_login, forget, revoke
from api.deps import TOKEN_COOKIE, ClockDep, SignedIn, SyncPoolDep, decode_body, in_thread, json_body, request_token
from api.errors import ApiError
from api.jsonsafe import FiniteJSONResponse
from api.ratelimit import RateLimit

router = APIRouter(prefix="/api/v1", tags=["auth"])

_LOGINS = RateLimit("logins", per_minute=10.0, burst=10)  # slows a password guesser to ten tries a minute per address


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(max_length=64)]
    password: Annotated[str, msgspec.Meta(max_length=256)]


@router.post("/login", openapi_extra=json_body(LoginBody))
async def log_in(request: Request, pool: SyncPoolDep) -> FiniteJSONResponse:
    """Role: none (rate-limited per client). `{"name", "password"}` → `{"token", "user", "expires_at"}`; the
    token also comes back as an HttpOnly cookie, which the pages use."""
    _LOGINS.check(request)
    body = await decode_body(request, LoginBody)
    hours = float(getattr(request.app.state, "session_hours", 12.0))
    ttl = dt.timedelta(hours=hours)

    checks: PasswordChecks = request.app.state.password_checks
    try:
        candidate = await in_thread(pool, lambda conn: find_login(conn, body.name))
        # The hashing holds no database connection: a burst of logins cannot starve the routes that need one.
        checked, rehash = await checks.run(check_login, candidate, body.password)
        token = await in_thread(pool, lambda conn: finish_login(conn, checked, rehash, ttl=ttl))
    except AuthError as exc:
        raise ApiError(exc.status, "busy" if exc.status == 503 else "unauthorized", str(exc)) from None
    user = checked.as_dict()
    expires = dt.datetime.now(dt.UTC) + ttl
    response = FiniteJSONResponse({"token": token, "user": user, "expires_at": expires.isoformat()})
    secure = bool(getattr(request.app.state, "secure_cookies", False)) or request.url.scheme == "https"
    response.set_cookie(
        TOKEN_COOKIE,
        token,
        max_age=int(ttl.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=secure,  # never sent over plain http when the site is served over https
        path="/",
    )
    return response


@router.post("/logout")
async def log_out(user: SignedIn, request: Request, pool: SyncPoolDep) -> FiniteJSONResponse:
    """Role: any signed-in user. Revokes the token this request carries (a login's session, or an API token)."""
    token = request_token(request)
    if token is not None:
        await in_thread(pool, lambda conn: revoke(conn, token))
    response = FiniteJSONResponse({"signed_out": user.name})
    response.delete_cookie(TOKEN_COOKIE, path="/")
    return response


@router.get("/me")
async def who_am_i(user: SignedIn, request: Request, clock: ClockDep) -> dict[str, Any]:
    """Role: any signed-in user. `{"id", "name", "role", "crew", "lang", "timezone", "now"}`: who the caller
    is, the language the pages show it, the city's time zone the pages show times in, and the server's time
    (a compressed demo clock may run far from the browser's)."""
    timezone = getattr(request.app.state, "timezone", "Asia/Shanghai")
    return {**user.as_dict(), "timezone": timezone, "now": clock.now().isoformat()}


class MeBody(msgspec.Struct, forbid_unknown_fields=True):
    lang: Literal["zh", "en"]


@router.patch("/me", openapi_extra=json_body(MeBody))
async def update_me(user: SignedIn, request: Request, pool: SyncPoolDep) -> dict[str, Any]:
    """Role: any signed-in user. `{"lang": "zh" | "en"}`: the language the pages show this user."""
    body = await decode_body(request, MeBody)
    await in_thread(pool, lambda conn: conn.execute("UPDATE users SET lang = %s WHERE id = %s", (body.lang, user.id)))
    token = request_token(request)
    if token is not None:
        forget(token)
    return {**user.as_dict(), "lang": body.lang}

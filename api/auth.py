"""Users, roles and bearer tokens.

Four roles: `viewer` reads everything; `operator` also commands lamps and acts on tickets; `crew` sees and acts
on its own crew's tickets only; `admin` also manages users, crews and schedules. A token is 32 random bytes,
shown once and stored as its SHA-256 (enough for a secret with that much entropy); a password, for the login
form, is stored as scrypt. API tokens last until revoked; a login's session token for `session_hours`.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import datetime as dt
import functools
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg

from alerts.crews import crew_exists

__all__ = [
    "ROLES",
    "AuthError",
    "Candidate",
    "PasswordChecks",
    "User",
    "add_user",
    "check_login",
    "disable_user",
    "find_login",
    "finish_login",
    "forget",
    "hash_password",
    "issue_token",
    "list_user_rows",
    "login",
    "revoke",
    "user_for_token",
    "verify_password",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

ROLES = ("viewer", "operator", "crew", "admin")
# OWASP's password-storage guidance lists scrypt N=2^17, r=8, p=1 and equal-cost choices with less memory; N=2^14
# with p=5 is one of them (16 MiB per hash, so concurrent logins stay cheap in memory). Hashes made with other
# parameters are redone at the user's next successful login.
_SCRYPT = {"n": 2**14, "r": 8, "p": 5}
_MAXMEM = 64 * 1024 * 1024


class AuthError(Exception):
    def __init__(self, message: str, *, status: int = 422, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    role: str
    crew: str | None
    lang: str

    def can(self, need: str) -> bool:
        """Whether this user holds the role `need` (viewer < operator < admin; crew stands apart)."""
        if self.role == "admin":
            return True
        if need == "viewer":
            return self.role in ("viewer", "operator")
        return self.role == need

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "role": self.role, "crew": self.crew, "lang": self.lang}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, maxmem=_MAXMEM, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    got = hashlib.scrypt(
        password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32, maxmem=_MAXMEM
    )
    return hmac.compare_digest(got, base64.b64decode(digest))


def _current(stored: str) -> bool:
    """Whether a stored hash was made with today's parameters."""
    return stored.split("$")[1:4] == [str(_SCRYPT["n"]), str(_SCRYPT["r"]), str(_SCRYPT["p"])]


# Checked against when the user does not exist or has no password, so a refusal takes as long either way and the
# time of the answer does not tell whether a name exists.
@functools.cache
def _decoy() -> str:
    return hash_password(secrets.token_urlsafe(16))


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def add_user(
    conn: psycopg.Connection,
    name: str,
    role: str,
    *,
    crew: str | None = None,
    password: str | None = None,
    lang: str = "zh",
    replace: bool = False,
) -> tuple[User, str]:
    """Create (or with `replace`, reset) a user; returns it and a new API token, the only time it is shown."""
    if role not in ROLES:
        raise AuthError(f"role must be one of {', '.join(ROLES)}, got {role!r}", field="role")
    if (role == "crew") != (crew is not None):
        raise AuthError("a crew user needs --crew, and only a crew user takes one", field="crew")
    if crew is not None and not crew_exists(conn, crew):
        raise AuthError(f"crew {crew!r} does not exist (add it first: POST /api/v1/crews)", field="crew")
    if password is not None and len(password) < 8:
        raise AuthError("a password needs at least 8 characters", field="password")
    pw = hash_password(password) if password is not None else None
    with conn.transaction():
        exists = conn.execute("SELECT id FROM users WHERE name = %s", (name,)).fetchone()
        if exists and not replace:
            raise AuthError(f"user {name!r} already exists", status=409, field="name")
        try:
            row = conn.execute(
                """INSERT INTO users (name, role, crew_id, password_hash, lang) VALUES (%s, %s, %s, %s, %s)
                   ON CONFLICT (name) DO UPDATE SET role = EXCLUDED.role, crew_id = EXCLUDED.crew_id,
                       password_hash = EXCLUDED.password_hash, disabled_at = NULL
                   RETURNING id, lang""",
                (name, role, crew, pw, lang),
            ).fetchone()
        except psycopg.errors.CheckViolation:
            raise AuthError(
                f"user name {name!r}: 2 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
                field="name",
            ) from None
        assert row is not None
        if exists:
            conn.execute("DELETE FROM user_tokens WHERE user_id = %s", (row[0],))
        user = User(int(row[0]), name, role, crew, str(row[1]))
        return user, issue_token(conn, user.id, kind="api")


def issue_token(conn: psycopg.Connection, user_id: int, *, kind: str, ttl: dt.timedelta | None = None) -> str:
    token = "ll_" + secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO user_tokens (token_hash, user_id, kind, expires_at) VALUES (%s, %s, %s, now() + %s)",
        (_digest(token), user_id, kind, ttl),
    )
    return token


@dataclass(frozen=True)
class Candidate:
    """Who a login names, as stored (None fields when nobody by that name may sign in)."""

    name: str
    user: User | None
    stored: str | None


def find_login(conn: psycopg.Connection, name: str) -> Candidate:
    """The user a login names and the stored hash to check its password against (a quick read)."""
    row = conn.execute(
        "SELECT id, role, crew_id, lang, password_hash FROM users WHERE name = %s AND disabled_at IS NULL", (name,)
    ).fetchone()
    if row is None or row[4] is None:
        return Candidate(name, None, None)
    return Candidate(name, User(int(row[0]), name, row[1], row[2], row[3]), str(row[4]))


def check_login(candidate: Candidate, password: str) -> tuple[User, str | None]:
    """The password against the stored hash: CPU only (about 0.1 s of scrypt), no connection held. Returns the
    user and, when the stored hash is older and cheaper, a new one to store. The same refusal for any mismatch,
    taking as long whether or not the name exists."""
    ok = verify_password(password, candidate.stored or _decoy()) and candidate.stored is not None
    if not ok or candidate.user is None or candidate.stored is None:
        raise AuthError("wrong user name or password", status=401)
    rehash = None if _current(candidate.stored) else hash_password(password)
    return candidate.user, rehash


def finish_login(conn: psycopg.Connection, user: User, rehash: str | None, *, ttl: dt.timedelta) -> str:
    """A checked login's session token (and its better hash stored): a quick write."""
    if rehash is not None:
        conn.execute("UPDATE users SET password_hash = %s WHERE id = %s", (rehash, user.id))
    return issue_token(conn, user.id, kind="session", ttl=ttl)


def login(conn: psycopg.Connection, name: str, password: str, *, ttl: dt.timedelta) -> tuple[User, str]:
    """Check a name and password; returns the user and a session token (the three steps above on one
    connection: for tools; the API holds no connection while it hashes)."""
    user, rehash = check_login(find_login(conn, name), password)
    return user, finish_login(conn, user, rehash, ttl=ttl)


class PasswordChecks:
    """Password hashing off the event loop and off every database connection, on a thread of its own: at most
    `threads` run at once (one: on a 2-core machine a second would leave the API's loop no core of its own) and
    `waiting` more queue; a login beyond that is refused at once (503), so a burst of logins costs the callers,
    not the city's other requests."""

    def __init__(self, *, threads: int = 1, waiting: int = 8) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="password-check")
        self.limit = threads + waiting
        self.busy = 0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.busy >= self.limit:
            raise AuthError(f"{self.busy} sign-ins are being checked; try again in a moment", status=503)
        self.busy += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self.busy -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def list_user_rows(conn: psycopg.Connection) -> list[tuple[str, str, str, str, bool, bool]]:
    """Every user by name: (name, role, crew or "", lang, can log in with a password, disabled)."""
    rows = conn.execute(
        "SELECT name, role, coalesce(crew_id, ''), lang, password_hash IS NOT NULL, disabled_at IS NOT NULL "
        "FROM users ORDER BY name"
    ).fetchall()
    return [(r[0], r[1], r[2], r[3], bool(r[4]), bool(r[5])) for r in rows]


def disable_user(conn: psycopg.Connection, name: str) -> bool:
    """Disable the user `name` and revoke its tokens; False when there is no such user."""
    row = conn.execute(
        "UPDATE users SET disabled_at = coalesce(disabled_at, now()) WHERE name = %s RETURNING id", (name,)
    ).fetchone()
    if row is None:
        return False
    conn.execute("DELETE FROM user_tokens WHERE user_id = %s", (row[0],))
    return True


def revoke(conn: psycopg.Connection, token: str) -> None:
    conn.execute("DELETE FROM user_tokens WHERE token_hash = %s", (_digest(token),))
    forget(token)


_cache: dict[bytes, tuple[float, User]] = {}
_CACHE_S = 5.0  # a revoked token or a changed role takes effect within this many seconds


def cached_user(token: str) -> User | None:
    """The user of a token checked in the last few seconds, without a database round trip; None otherwise."""
    hit = _cache.get(_digest(token))
    return hit[1] if hit is not None and hit[0] > time.monotonic() else None


async def user_for_token(conn: psycopg.AsyncConnection, token: str) -> User | None:
    """The user a token belongs to, or None when it is unknown, expired or its user disabled."""
    key = _digest(token)
    hit = _cache.get(key)
    now = time.monotonic()
    if hit is not None and hit[0] > now:
        return hit[1]
    row = await (
        await conn.execute(
            """SELECT u.id, u.name, u.role, u.crew_id, u.lang FROM user_tokens t JOIN users u ON u.id = t.user_id
               WHERE t.token_hash = %s AND u.disabled_at IS NULL
                 AND (t.expires_at IS NULL OR t.expires_at > now())""",
            (key,),
        )
    ).fetchone()
    if row is not None:
        try:  # when it was last used is worth a write, not a refusal: a read-only database still serves readers
            async with conn.transaction():
                await conn.execute("UPDATE user_tokens SET last_used_at = now() WHERE token_hash = %s", (key,))
        except psycopg.Error as exc:
            logger.warning("token of user %s: last use not recorded: %s", row[1], exc)
    if row is None:
        _cache.pop(key, None)
        return None
    user = User(int(row[0]), str(row[1]), str(row[2]), row[3], str(row[4]))
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[key] = (now + _CACHE_S, user)
    return user


def forget(token: str) -> None:
    """Drop a token from this process's cache (after a revoke or a change of the user)."""
    _cache.pop(_digest(token), None)

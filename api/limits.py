"""Limits every request meets before a route sees it: the body's size (read as it streams, never past the limit:
a 422 naming the field when one JSON string is what ran over, else 413), text PostgreSQL cannot store (U+0000 in
the path or a query value) and numbers that are no numbers (a query value spelling NaN or an infinity, which
Python's float takes): 422 naming the parameter."""

from __future__ import annotations

import json
import math
import re
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MAX_BODY", "MAX_SMALL_BODY", "SMALL_BODY_PATHS", "RequestLimits", "nul_path", "overrunning_field"]

MAX_BODY = 1024 * 1024
MAX_SMALL_BODY = 16 * 1024
# Open to anyone: a login or a citizen's report is a few hundred bytes.
SMALL_BODY_PATHS = ("/api/v1/login", "/login", "/api/v1/public/reports")


# What float() takes as NaN or an infinity: spelt out, or a literal too large for a double (1e400).
_NUMBER = re.compile(r"[+-]?(nan|inf|infinity|[0-9.]+e[+-]?[0-9]+)", re.IGNORECASE)


def not_finite(value: str) -> bool:
    """Whether a query value is a number that is not finite (so a route's float would be NaN or ±inf)."""
    if not _NUMBER.fullmatch(value.strip()):
        return False
    try:
        return not math.isfinite(float(value))
    except ValueError:
        return False


def nul_path(value: Any, path: str = "") -> str | None:
    """Where in a decoded JSON value a string holds U+0000 (`a.b[2]`), or None."""
    if isinstance(value, str):
        return (path or "body") if "\x00" in value else None
    if isinstance(value, dict):
        for k, v in value.items():
            found = (
                nul_path(k, path)
                if isinstance(k, str) and "\x00" in k
                else nul_path(v, f"{path}.{k}" if path else str(k))
            )
            if found:
                return found
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            if found := nul_path(v, f"{path}[{i}]"):
                return found
    return None


_KEY_BEFORE = re.compile(r'"((?:[^"\\]|\\.){1,200})"\s*:\s*$')


def overrunning_field(prefix: bytes) -> str | None:
    """The key whose string value is still open where a JSON body's first bytes end (the field that made the body
    too large: a pasted note), or None when the body is no such object."""
    text = prefix.decode("utf-8", "ignore")
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg.startswith("Unterminated string") and (key := _KEY_BEFORE.search(text, max(0, e.pos - 410), e.pos)):
            return key.group(1)
    except RecursionError:
        return None
    return None


class _TooLarge(Exception):
    pass


class RequestLimits:
    """Pure ASGI, so a large body is refused as it arrives rather than after it was read into memory."""

    def __init__(self, app: ASGIApp, *, max_body: int = MAX_BODY, max_small_body: int = MAX_SMALL_BODY) -> None:
        self.app = app
        self.max_body = max_body
        self.max_small_body = max_small_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if "\x00" in path:
            await _reply(send, 422, "invalid", "the path holds a NUL character (U+0000)", "path")
            return
        for key, value in parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True):
            if "\x00" in key or "\x00" in value:
                name = key.replace("\x00", "")
                await _reply(send, 422, "invalid", f"{name}: holds a NUL character (U+0000)", name or "query")
                return
            if not_finite(value):
                await _reply(send, 422, "invalid", f"{key}: {value[:40]!r} is not a finite number", key or "query")
                return
        limit = self.max_small_body if path.rstrip("/") in SMALL_BODY_PATHS else self.max_body
        declared = next((v for k, v in scope.get("headers", []) if k == b"content-length"), None)
        if declared is not None and not declared.isdigit():
            await _reply(send, 413, "too_large", f"the request body exceeds {limit:,} bytes", None)
            return
        if declared is not None and int(declared) > limit:
            await _too_large(send, await _prefix(receive, limit), limit)
            return
        seen = bytearray()  # what the route was given so far: at most the limit, as the route holds it anyway
        started = False

        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                if len(seen) + len(chunk) > limit:
                    seen.extend(chunk[: limit - len(seen)])
                    raise _TooLarge
                seen.extend(chunk)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await _too_large(send, bytes(seen), limit)


async def _prefix(receive: Receive, limit: int) -> bytes:
    """A body's first `limit` bytes, read no further."""
    got = bytearray()
    while len(got) < limit:
        message = await receive()
        if message["type"] != "http.request":
            break
        got.extend(message.get("body", b"")[: limit - len(got)])
        if not message.get("more_body", False):
            break
    return bytes(got)


async def _too_large(send: Send, prefix: bytes, limit: int) -> None:
    if field := overrunning_field(prefix):
        message = f"{field}: too long (a request body holds at most {limit:,} bytes; docs/api.md gives each limit)"
        await _reply(send, 422, "invalid", message, field)
    else:
        await _reply(send, 413, "too_large", f"the request body exceeds {limit:,} bytes", None)


async def _reply(send: Send, status: int, code: str, message: str, field: str | None) -> None:
    err = {"code": code, "message": message} | ({"field": field} if field else {})
    body = json.dumps({"error": err}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

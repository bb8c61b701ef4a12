"""One error shape for every endpoint: {"error": {"code", "message", "field"?}}."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from psycopg_pool import PoolTimeout
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from api.jsonsafe import FiniteJSONResponse
from kernel.errors import Problem

__all__ = ["RESPONSES", "ApiError", "ErrorBody", "install"]

logger = logging.getLogger(__name__)


class ApiError(HTTPException):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(status, message, headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)
        self.code = code
        self.field = field


class _Error(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every error's shape."""

    error: _Error


# What any route may answer besides its success, declared for every route so clients and fuzzers know.
RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "not signed in, or the token is unknown, expired or revoked"},
    403: {"model": ErrorBody, "description": "the signed-in user's role does not allow this"},
    404: {"model": ErrorBody, "description": "no such thing"},
    413: {"model": ErrorBody, "description": "the request body is over its limit"},
    422: {"model": ErrorBody, "description": "a parameter or the body is wrong; `field` names it"},
    429: {"model": ErrorBody, "description": "too many requests from this client; try again later"},
    503: {"model": ErrorBody, "description": "the database is unavailable, or the API is starting or busy"},
}


STATUS_OF: dict[str, int] = {"invalid": 422, "not_found": 404, "conflict": 409, "unavailable": 503}


def _body(code: str, message: str, field: str | None = None) -> dict[str, dict[str, str]]:
    err = {"code": code, "message": message}
    if field:
        err["field"] = field
    return {"error": err}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> FiniteJSONResponse:
        return FiniteJSONResponse(
            _body(exc.code, str(exc.detail), exc.field), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Problem)
    async def problem(_: Request, exc: Problem) -> FiniteJSONResponse:
        # Every package's own errors: the HTTP status is chosen here, from what kind of problem it is.
        headers = {"Retry-After": "5"} if exc.kind == "unavailable" else None
        return FiniteJSONResponse(
            _body(exc.kind, exc.message, exc.field), status_code=STATUS_OF[exc.kind], headers=headers
        )

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> FiniteJSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return FiniteJSONResponse(_body(code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> FiniteJSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body")]
        field = ".".join(loc) or None
        msg = f"{field}: {first.get('msg', 'invalid')}" if field else str(first.get("msg", "invalid request"))
        return FiniteJSONResponse(_body("invalid", msg, field), status_code=422)

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(PoolTimeout)
    async def database_down(request: Request, exc: Exception) -> FiniteJSONResponse:
        # A restart, a failover, a network cut: say so at once rather than a bare 500; the pool reconnects.
        logger.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
        message = "the database is unavailable; try again in a moment"
        return FiniteJSONResponse(_body("database_unavailable", message), status_code=503, headers={"Retry-After": "5"})

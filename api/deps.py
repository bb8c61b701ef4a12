"""Typed dependencies shared by the routers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Annotated, TypeVar

import msgspec
import psycopg
from fastapi import Depends, Request
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from api.errors import ApiError
from telemetry.clock import Clock
from telemetry.lighting import LightingEngine

__all__ = ["ClockDep", "ConnDep", "EngineDep", "PoolDep", "SyncPoolDep", "decode_body", "in_thread"]

T = TypeVar("T")


def get_pool(request: Request) -> AsyncConnectionPool:
    pool: AsyncConnectionPool = request.app.state.pool
    return pool


PoolDep = Annotated[AsyncConnectionPool, Depends(get_pool)]


async def get_conn(pool: PoolDep) -> AsyncIterator[psycopg.AsyncConnection]:
    async with pool.connection() as conn:
        conn.row_factory = dict_row  # type: ignore[assignment]
        yield conn


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


async def decode_body(request: Request, kind: type[T]) -> T:
    """The request's JSON body as `kind`; a 422 naming what is wrong otherwise."""
    try:
        return msgspec.json.decode(await request.body(), type=kind)
    except msgspec.ValidationError as exc:
        raise ApiError(422, "invalid", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ApiError(422, "invalid", f"not a JSON object: {exc}") from None

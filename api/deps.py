"""Typed dependencies shared by the routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import psycopg
from fastapi import Depends, Request
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

__all__ = ["ConnDep", "PoolDep"]


def get_pool(request: Request) -> AsyncConnectionPool:
    pool: AsyncConnectionPool = request.app.state.pool
    return pool


PoolDep = Annotated[AsyncConnectionPool, Depends(get_pool)]


async def get_conn(pool: PoolDep) -> AsyncIterator[psycopg.AsyncConnection]:
    async with pool.connection() as conn:
        conn.row_factory = dict_row  # type: ignore[assignment]
        yield conn


ConnDep = Annotated[psycopg.AsyncConnection, Depends(get_conn)]

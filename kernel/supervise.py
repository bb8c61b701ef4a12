"""The one loop every long-running job of the backend runs in: call a step for ever, and let no failure end it.

A job is a step (an async function doing one round of work: one partition upkeep, one escalation check, one
takeover) and when to call it again. `supervise` calls it, one call at a time, until cancelled:

- after a step that returned, it waits `every_s` (or calls again at once when the step waits for its own work,
  an event or a queue);
- after a step that raised, it logs one line naming the job, the error and when it tries again, and waits: the
  job's period when it has one, else the next delay of its `Backoff` (exponential, capped, jittered, reset by the
  next success). An error nobody expected (not the database's, not one of ours saying a service is away) is
  logged with its traceback, and the job still goes on: one bad round never stops a gateway's upkeep.

Cancelling the task ends the loop at once, between steps or inside one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

import psycopg

from kernel.backoff import Backoff
from kernel.errors import Problem

__all__ = ["supervise"]

_logger = logging.getLogger(__name__)


def _expected(exc: BaseException) -> bool:
    """A failure of the world, not of the code: the database refused or went away, a service said it is away,
    a connection broke."""
    return isinstance(exc, psycopg.Error | OSError | TimeoutError) or (
        isinstance(exc, Problem) and exc.kind == "unavailable"
    )


async def supervise(
    step: Callable[[], Awaitable[object]],
    *,
    what: str,
    every_s: float | None = None,
    first_s: float = 0.0,
    backoff: Backoff | None = None,
    log: logging.Logger | None = None,
    level: int = logging.WARNING,
) -> NoReturn:
    """Call `step` for ever, `every_s` apart (None: at once again, for a step that waits for its work), the
    first time after `first_s`. A step that raises is logged as `what` failing (at `level` when the failure is
    the world's, with its traceback when it is not) and tried again after the period, or after `backoff`'s next
    delay when there is no period."""
    if every_s is not None and every_s <= 0:
        raise ValueError(f"{what}: every_s must be positive, got {every_s}")
    log = log or _logger
    backoff = backoff or Backoff()
    if first_s > 0:
        await asyncio.sleep(first_s)
    while True:
        try:
            await step()
        except Exception as exc:  # the point: no round's failure ends the job
            delay = backoff.fail() if every_s is None else every_s
            if _expected(exc):
                log.log(level, "%s failed (trying again in %.1f s): %s", what, delay, exc)
            else:
                log.exception("%s failed unexpectedly (trying again in %.1f s)", what, delay)
            await asyncio.sleep(delay)
            continue
        backoff.ok()
        if every_s is not None:
            await asyncio.sleep(every_s)

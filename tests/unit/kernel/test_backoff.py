"""The one backoff: doubling from the smallest delay to the cap, spread by the jitter, starting over when the
thing works again (or, for a connection, once it stayed up long enough); and the one loop that runs a job for
ever with it (`supervise`)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.backoff import Backoff, backoff_delay
from kernel.supervise import supervise


@given(
    attempt=st.integers(1, 10_000),
    min_s=st.floats(0.001, 10),
    span=st.floats(1, 1000),
    jitter=st.floats(0, 0.99),
)
def test_every_delay_lies_within_the_jitter_of_its_doubling(
    attempt: int, min_s: float, span: float, jitter: float
) -> None:
    max_s = min_s * span
    base = min(min_s * 2.0 ** min(attempt - 1, 60), max_s)
    d = backoff_delay(attempt, min_s, max_s, jitter)
    assert base * (1 - jitter) - 1e-9 <= d <= base * (1 + jitter) + 1e-9


def test_delays_double_up_to_the_cap_and_start_over_after_a_success() -> None:
    b = Backoff(0.5, 4.0, jitter=0)
    assert [b.fail() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.ok()
    assert b.fail() == 0.5


def test_a_connection_that_drops_at_once_keeps_backing_off() -> None:
    b = Backoff(0.5, 30.0, jitter=0, held_s=60.0)
    b.fail()
    b.fail()
    b.up()  # connected, then lost within a second: no fresh start
    assert b.fail() == 2.0
    b.up()
    b._up_at = 0.0  # connected a long time ago (monotonic 0): it had stayed up, so the count starts over
    assert b.fail() == 0.5


@pytest.mark.parametrize(
    ("attempt", "min_s", "max_s", "jitter", "word"),
    [(0, 0.5, 30, 0.2, "attempt"), (1, 0, 30, 0.2, "min_s"), (1, 5, 1, 0.2, "max_s"), (1, 0.5, 30, 1.5, "jitter")],
)
def test_nonsense_settings_are_refused_by_name(
    attempt: int, min_s: float, max_s: float, jitter: float, word: str
) -> None:
    with pytest.raises(ValueError, match=word):
        backoff_delay(attempt, min_s, max_s, jitter)


async def _run_until(job: Any, done: asyncio.Event) -> None:
    """Run a supervised job until `done` is set (10 s at most), then cancel it, as a process's end does."""
    task = asyncio.create_task(job)
    try:
        await asyncio.wait_for(done.wait(), 10)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.asyncio
async def test_a_supervised_job_outlives_every_failure_and_says_what_failed(caplog: pytest.LogCaptureFixture) -> None:
    """Rounds that raise (the database's error, a bug's) are logged naming the job and tried again after the
    period; the job runs on and its later rounds succeed."""
    rounds: list[str] = []
    five = asyncio.Event()

    async def step() -> None:
        rounds.append("round")
        if len(rounds) == 5:
            five.set()
        if len(rounds) == 1:
            raise psycopg.OperationalError("server closed the connection")
        if len(rounds) == 2:
            raise KeyError("a bug")

    with caplog.at_level(logging.INFO):
        await _run_until(supervise(step, what="partition upkeep", every_s=0.02), five)  # on past both failures
    failed = [r for r in caplog.records if "partition upkeep failed" in r.getMessage()]
    assert [r.exc_info is not None for r in failed] == [False, True]  # a traceback only for the unexpected one
    assert "server closed the connection" in failed[0].getMessage() and "0.0 s" in failed[0].getMessage()


@pytest.mark.asyncio
async def test_a_job_without_a_period_backs_off_and_starts_over_after_a_success() -> None:
    """A step that waits for its own work is called again as soon as it returns; its failures wait the backoff's
    doubling delays, and a success starts them over."""
    outcomes = iter([False, False, False, True, False])
    spent = asyncio.Event()  # then no more work, ever
    waits: list[float | str] = []

    class Recorded(Backoff):
        def fail(self) -> float:
            waits.append(super().fail())
            return waits[-1]  # type: ignore[return-value]

        def ok(self) -> None:
            waits.append("ok")
            super().ok()

    async def step() -> None:
        outcome = next(outcomes, None)
        if outcome is None:
            spent.set()
            await asyncio.Event().wait()
        elif not outcome:
            raise psycopg.OperationalError("away")

    await _run_until(supervise(step, what="takeover", backoff=Recorded(0.01, 1.0, jitter=0)), spent)
    assert waits == [0.01, 0.02, 0.04, "ok", 0.01]


def test_a_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="every_s must be positive"):
        asyncio.run(supervise(lambda: asyncio.sleep(0), what="x", every_s=0))

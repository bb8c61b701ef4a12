"""The one backoff: doubling from the smallest delay to the cap, spread by the jitter, starting over when the
thing works again (or, for a connection, once it stayed up long enough)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.backoff import Backoff, backoff_delay


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

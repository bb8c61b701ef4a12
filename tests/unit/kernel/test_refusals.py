"""Which database errors blame a batch's data (split it, quarantine the message at fault) and which are the
database's state (hold ingest, acknowledge nothing, retry): pure, over psycopg's own error classes."""

from __future__ import annotations

import psycopg
import psycopg.errors as e
import pytest

from kernel.database import refusal, refused_for_data


@pytest.mark.parametrize(
    "exc",
    [
        e.CheckViolation("new row violates check constraint"),
        e.NumericValueOutOfRange("value out of range"),
        e.InvalidTextRepresentation("invalid input syntax"),
        e.CardinalityViolation("ON CONFLICT DO UPDATE command cannot affect row a second time"),
        e.ProgramLimitExceeded("index row size exceeds maximum"),
        psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),
        ValueError("a value psycopg could not dump"),
    ],
)
def test_what_one_message_carried_is_its_own_fault(exc: Exception) -> None:
    assert refused_for_data(exc)


@pytest.mark.parametrize(
    "exc",
    [
        e.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"),
        e.InsufficientPrivilege("permission denied for table lamp_readings"),
        e.DiskFull("could not extend file"),
        e.OutOfMemory("out of memory"),
        e.AdminShutdown("terminating connection due to administrator command"),
        e.SerializationFailure("could not serialize access"),
        e.LockNotAvailable("could not obtain lock"),
        psycopg.OperationalError("connection failed"),
        psycopg.InterfaceError("the connection is closed"),
        ConnectionResetError("reset by peer"),
    ],
)
def test_the_databases_state_is_nobodys_data(exc: Exception) -> None:
    assert not refused_for_data(exc)


def test_a_refusal_names_the_state_and_its_sqlstate() -> None:
    words = refusal(e.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"))
    assert words.startswith("the database is read-only") and "SQLSTATE 25006" in words

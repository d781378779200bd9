"""Every driver or OS error of Postgres comes out as ours (`mailbridge.aio.db._translate`),
and whatever ended the connection as DatabaseUnavailable.  Pure: exceptions built by hand."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from mailbridge.aio.db import _NeverSent, _translate
from mailbridge.errors import (
    DatabaseDataError,
    DatabaseError,
    DatabaseTimeout,
    DatabaseUnavailable,
    UniqueViolation,
)

CONNECTION_ENDED = [
    (asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"), "08003"),
    (asyncpg.PostgresConnectionError("connection failure"), "08000"),
    (asyncpg.AdminShutdownError("terminating connection due to administrator command"), "57P01"),
    (asyncpg.CrashShutdownError("terminating connection because of crash of another server process"), "57P02"),
    (asyncpg.DatabaseDroppedError("terminating connection because the database was dropped"), "57P04"),
    (asyncpg.IdleSessionTimeoutError("terminating connection due to idle-session timeout"), "57P05"),
    (asyncpg.IdleInTransactionSessionTimeoutError("terminating connection due to idle-in-transaction timeout"),
     "25P03"),
    (asyncpg.TooManyConnectionsError('too many connections for role "mb"'), "53300"),
    (asyncpg.CannotConnectNowError("the database system is starting up"), "57P03"),
]


@pytest.mark.parametrize("exc, sqlstate", CONNECTION_ENDED, ids=lambda v: type(v).__name__ if not
                         isinstance(v, str) else v)
def test_an_ended_or_refused_session_is_unavailable_with_its_sqlstate(exc, sqlstate):
    ours = _translate(exc)
    assert isinstance(ours, DatabaseUnavailable)
    assert ours.sqlstate == sqlstate
    assert str(exc) in str(ours)


@pytest.mark.parametrize("exc", [
    asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
    asyncpg.InterfaceError("connection is closed"),
    asyncpg.InterfaceError("cannot call Connection.fetch(): connection has been released back to the pool"),
])
def test_a_statement_the_driver_never_sent_may_be_run_on_another_connection(exc):
    ours = _translate(exc)
    assert isinstance(ours, _NeverSent) and isinstance(ours, DatabaseUnavailable)


@pytest.mark.parametrize("exc", [
    asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    asyncpg.ProtocolError("unexpected message"),
    ConnectionError("unexpected connection_lost() call"),
    ConnectionResetError(104, "Connection reset by peer"),
    OSError(111, "Connect call failed"),
    TimeoutError(),
    asyncio.CancelledError(),  # the driver's own: its connection closed under the operation
])
def test_the_driver_losing_its_connection_is_unavailable_and_not_retried_blindly(exc):
    ours = _translate(exc)
    assert isinstance(ours, DatabaseUnavailable) and not isinstance(ours, _NeverSent)


def test_statement_errors_stay_statement_errors():
    assert isinstance(_translate(asyncpg.UniqueViolationError("duplicate key")), UniqueViolation)
    assert isinstance(_translate(asyncpg.QueryCanceledError("canceling statement")), DatabaseTimeout)
    assert isinstance(_translate(asyncpg.LockNotAvailableError("lock timeout")), DatabaseTimeout)
    assert isinstance(_translate(asyncpg.StringDataRightTruncationError("too long")), DatabaseDataError)
    other = _translate(asyncpg.UndefinedTableError('relation "x" does not exist'))
    assert type(other) is DatabaseError and other.sqlstate == "42P01"


def test_anything_else_is_left_alone():
    exc = ValueError("not a database error")
    assert _translate(exc) is exc

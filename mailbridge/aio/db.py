"""Trio-facing Postgres over asyncpg: a pool, transactions, LISTEN (the locks: `mailbridge.aio.locks`).

Every asyncpg error is translated into `mailbridge.errors`; whatever ends a connection
(refused, terminated, lost, given up by the driver) is DatabaseUnavailable, and such a
connection is dropped, never given back to the pool, which opens new ones once Postgres
takes them again.  A statement the driver refused to start on a connection that had
already ended is run once more on another.  Rows are asyncpg `Record`s
(read-only mappings).  Transactions roll back on any exception or cancellation; the
rollback is shielded and bounded, and a connection whose rollback fails is terminated
rather than returned to the pool in an unknown state.

The pool's connections carry `statement_timeout` and `lock_timeout` (STATEMENT_TIMEOUT,
LOCK_TIMEOUT by default): a statement stuck behind a user's long transaction, or one that
runs away, ends as DatabaseTimeout instead of stalling an actor without end.  Dedicated
connections (`connect_once`, the lock connections, LISTEN) have none: migrations may be long.
"""

from __future__ import annotations

import asyncio
import socket
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Iterable, Sequence
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import trio

from mailbridge.aio.loop import call
from mailbridge.errors import (
    DatabaseDataError,
    DatabaseError,
    DatabaseTimeout,
    DatabaseUnavailable,
    UniqueViolation,
)

CLEANUP_TIMEOUT = 5.0
STATEMENT_TIMEOUT = 60.0  # seconds a pooled statement may run
LOCK_TIMEOUT = 10.0  # seconds a pooled statement may wait for a lock

Record = asyncpg.Record


# Postgres closes the session after these (FATAL): the connection is gone, not the statement.
_SESSION_ENDED = (
    asyncpg.PostgresConnectionError,  # class 08, ConnectionDoesNotExistError among them
    asyncpg.AdminShutdownError,  # 57P01: pg_terminate_backend, a fast shutdown
    asyncpg.CrashShutdownError,  # 57P02
    asyncpg.DatabaseDroppedError,  # 57P04
    asyncpg.IdleSessionTimeoutError,  # 57P05
    asyncpg.IdleInTransactionSessionTimeoutError,  # 25P03
)


class _NeverSent(DatabaseUnavailable):
    """The connection had already ended (Postgres' farewell read, its socket not yet
    closed) when a statement was started: nothing was sent, so it may run on another."""


# the driver refuses these before it writes anything to the socket: the protocol is still
# reading the server's farewell, the connection is closed, or the pool took it back (lost)
_NOT_SENT = ("cannot switch to state", "connection is closed", "connection has been released back to the pool")


def _translate(exc: BaseException) -> BaseException:
    """Our error for a driver or OS error (`exc` itself when it is neither).  Whatever
    ended the connection (refused, lost, terminated, abandoned) is DatabaseUnavailable."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return UniqueViolation(str(exc), exc.sqlstate)
    if isinstance(exc, asyncpg.QueryCanceledError):
        return DatabaseTimeout(
            f"Postgres cancelled a statement that ran past statement_timeout (or was cancelled by hand): {exc}; "
            "the work is retried later (look for long-running queries if this repeats)", exc.sqlstate)
    if isinstance(exc, asyncpg.LockNotAvailableError):
        return DatabaseTimeout(
            f"a statement waited past lock_timeout for a lock another transaction holds: {exc}; the work is "
            "retried later (look in pg_stat_activity for a long transaction if this repeats)", exc.sqlstate)
    if isinstance(exc, (asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError)):
        return DatabaseUnavailable(f"Postgres refused the connection: {exc}", exc.sqlstate)
    if isinstance(exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
        return DatabaseUnavailable(f"Postgres rejected the login in DATABASE_URL: {exc}", exc.sqlstate)
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return DatabaseUnavailable(f"the database in DATABASE_URL does not exist: {exc}", exc.sqlstate)
    if isinstance(exc, _SESSION_ENDED):
        return DatabaseUnavailable(f"the Postgres connection was lost: {exc}", getattr(exc, "sqlstate", None))
    if isinstance(exc, (asyncpg.DataError, asyncpg.ProgramLimitExceededError)):
        return DatabaseDataError(str(exc), getattr(exc, "sqlstate", None))
    if isinstance(exc, asyncpg.PostgresError):
        return DatabaseError(str(exc), getattr(exc, "sqlstate", None))
    if isinstance(exc, asyncpg.exceptions._base.DataError):
        # the driver could not encode a parameter (e.g. a date beyond its range)
        return DatabaseDataError(f"a value could not be sent to Postgres: {exc}")
    if isinstance(exc, (asyncpg.InterfaceError, asyncpg.InternalClientError)):
        if any(text in str(exc) for text in _NOT_SENT):
            return _NeverSent(f"the Postgres connection was lost: {exc}")
        return DatabaseUnavailable(f"the Postgres connection failed: {exc}")
    if isinstance(exc, (OSError, ConnectionError, socket.gaierror, TimeoutError)):
        return DatabaseUnavailable(f"cannot reach Postgres: {exc}")
    if isinstance(exc, asyncio.CancelledError):
        # not ours (a trio cancellation arrives as trio.Cancelled): the driver gave the
        # operation up because its connection was closed under it
        return DatabaseUnavailable("the Postgres connection was closed during the operation")
    return exc


_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError,
                  TimeoutError, asyncio.CancelledError)


async def _db_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """`await fn(*args, **kwargs)` on the asyncio loop; any driver or OS error comes out as
    our DatabaseError (DatabaseUnavailable when the connection is the trouble)."""
    try:
        return await call(fn, *args, **kwargs)
    except _DRIVER_ERRORS as exc:
        raise _translate(exc) from None


def _passing(exc: DatabaseUnavailable) -> bool:
    """Whether `exc` is a refusal for the moment or a connection ended while it opened
    (worth another try), not an unreachable server or a wrong DATABASE_URL."""
    state = exc.sqlstate or ""
    return isinstance(exc, _NeverSent) or state.startswith("08") or state in ("53300", "57P01", "57P02", "57P03")


def _terminate(raw: Any) -> None:
    """Close `raw` (a connection, a pool's or a pool) at once; never raises (a pool
    connection already given back, or already closed, needs nothing more)."""
    try:
        raw.terminate()
    except Exception:  # noqa: BLE001 - released or closed: nothing left to drop
        pass


class Connection:
    """One acquired connection (inside a transaction or not)."""

    def __init__(self, raw: asyncpg.Connection) -> None:
        self._raw = raw

    async def execute(self, sql: str, *args: Any) -> str:
        return await _db_call(self._raw.execute, sql, *args)

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        await _db_call(self._raw.executemany, sql, args)

    async def fetch(self, sql: str, *args: Any) -> list[Record]:
        return await _db_call(self._raw.fetch, sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Record | None:
        return await _db_call(self._raw.fetchrow, sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await _db_call(self._raw.fetchval, sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator["Connection"]:
        """A (nested: savepoint) transaction on this connection."""
        tx = self._raw.transaction()
        await _db_call(tx.start)
        try:
            yield self
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT):
                try:
                    await _db_call(tx.rollback)
                except Exception:
                    _terminate(self._raw)
            raise
        else:
            await _db_call(tx.commit)


class Database:
    """A pool of connections to one Postgres database."""

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self._pool = pool
        self.dsn = dsn

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, dsn: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 15.0,
        statement_timeout: float | None = STATEMENT_TIMEOUT, lock_timeout: float | None = LOCK_TIMEOUT,
    ) -> AsyncIterator["Database"]:
        """Open a pool; DatabaseUnavailable when Postgres cannot be reached in `timeout`.

        A first connection Postgres refuses for the moment (too many connections, starting
        up) or ends while it opens is tried again until `timeout`; an unreachable server,
        a refused login or a missing database fail at once.  Its statements are bounded by
        `statement_timeout` and `lock_timeout` seconds (None or 0: unbounded); past them
        they raise DatabaseTimeout.
        """
        settings = {name: f"{int(value * 1000)}ms" for name, value in
                    (("statement_timeout", statement_timeout), ("lock_timeout", lock_timeout)) if value}
        last: DatabaseUnavailable | None = None
        delay = 0.1
        with trio.move_on_after(timeout) as scope:
            while True:
                try:
                    pool = await _db_call(
                        asyncpg.create_pool, dsn, min_size=min_size, max_size=max_size,
                        command_timeout=None, timeout=timeout, server_settings=settings,
                    )
                    break
                except DatabaseUnavailable as exc:
                    if not _passing(exc):
                        raise
                    last = exc
                await trio.sleep(delay)
                delay = min(1.0, delay * 2)
        if scope.cancelled_caught:
            raise DatabaseUnavailable(f"Postgres did not answer within {timeout:g} s"
                                      + (f" (last: {last})" if last else ""), last.sqlstate if last else None)
        try:
            yield cls(pool, dsn)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT) as closing:
                try:
                    await call(pool.close)
                except (Exception, asyncio.CancelledError):
                    _terminate(pool)
            if closing.cancelled_caught:
                _terminate(pool)

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Connection]:
        """A connection of the pool for the block; DatabaseUnavailable when none can be had.

        Given back afterwards (shielded, bounded), or dropped when its state is unknown
        (the block was cancelled or failed other than by a statement error) or it is
        lost; the pool opens a new one on a later `acquire` once Postgres is back.
        """
        raw = await _db_call(self._pool.acquire)
        try:
            yield Connection(raw)
        except BaseException as exc:
            if not isinstance(exc, DatabaseError) or isinstance(exc, DatabaseUnavailable):
                # cancelled (or worse) mid-operation, or the connection is gone: asyncpg would
                # wait for a server-side cancel or reset a dead session; drop it instead
                _terminate(raw)
            raise
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT) as releasing:
                try:
                    await call(self._pool.release, raw)
                except (Exception, asyncio.CancelledError):
                    _terminate(raw)  # the pool has dropped it already when it was attached
            if releasing.cancelled_caught:
                _terminate(raw)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A connection inside a transaction: commits on success, rolls back otherwise.
        A connection found dead at BEGIN is dropped and the transaction begun on another."""
        entered = False
        for attempt in (1, 2):
            try:
                async with self.acquire() as conn, conn.transaction():
                    entered = True
                    yield conn
                return
            except _NeverSent:
                if entered or attempt == 2:
                    raise

    async def _statement(self, method: str, sql: str, *args: Any) -> Any:
        """One statement on a pooled connection of its own (not the pool's own helpers: a
        cancel must not leave a busy connection).  Run once more, on another connection,
        when the first proves dead before anything was sent."""
        try:
            async with self.acquire() as conn:
                return await getattr(conn, method)(sql, *args)
        except _NeverSent:
            async with self.acquire() as conn:
                return await getattr(conn, method)(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        return str(await self._statement("execute", sql, *args))

    async def fetch(self, sql: str, *args: Any) -> list[Record]:
        return list(await self._statement("fetch", sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> Record | None:
        row: Record | None = await self._statement("fetchrow", sql, *args)
        return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._statement("fetchval", sql, *args)

    @asynccontextmanager
    async def listen(self, channel: str, *, buffer: int = 1024,
                     timeout: float = 15.0) -> AsyncIterator[trio.MemoryReceiveChannel[str]]:
        """Payloads of NOTIFYs on `channel` while the block runs, on a dedicated connection
        (DatabaseUnavailable when it cannot be opened within `timeout` s).

        When the buffer is full a payload is dropped (listeners rescan as a safety net).
        The channel closes when the connection is lost; the connection is closed when the
        block ends (shielded, bounded), also on cancellation.
        """
        send, receive = trio.open_memory_channel[str](buffer)
        raw = await _connect(self.dsn, timeout)

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            try:
                send.send_nowait(payload)
            except (trio.WouldBlock, trio.ClosedResourceError):
                pass

        def on_lost(_conn: Any) -> None:
            send.close()

        try:
            raw.add_termination_listener(on_lost)
            await _db_call(raw.add_listener, channel, on_notify)
            async with receive:
                yield receive
        finally:
            send.close()
            await _close_quietly(raw)


async def _connect(dsn: str, timeout: float) -> asyncpg.Connection:
    """A dedicated connection within `timeout` seconds, else DatabaseUnavailable."""
    with trio.move_on_after(timeout):
        return await _db_call(asyncpg.connect, dsn, timeout=timeout)
    raise DatabaseUnavailable(f"Postgres did not answer within {timeout:g} s")


async def _close_quietly(raw: asyncpg.Connection) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT) as scope:
        try:
            await call(raw.close)
        except (Exception, asyncio.CancelledError):
            _terminate(raw)
    if scope.cancelled_caught:
        _terminate(raw)


async def connect_once(dsn: str, *, timeout: float = 15.0) -> Connection:
    """A single connection (caller closes it with `close_connection`); DatabaseUnavailable
    when Postgres does not take it within `timeout` s."""
    return Connection(await _connect(dsn, timeout))


async def close_connection(conn: Connection) -> None:
    """Close a connection from `connect_once`, bounded and shielded."""
    await _close_quietly(conn._raw)


async def execute_once(dsn: str, *statements: str) -> None:
    """Run `statements` in order on a connection of their own (CREATE/DROP DATABASE and
    the like, which cannot run in a transaction), then close it."""
    conn = await connect_once(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await close_connection(conn)


def with_database(dsn: str, name: str) -> str:
    """`dsn` pointing at database `name` on the same server."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))

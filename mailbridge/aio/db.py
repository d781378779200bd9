"""Trio-facing Postgres over asyncpg: a pool, transactions, LISTEN, and the account lock.

Every asyncpg error is translated into `mailbridge.errors`.  Rows are asyncpg `Record`s
(read-only mappings).  Transactions roll back on any exception or cancellation; the
rollback is shielded and bounded, and a connection whose rollback fails is terminated
rather than returned to the pool in an unknown state.

The pool's connections carry `statement_timeout` and `lock_timeout` (STATEMENT_TIMEOUT,
LOCK_TIMEOUT by default): a statement stuck behind a user's long transaction, or one that
runs away, ends as DatabaseTimeout instead of stalling an actor without end.  Dedicated
connections (`connect_once`, the account lock, LISTEN) have none: migrations may be long.
"""

from __future__ import annotations

import math
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
    LockLost,
    UniqueViolation,
)

CLEANUP_TIMEOUT = 5.0
STATEMENT_TIMEOUT = 60.0  # seconds a pooled statement may run
LOCK_TIMEOUT = 10.0  # seconds a pooled statement may wait for a lock
ACCOUNT_LOCK_CLASS = 0x6D62  # first key of the two-key advisory lock ("mb")

Record = asyncpg.Record


def _translate(exc: BaseException) -> BaseException:
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
    if isinstance(exc, (asyncpg.DataError, asyncpg.ProgramLimitExceededError)):
        return DatabaseDataError(str(exc), getattr(exc, "sqlstate", None))
    if isinstance(exc, asyncpg.PostgresError):
        return DatabaseError(str(exc), getattr(exc, "sqlstate", None))
    if isinstance(exc, asyncpg.exceptions._base.DataError):
        # the driver could not encode a parameter (e.g. a date beyond its range)
        return DatabaseDataError(f"a value could not be sent to Postgres: {exc}")
    if isinstance(exc, (asyncpg.InterfaceError, asyncpg.InternalClientError)):
        return DatabaseUnavailable(f"the Postgres connection failed: {exc}")
    if isinstance(exc, (OSError, ConnectionError, socket.gaierror, TimeoutError)):
        return DatabaseUnavailable(f"cannot reach Postgres: {exc}")
    return exc


async def _db_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await call(fn, *args, **kwargs)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError) as exc:
        raise _translate(exc) from None


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
                    self._raw.terminate()
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

        Its statements are bounded by `statement_timeout` and `lock_timeout` seconds
        (None or 0: unbounded); past them they raise DatabaseTimeout.
        """
        settings = {name: f"{int(value * 1000)}ms" for name, value in
                    (("statement_timeout", statement_timeout), ("lock_timeout", lock_timeout)) if value}
        with trio.move_on_after(timeout) as scope:
            pool = await _db_call(
                asyncpg.create_pool, dsn, min_size=min_size, max_size=max_size,
                command_timeout=None, timeout=timeout, server_settings=settings,
            )
        if scope.cancelled_caught:
            raise DatabaseUnavailable(f"Postgres did not answer within {timeout:g} s")
        try:
            yield cls(pool, dsn)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT) as closing:
                try:
                    await call(pool.close)
                except Exception:
                    pool.terminate()
            if closing.cancelled_caught:
                pool.terminate()

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Connection]:
        """A connection of the pool for the block."""
        raw = await _db_call(self._pool.acquire)
        try:
            yield Connection(raw)
        except BaseException as exc:
            if not isinstance(exc, DatabaseError):
                # cancelled (or worse) mid-operation: the connection's state is unknown and
                # asyncpg would wait for a server-side cancel; drop it, the pool opens another
                raw.terminate()
            raise
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT) as releasing:
                try:
                    await call(self._pool.release, raw)
                except Exception:
                    raw.terminate()
            if releasing.cancelled_caught:
                raw.terminate()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A connection inside a transaction: commits on success, rolls back otherwise."""
        async with self.acquire() as conn, conn.transaction():
            yield conn

    async def execute(self, sql: str, *args: Any) -> str:
        async with self.acquire() as conn:  # not the pool's own: a cancel must not leave a busy connection
            return await conn.execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[Record]:
        async with self.acquire() as conn:  # not the pool's own: a cancel must not leave a busy connection
            return await conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Record | None:
        async with self.acquire() as conn:  # not the pool's own: a cancel must not leave a busy connection
            return await conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self.acquire() as conn:  # not the pool's own: a cancel must not leave a busy connection
            return await conn.fetchval(sql, *args)

    @asynccontextmanager
    async def listen(self, channel: str, *, buffer: int = 1024) -> AsyncIterator[trio.MemoryReceiveChannel[str]]:
        """Payloads of NOTIFYs on `channel` while the block runs, on a dedicated connection.

        When the buffer is full a payload is dropped (listeners rescan as a safety net).
        The channel closes when the connection is lost.
        """
        send, receive = trio.open_memory_channel[str](buffer)
        raw = await _db_call(asyncpg.connect, self.dsn)

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            try:
                send.send_nowait(payload)
            except (trio.WouldBlock, trio.ClosedResourceError):
                pass

        def on_lost(_conn: Any) -> None:
            send.close()

        raw.add_termination_listener(on_lost)
        await _db_call(raw.add_listener, channel, on_notify)
        try:
            async with receive:
                yield receive
        finally:
            send.close()
            await _close_quietly(raw)


async def _close_quietly(raw: asyncpg.Connection) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT) as scope:
        try:
            await call(raw.close)
        except Exception:
            raw.terminate()
    if scope.cancelled_caught:
        raw.terminate()


async def connect_once(dsn: str, *, timeout: float = 15.0) -> Connection:
    """A single connection (caller closes it with `close_connection`)."""
    with trio.move_on_after(timeout) as scope:
        raw = await _db_call(asyncpg.connect, dsn, timeout=timeout)
    if scope.cancelled_caught:
        raise DatabaseUnavailable(f"Postgres did not answer within {timeout:g} s")
    return Connection(raw)


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


class AccountLock:
    """An account's session advisory lock, held on a dedicated connection.

    `acquired` says whether this process owns the account.  `lost` is set when the
    connection (and so the lock) goes away; `probe()` checks it actively.  Leaving the
    `hold` block releases the lock and closes the connection (shielded, bounded).
    """

    def __init__(self, raw: asyncpg.Connection, account_id: int) -> None:
        self._raw = raw
        self.account_id = account_id
        self.acquired = False
        self.lost = trio.Event()

    @classmethod
    @asynccontextmanager
    async def hold(cls, dsn: str, account_id: int, *, timeout: float = 15.0) -> AsyncIterator["AccountLock"]:
        """Try (without waiting) to take the lock of `account_id` for the block."""
        with trio.move_on_after(timeout) as scope:
            raw = await _db_call(asyncpg.connect, dsn, timeout=timeout)
        if scope.cancelled_caught:
            raise DatabaseUnavailable(f"Postgres did not answer within {timeout:g} s")
        lock = cls(raw, account_id)
        raw.add_termination_listener(lambda _c: lock.lost.set())
        try:
            lock.acquired = bool(
                await _db_call(raw.fetchval, "SELECT pg_try_advisory_lock($1::int, $2::int)",
                               ACCOUNT_LOCK_CLASS, account_id)
            )
            yield lock
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT):
                if lock.acquired and not lock.lost.is_set() and not raw.is_closed():
                    try:
                        await call(raw.fetchval, "SELECT pg_advisory_unlock($1::int, $2::int)",
                                   ACCOUNT_LOCK_CLASS, account_id)
                    except Exception:
                        pass
            await _close_quietly(raw)

    async def retry(self) -> bool:
        """Try again to take the lock on the same connection; returns `acquired`."""
        if not self.acquired:
            self.acquired = bool(
                await _db_call(self._raw.fetchval, "SELECT pg_try_advisory_lock($1::int, $2::int)",
                               ACCOUNT_LOCK_CLASS, self.account_id)
            )
        return self.acquired

    async def probe(self, timeout: float = 10.0) -> None:
        """Raise LockLost unless the lock connection answers within `timeout`."""
        if self.lost.is_set() or self._raw.is_closed():
            self.lost.set()
            raise LockLost(f"the lock connection of account {self.account_id} is gone")
        with trio.move_on_after(timeout) as scope:
            try:
                await _db_call(self._raw.fetchval, "SELECT 1")
            except DatabaseError:
                self.lost.set()
                raise LockLost(f"the lock connection of account {self.account_id} failed") from None
        if scope.cancelled_caught:
            self.lost.set()
            self._raw.terminate()
            raise LockLost(f"the lock connection of account {self.account_id} timed out")

    async def backend_pid(self) -> int:
        """The Postgres backend pid holding the lock (for tests and diagnostics)."""
        return int(await _db_call(self._raw.fetchval, "SELECT pg_backend_pid()"))


def pool_size_for(accounts: int) -> int:
    """A pool size for `accounts` actors sharing one pool (writes are short)."""
    return max(4, min(20, math.ceil(accounts / 2) + 2))

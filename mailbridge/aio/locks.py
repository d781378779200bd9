"""A process's advisory locks, held on a few dedicated connections (not one per account).

A Postgres session can hold any number of advisory locks, so one process holds the locks
of every account it owns on `count` connections (`MAILBRIDGE_LOCK_CONNECTIONS`): the
connection count is bounded by settings, never by the account count, and an actor waiting
in standby costs no connection at all.

- A key maps to one connection (`key % count`); each connection runs one statement at a
  time (a trio lock per connection).
- `try_lock` never waits for the lock: a `Lease` or None (held by another session, or
  already held in this process).  Taking and releasing are shielded and bounded: a
  statement that does not answer in time terminates its connection, because a
  `pg_try_advisory_lock` cancelled half way could have taken a lock nobody records.
- Losing a connection loses exactly the locks on it: each of their leases' `lost` is set
  (the actors stop IMAP work at once) and the connection is opened again on next use.
  `run_probe` checks every open connection each `probe_every` seconds, so a connection
  that silently stopped answering (a network cut) counts as lost within
  `probe_every + probe_timeout` seconds.  The server side is told to notice such a cut
  by TCP keepalives, so the locks go free for the other processes soon after.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable

import asyncpg
import trio

from mailbridge.aio.db import Connection, _close_quietly, _db_call
from mailbridge.aio.loop import call
from mailbridge.errors import DatabaseError, DatabaseUnavailable

log = logging.getLogger(__name__)
Hook = Callable[[Connection], Awaitable[object]]  # a statement beside a lock, on its connection

ACCOUNT_LOCK_CLASS = 0x6D62  # first key of an account's two-key advisory lock ("mb")
MEMBER_LOCK_CLASS = 0x6D63   # first key of a serve process's membership lock ("mc")
SELF_TEST_LOCK_CLASS = 0x6D64  # preflight's lock self-test ("md")
STATEMENT_TIMEOUT = 10.0     # seconds a lock statement may take before its connection is dropped
CONNECT_TIMEOUT = 15.0
# the server drops a silent client's session (and its locks) after about 5 + 3 × 2 s
KEEPALIVES = {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3",
              "application_name": "mailbridge locks"}


class Lease:
    """One held advisory lock.  `lost` is set when its connection goes (the lock with it);
    `release()` gives it back (shielded, bounded; a no-op once lost or released)."""

    def __init__(self, owner: "_Slot", lock_class: int, key: int) -> None:
        self._slot = owner
        self.lock_class = lock_class
        self.key = key
        self.lost = trio.Event()
        self.released = False

    @property
    def held(self) -> bool:
        return not (self.released or self.lost.is_set())

    async def release(self, before: Hook | None = None) -> None:
        """Unlock (running `before` first on the lock's connection, while the lock is
        still held); never raises, returns within STATEMENT_TIMEOUT (cancellation
        included)."""
        if not self.held:
            return
        self.released = True
        with trio.CancelScope(shield=True):  # a cancelled release would leave the lock held
            await self._slot.unlock(self, before)

    async def backend_pid(self) -> int:
        """The Postgres backend holding the lock (tests and diagnostics)."""
        return await self._slot.backend_pid()


class _Slot:
    """One lock connection and the leases on it."""

    def __init__(self, dsn: str, index: int) -> None:
        self.dsn = dsn
        self.index = index
        self.raw: asyncpg.Connection | None = None
        self.pid: int | None = None  # its Postgres backend, while open
        self.leases: dict[tuple[int, int], Lease] = {}
        self.busy = trio.Lock()

    def _drop(self, why: str) -> None:
        """The connection is gone: every lease on it is lost."""
        raw, self.raw, self.pid = self.raw, None, None
        if raw is not None and not raw.is_closed():
            raw.terminate()
        if self.leases:
            log.warning("lock connection %d %s: %d lock(s) lost with it", self.index, why, len(self.leases))
        for lease in self.leases.values():
            lease.lost.set()
        self.leases.clear()

    async def _connection(self) -> asyncpg.Connection:
        if self.raw is not None and not self.raw.is_closed():
            return self.raw
        self._drop("closed")
        with trio.move_on_after(CONNECT_TIMEOUT) as scope:
            raw = await _db_call(asyncpg.connect, self.dsn, timeout=CONNECT_TIMEOUT, server_settings=KEEPALIVES)
        if scope.cancelled_caught:
            raise DatabaseUnavailable(f"Postgres did not answer within {CONNECT_TIMEOUT:g} s (lock connection)")

        def on_lost(_conn: object) -> None:
            if self.raw is raw:
                self._drop("was lost")

        raw.add_termination_listener(on_lost)
        self.raw = raw
        self.pid = raw.get_server_pid()
        return raw

    async def _statement(self, sql: str, *args: int, hook: Hook | None = None, hook_first: bool = False) -> Any:
        """Run one statement on the connection (and `hook` on the same connection, after
        it when the statement returned a true value, or before it with `hook_first`),
        shielded, at most STATEMENT_TIMEOUT in all; past it the connection is dropped.
        DatabaseError when the statement fails (the connection is dropped too: its state
        is unknown); a failing hook is logged, never raised."""
        async with self.busy:
            with trio.CancelScope(shield=True):
                raw = await self._connection()
                with trio.move_on_after(STATEMENT_TIMEOUT) as scope:
                    try:
                        if hook is not None and hook_first:
                            await self._hook(hook, raw)
                        value = await _db_call(raw.fetchval, sql, *args)
                    except DatabaseError:
                        self._drop("failed")
                        raise
                    if hook is not None and not hook_first and value:
                        await self._hook(hook, raw)
                    return value
                self._drop(f"did not answer within {STATEMENT_TIMEOUT:g} s")
                raise DatabaseUnavailable(f"the lock connection did not answer within {STATEMENT_TIMEOUT:g} s")
            raise AssertionError("unreachable")  # pragma: no cover

    async def _hook(self, hook: Hook, raw: asyncpg.Connection) -> None:
        try:
            await hook(Connection(raw))
        except DatabaseError as exc:
            log.warning("lock connection %d: a statement beside a lock failed: %s", self.index, exc)

    async def try_lock(self, lock_class: int, key: int, then: Hook | None = None) -> Lease | None:
        if (lock_class, key) in self.leases:
            return None  # held in this process (an actor on its way out): not twice
        got = await self._statement("SELECT pg_try_advisory_lock($1::int, $2::int)", lock_class, key, hook=then)
        if not got:
            return None
        lease = Lease(self, lock_class, key)
        self.leases[(lock_class, key)] = lease
        return lease

    async def unlock(self, lease: Lease, before: Hook | None = None) -> None:
        if self.leases.get((lease.lock_class, lease.key)) is not lease:
            return
        del self.leases[(lease.lock_class, lease.key)]
        try:
            await self._statement("SELECT pg_advisory_unlock($1::int, $2::int)", lease.lock_class, lease.key,
                                  hook=before, hook_first=True)
        except DatabaseError as exc:
            log.info("lock connection %d: unlock failed (%s): its locks went with it", self.index, exc)

    async def probe(self, timeout: float) -> None:
        if self.raw is None:
            return
        async with self.busy:
            raw = self.raw
            if raw is None:
                return
            with trio.CancelScope(shield=True), trio.move_on_after(timeout) as scope:
                try:
                    await _db_call(raw.fetchval, "SELECT 1")
                except DatabaseError as exc:
                    self._drop(f"failed its check ({exc})")
                    return
            if scope.cancelled_caught:
                self._drop(f"did not answer its check within {timeout:g} s")

    async def backend_pid(self) -> int:
        return int(await self._statement("SELECT pg_backend_pid()"))

    async def close(self) -> None:
        raw, self.raw = self.raw, None
        for lease in self.leases.values():
            lease.released = True
        self.leases.clear()
        if raw is not None:
            await _close_quietly(raw)  # closing the session releases its locks


class LockConnections:
    """This process's lock connections; see the module doc."""

    def __init__(self, dsn: str, count: int) -> None:
        self.dsn = dsn
        self._slots = [_Slot(dsn, i) for i in range(max(1, count))]

    @classmethod
    @asynccontextmanager
    async def open(cls, dsn: str, *, count: int = 2) -> AsyncIterator["LockConnections"]:
        """Lock connections for the block (opened on first use); leaving closes them,
        which releases every lock still held (shielded, bounded)."""
        locks = cls(dsn, count)
        try:
            yield locks
        finally:
            with trio.CancelScope(shield=True):
                for slot in locks._slots:
                    await slot.close()

    @property
    def count(self) -> int:
        return len(self._slots)

    def _slot(self, key: int) -> _Slot:
        return self._slots[key % len(self._slots)]

    async def try_lock(self, key: int, lock_class: int = ACCOUNT_LOCK_CLASS, *,
                       then: Hook | None = None) -> Lease | None:
        """Take the lock without waiting: a Lease, or None when another session (or this
        process already) holds it.  `then` runs on the lock's own connection right after
        it was taken (record the owner: no pool queue between the two).  DatabaseError
        when Postgres cannot be asked."""
        return await self._slot(key).try_lock(lock_class, key, then)

    def backend_pids(self) -> list[int]:
        """The Postgres backends of the open lock connections: a lock is this process's
        exactly when one of them holds it (`pg_locks.pid`)."""
        return sorted(slot.pid for slot in self._slots if slot.pid is not None)

    def held(self, lock_class: int = ACCOUNT_LOCK_CLASS) -> list[int]:
        """Keys of the locks of `lock_class` this process holds now."""
        return sorted(k for slot in self._slots for (c, k), lease in slot.leases.items()
                      if c == lock_class and lease.held)

    async def run_probe(self, *, every: float = 2.0, timeout: float = 3.0,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check the open connections every `every` seconds until cancelled."""
        task_status.started()
        while True:
            await trio.sleep(every)
            for slot in self._slots:
                await slot.probe(timeout)


async def terminate_for_tests(lease: Lease) -> None:
    """Kill the backend holding `lease` from another connection (tests: a lost lock)."""
    pid = await lease.backend_pid()
    raw = await _db_call(asyncpg.connect, lease._slot.dsn)
    try:
        await call(raw.fetchval, "SELECT pg_terminate_backend($1)", pid)
    finally:
        await _close_quietly(raw)


__all__ = ["ACCOUNT_LOCK_CLASS", "MEMBER_LOCK_CLASS", "SELF_TEST_LOCK_CLASS", "Lease", "LockConnections"]

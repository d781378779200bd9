"""The process's lock connections: many locks on few connections, exclusive between
processes, released on exit, lost exactly with the connection that held them."""

from __future__ import annotations

import trio

from mailbridge.aio.locks import MEMBER_LOCK_CLASS, LockConnections, terminate_for_tests
from mailbridge.preflight import lock_self_test


async def test_exclusive_between_processes_and_released_on_exit(db_dsn):
    async with LockConnections.open(db_dsn, count=2) as mine, LockConnections.open(db_dsn, count=2) as theirs:
        first = await mine.try_lock(7)
        assert first is not None
        assert await theirs.try_lock(7) is None
        assert await mine.try_lock(7) is None  # not twice in one process either
        assert await theirs.try_lock(8) is not None
        await first.release()
        assert await theirs.try_lock(7) is not None
    async with LockConnections.open(db_dsn, count=1) as again:
        assert await again.try_lock(7) is not None  # closing released everything


async def test_a_thousand_locks_on_two_connections(db, db_dsn):
    async with LockConnections.open(db_dsn, count=2) as locks:
        leases = [await locks.try_lock(account_id) for account_id in range(1, 1001)]
        assert all(lease is not None for lease in leases)
        held = await db.fetchval(
            "SELECT count(DISTINCT pid) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())", 0x6D62)
        assert held == 2
        assert locks.held() == list(range(1, 1001))


async def test_a_killed_lock_connection_loses_exactly_its_locks(db_dsn):
    async with LockConnections.open(db_dsn, count=2) as locks, LockConnections.open(db_dsn, count=1) as other:
        even, odd = await locks.try_lock(10), await locks.try_lock(11)
        member = await locks.try_lock(12, MEMBER_LOCK_CLASS)
        assert even is not None and odd is not None and member is not None
        await terminate_for_tests(even)
        with trio.fail_after(10):
            await even.lost.wait()
        assert member.lost.is_set()  # the same connection (key 12 → slot 0)
        assert not odd.lost.is_set() and odd.held
        assert locks.held() == [11]
        assert await other.try_lock(10) is not None  # free for another process at once
        assert await other.try_lock(11) is None
        assert await locks.try_lock(14) is not None  # the slot reconnects on next use


async def test_a_lease_is_lost_while_nothing_else_uses_its_connection(db, db_dsn):
    """An idle lock connection killed: the lease is lost without any actor asking (the
    connection's own termination, or the probe, notices)."""
    async with LockConnections.open(db_dsn, count=1) as locks, trio.open_nursery() as nursery:
        lease = await locks.try_lock(21)
        assert lease is not None
        pid = await lease.backend_pid()
        await nursery.start(lambda task_status: locks.run_probe(every=0.2, timeout=1.0, task_status=task_status))
        await db.execute("SELECT pg_terminate_backend($1)", pid)
        with trio.fail_after(10):
            await lease.lost.wait()
        nursery.cancel_scope.cancel()


async def test_preflight_lock_self_test_passes_on_a_direct_connection(db_dsn):
    assert await lock_self_test(db_dsn) is None

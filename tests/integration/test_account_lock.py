"""The account advisory lock: exclusive, released on exit, lost with its connection."""

from __future__ import annotations

import pytest
import trio

from mailbridge.aio.db import AccountLock
from mailbridge.errors import LockLost
from mailbridge.preflight import lock_self_test


async def test_exclusive_and_released_on_exit(db_dsn):
    async with AccountLock.hold(db_dsn, 7) as first:
        assert first.acquired
        async with AccountLock.hold(db_dsn, 7) as second:
            assert not second.acquired
            async with AccountLock.hold(db_dsn, 8) as other:
                assert other.acquired
        assert not await acquired_elsewhere(db_dsn, 7)
    async with AccountLock.hold(db_dsn, 7) as again:
        assert again.acquired


async def acquired_elsewhere(dsn, account_id):
    async with AccountLock.hold(dsn, account_id) as lock:
        return lock.acquired


async def test_standby_takes_over_when_the_holder_leaves(db_dsn):
    holder = AccountLock.hold(db_dsn, 9)
    first = await holder.__aenter__()
    try:
        assert first.acquired
        async with AccountLock.hold(db_dsn, 9) as standby:
            assert not standby.acquired
            assert not await standby.retry()
            await holder.__aexit__(None, None, None)
            holder = None
            assert await standby.retry()
    finally:
        if holder is not None:
            await holder.__aexit__(None, None, None)


async def test_a_killed_lock_connection_means_a_lost_lock(db, db_dsn):
    async with AccountLock.hold(db_dsn, 11) as lock:
        assert lock.acquired
        pid = await lock.backend_pid()
        await db.execute("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(LockLost):
            with trio.fail_after(10):
                while True:
                    await lock.probe(timeout=2)
                    await trio.sleep(0.05)
        assert lock.lost.is_set()
    # the lock is free again for someone else
    async with AccountLock.hold(db_dsn, 11) as other:
        assert other.acquired


async def test_preflight_lock_self_test_passes_on_a_direct_connection(db_dsn):
    assert await lock_self_test(db_dsn) is None

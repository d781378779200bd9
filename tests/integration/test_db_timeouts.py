"""Pooled statements are bounded: a runaway statement or a lock held by someone else's
long transaction ends as DatabaseTimeout, never as a hang (real Postgres)."""

from __future__ import annotations

import pytest
import trio

from mailbridge.aio.db import Database, close_connection, connect_once
from mailbridge.errors import DatabaseTimeout


async def test_a_statement_past_statement_timeout_is_a_database_timeout(db_dsn):
    async with Database.connect(db_dsn, max_size=2, statement_timeout=0.2) as db:
        with trio.fail_after(5):
            with pytest.raises(DatabaseTimeout) as caught:
                await db.execute("SELECT pg_sleep(3)")
        assert caught.value.sqlstate == "57014" and "statement_timeout" in str(caught.value)
        assert await db.fetchval("SELECT 1") == 1  # the pool goes on


async def test_a_lock_held_elsewhere_is_a_database_timeout_after_lock_timeout(db_dsn):
    holder = await connect_once(db_dsn)
    try:
        await holder.execute("CREATE TABLE held (id int PRIMARY KEY, n int)")
        await holder.execute("INSERT INTO held VALUES (1, 0)")
        async with Database.connect(db_dsn, max_size=2, lock_timeout=0.2) as db:
            assert await db.fetchval("SHOW statement_timeout") == "1min"  # the default bound
            async with holder.transaction():
                await holder.execute("SELECT * FROM held WHERE id = 1 FOR UPDATE")
                with trio.fail_after(5):
                    with pytest.raises(DatabaseTimeout) as caught:
                        await db.execute("UPDATE held SET n = n + 1 WHERE id = 1")
            assert caught.value.sqlstate == "55P03" and "lock_timeout" in str(caught.value)
            assert await db.execute("UPDATE held SET n = n + 1 WHERE id = 1") == "UPDATE 1"
    finally:
        await close_connection(holder)

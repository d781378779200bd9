"""`mailbridge migrate`: once each, in order, under a lock, with checksums."""

from __future__ import annotations

import trio
import pytest

from mailbridge.aio.db import Database
from mailbridge.errors import MigrationError
from mailbridge.store.migrations import Migration, available_migrations, migrate, pending


async def test_second_run_applies_nothing(empty_db_dsn):
    first = await migrate(empty_db_dsn)
    assert [m.version for m in first] == [m.version for m in available_migrations()]
    assert await migrate(empty_db_dsn) == []
    assert await pending(empty_db_dsn) == []


async def test_concurrent_runs_both_succeed_and_apply_once(empty_db_dsn):
    results = []

    async def one():
        results.append(await migrate(empty_db_dsn))

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(one)
    assert sorted(len(r) for r in results) == [0, 0, len(available_migrations())]
    async with Database.connect(empty_db_dsn) as db:
        assert await db.fetchval("SELECT count(*) FROM schema_migrations") == len(available_migrations())


async def test_an_applied_file_that_changed_is_an_error(empty_db_dsn):
    await migrate(empty_db_dsn)
    edited = [Migration(m.version, m.name, m.sql + "\n-- edited\n") for m in available_migrations()]
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(empty_db_dsn, edited)


async def test_a_failing_migration_rolls_back_and_records_nothing(empty_db_dsn):
    await migrate(empty_db_dsn)
    broken = available_migrations() + [Migration(9999, "broken", "CREATE TABLE t_ok (x int); SELECT 1/0;")]
    with pytest.raises(Exception):
        await migrate(empty_db_dsn, broken)
    async with Database.connect(empty_db_dsn) as db:
        assert await db.fetchval("SELECT to_regclass('t_ok')") is None
        assert await db.fetchval("SELECT max(version) FROM schema_migrations") == available_migrations()[-1].version


async def test_accounts_notify_on_change_not_on_heartbeat(db):
    async with db.listen("mailbridge_accounts") as events:
        account_id = await db.fetchval(
            """INSERT INTO accounts (email, imap_host, imap_port, imap_username, password_encrypted)
               VALUES ('a@example.com', 'h', 993, 'a', '\\x00') RETURNING id""")
        await db.execute("UPDATE accounts SET heartbeat_at = now(), owner = 'x:1', health = 'healthy' WHERE id = $1", account_id)
        await db.execute("UPDATE accounts SET enabled = false WHERE id = $1", account_id)
        await db.execute("DELETE FROM accounts WHERE id = $1", account_id)
        got = []
        with trio.move_on_after(2):
            while len(got) < 4:
                got.append(await events.receive())
    assert got == [f'{{"op" : "insert", "id" : {account_id}}}', f'{{"op" : "update", "id" : {account_id}}}',
                   f'{{"op" : "delete", "id" : {account_id}}}']


async def test_a_database_with_mail_keeps_it_searchable_across_the_search_and_key_migrations(empty_db_dsn):
    """0003 and 0004 applied to a database that already mirrors mail: every message is
    queued for the indexer and found by search meanwhile; deletes still cascade."""
    from actors.indexer import drain
    from mailbridge.store.api import MessageFilter, list_messages

    before = [m for m in available_migrations() if m.version <= 2]
    await migrate(empty_db_dsn, before)
    async with Database.connect(empty_db_dsn, max_size=2) as db:
        account = await db.fetchval(
            "INSERT INTO accounts (email, imap_host, imap_port, imap_tls, imap_username, password_encrypted) "
            "VALUES ('old@example.test', 'h', 143, 'none', 'u', 'x') RETURNING id")
        folder = await db.fetchval(
            "INSERT INTO folders (account_id, name, raw_name) VALUES ($1, 'INBOX', 'INBOX') RETURNING id", account)
        await db.execute(
            "INSERT INTO messages (account_id, folder_id, uid, subject, from_email) "
            "SELECT $1, $2, u, CASE WHEN u % 2 = 0 THEN 'invoice ' || u ELSE 'hello' END, 'ann@example.com' "
            "FROM generate_series(1, 50) u", account, folder)
        await migrate(empty_db_dsn)
        assert await db.fetchval("SELECT count(*) FROM search_pending") == 50

        async def found(q: str) -> list[int]:
            rows = await list_messages(db, account, MessageFilter(q=q), limit=100)
            return sorted(r["uid"] for r in rows)

        assert await found("invoice") == list(range(2, 51, 2))
        assert await drain(db) == 50
        assert await found("invoice") == list(range(2, 51, 2))
        assert await db.fetchval(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'messages'::regclass AND contype = 'f'") == 0
        await db.execute("DELETE FROM accounts WHERE id = $1", account)
        assert await db.fetchval("SELECT count(*) FROM messages") == 0
        assert await db.fetchval("SELECT count(*) FROM message_search") == 0

"""The initial sync fetches batch k+1 while batch k is written; cursors still never run
ahead of committed rows (real Dovecot, real Postgres).

After every "initial" step the folder's rows are exactly the UIDs its cursor covers
([initial_low_uid, top]) and message_count counts them; a failure of the overlapping
fetch, or of the write, leaves the last committed batch and its cursor in place.
"""

from __future__ import annotations

import pytest

from mailbridge.errors import DatabaseError, ImapConnectionLost
from mailbridge.sync.discover import discover_folders
from mailbridge.sync.folder import FolderSync
from tests.support.folder_sync import fill_inbox, inbox_of, insert_account_row, open_session

N = 230
BATCH = 40


async def state(db, folder_id):
    row = await db.fetchrow("SELECT initial_low_uid, initial_top_uid, initial_sync_complete, message_count "
                            "FROM folders WHERE id = $1", folder_id)
    uids = {r["uid"] for r in await db.fetch("SELECT uid FROM messages WHERE folder_id = $1", folder_id)}
    return row, uids


def assert_cursor_matches_rows(row, uids):
    assert uids == set(range(row["initial_low_uid"], row["initial_top_uid"] + 1))
    assert row["message_count"] == len(uids)


class FailsOnce:
    """`inner` in every respect, except that the `fail_at`-th call `_count` sees raises."""

    def __init__(self, inner, fail_at: int) -> None:
        self._inner = inner
        self.fail_at = fail_at
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def _count(self, error: Exception) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise error


class FailingFetches(FailsOnce):
    """The session, except that the `fail_at`-th metadata UID FETCH loses the connection."""

    async def uid_fetch(self, uid_set, items, **kwargs):
        if "BODY.PEEK" in items:
            self._count(ImapConnectionLost("injected: connection lost during FETCH"))
        return await self._inner.uid_fetch(uid_set, items, **kwargs)


class FailingWrites(FailsOnce):
    """The database, except that the `fail_at`-th batch write (the statement that upserts
    rows and moves the cursor) fails."""

    async def fetchrow(self, sql, *args):
        if "INSERT INTO messages" in sql:
            self._count(DatabaseError("injected: the batch write failed"))
        return await self._inner.fetchrow(sql, *args)


async def test_every_initial_step_leaves_cursor_and_rows_in_agreement(db, dovecot, mail_user):
    fill_inbox(mail_user, N)
    account_id = await insert_account_row(db, dovecot, mail_user)
    async with open_session(dovecot, mail_user) as session:
        inbox = await inbox_of(db, session, account_id)
        phases = []
        async for step in FolderSync(db, session, inbox, batch_size=BATCH).steps():
            phases.append(step.phase)
            if step.phase == "initial":
                row, uids = await state(db, inbox.id)
                assert_cursor_matches_rows(row, uids)
                assert step.synced == len(uids)
                assert step.added <= BATCH
    assert phases.count("initial") == -(-N // BATCH)
    row, uids = await state(db, inbox.id)
    assert row["initial_sync_complete"] and uids == set(range(1, N + 1))
    assert row["message_count"] == N


async def test_a_failed_prefetch_keeps_the_batch_it_overlapped(db, dovecot, mail_user):
    fill_inbox(mail_user, N)
    account_id = await insert_account_row(db, dovecot, mail_user)
    async with open_session(dovecot, mail_user) as session:
        inbox = await inbox_of(db, session, account_id)
        flaky = FailingFetches(session, fail_at=3)  # batch 3 is fetched while batch 2 is written
        steps = []
        with pytest.raises(ImapConnectionLost):
            async for step in FolderSync(db, flaky, inbox, batch_size=BATCH).steps():
                steps.append(step)
    assert [s.phase for s in steps].count("initial") == 2
    row, uids = await state(db, inbox.id)
    assert_cursor_matches_rows(row, uids)
    assert len(uids) == 2 * BATCH and max(uids) == N and not row["initial_sync_complete"]

    # the next run continues from the cursor and completes the folder
    async with open_session(dovecot, mail_user) as session:
        await session.enable("CONDSTORE")
        inbox = (await discover_folders(db, session, account_id, None)).folders[0]
        async for _step in FolderSync(db, session, inbox, batch_size=BATCH).steps():
            pass
    row, uids = await state(db, inbox.id)
    assert row["initial_sync_complete"] and uids == set(range(1, N + 1)) and row["message_count"] == N


async def test_a_failed_write_keeps_the_batches_before_it(db, dovecot, mail_user):
    fill_inbox(mail_user, N)
    account_id = await insert_account_row(db, dovecot, mail_user)
    async with open_session(dovecot, mail_user) as session:
        inbox = await inbox_of(db, session, account_id)
        flaky = FailingWrites(db, fail_at=3)  # batch 3's write, while batch 4 is fetched
        steps = []
        with pytest.raises(DatabaseError):
            async for step in FolderSync(flaky, session, inbox, batch_size=BATCH).steps():
                steps.append(step)
    assert [s.phase for s in steps].count("initial") == 2
    row, uids = await state(db, inbox.id)
    assert_cursor_matches_rows(row, uids)
    assert len(uids) == 2 * BATCH


async def test_rows_and_cursor_are_one_statement(db, dovecot, mail_user):
    """Each batch's rows and its cursor are written by a single statement (so they commit
    together even on the pool, outside an explicit transaction)."""
    fill_inbox(mail_user, 90)
    account_id = await insert_account_row(db, dovecot, mail_user)
    seen = []

    class Recording:
        def __getattr__(self, name):
            return getattr(db, name)

        async def fetchrow(self, sql, *args):
            if "INSERT INTO messages" in sql:
                seen.append("UPDATE folders SET initial_low_uid" in sql)
            return await db.fetchrow(sql, *args)

    async with open_session(dovecot, mail_user) as session:
        inbox = await inbox_of(db, session, account_id)
        async for _step in FolderSync(Recording(), session, inbox, batch_size=BATCH).steps():
            pass
    assert seen == [True, True, True]
    row, uids = await state(db, inbox.id)
    assert row["initial_sync_complete"] and uids == set(range(1, 91)) and row["message_count"] == 90


class CountingFetches(FailsOnce):
    """The session, counting its metadata UID FETCH commands."""

    async def uid_fetch(self, uid_set, items, **kwargs):
        if "BODY.PEEK" in items:
            self.calls += 1
        return await self._inner.uid_fetch(uid_set, items, **kwargs)


async def test_a_packed_fetch_writes_each_batch_with_its_own_cursor(db, dovecot, mail_user):
    """Where one FETCH per batch would exceed the budget, one FETCH covers several batches:
    fewer commands, the same statements, and a write failing inside such a FETCH's
    batches leaves the ones before it committed with their cursor; the next run completes."""
    fill_inbox(mail_user, N)
    account_id = await insert_account_row(db, dovecot, mail_user)
    async with open_session(dovecot, mail_user) as session:
        inbox = await inbox_of(db, session, account_id)
        counting = CountingFetches(session, fail_at=0)
        flaky = FailingWrites(db, fail_at=3)  # the first batch of the second FETCH (2 batches each)
        steps = []
        with pytest.raises(DatabaseError):
            async for step in FolderSync(flaky, counting, inbox, batch_size=BATCH, fetch_budget=3).steps():
                steps.append(step)
    row, uids = await state(db, inbox.id)
    assert_cursor_matches_rows(row, uids)
    assert len(uids) == 2 * BATCH and max(uids) == N and not row["initial_sync_complete"]
    assert [s.added for s in steps if s.phase == "initial"] == [2 * BATCH]

    async with open_session(dovecot, mail_user) as session:
        await session.enable("CONDSTORE")
        inbox = (await discover_folders(db, session, account_id, None)).folders[0]
        counting = CountingFetches(session, fail_at=0)
        async for step in FolderSync(db, counting, inbox, batch_size=BATCH, fetch_budget=2).steps():
            if step.phase == "initial":
                row, uids = await state(db, inbox.id)
                assert_cursor_matches_rows(row, uids)
                assert step.synced == len(uids)
    # 150 UIDs left: 4 batches of 40 within a budget of 2 commands, so 2 FETCHes of 2 batches
    assert counting.calls == 2
    row, uids = await state(db, inbox.id)
    assert row["initial_sync_complete"] and uids == set(range(1, N + 1)) and row["message_count"] == N


async def test_a_lost_connection_during_a_packed_fetch_keeps_the_batches_before_it(db, dovecot, mail_user):
    """A FETCH covering several batches fails (the connection drops): the batches of the
    FETCH before it are written with their cursor, nothing of the failed one is claimed,
    and the next run completes the folder."""
    fill_inbox(mail_user, N)
    account_id = await insert_account_row(db, dovecot, mail_user)
    async with open_session(dovecot, mail_user) as session:
        inbox = await inbox_of(db, session, account_id)
        flaky = FailingFetches(session, fail_at=2)  # the second FETCH (2 batches), while the first is written
        with pytest.raises(ImapConnectionLost):
            async for _step in FolderSync(db, flaky, inbox, batch_size=BATCH, fetch_budget=3).steps():
                pass
    row, uids = await state(db, inbox.id)
    assert_cursor_matches_rows(row, uids)
    assert len(uids) == 2 * BATCH and max(uids) == N and not row["initial_sync_complete"]

    async with open_session(dovecot, mail_user) as session:
        await session.enable("CONDSTORE")
        inbox = (await discover_folders(db, session, account_id, None)).folders[0]
        async for _step in FolderSync(db, session, inbox, batch_size=BATCH, fetch_budget=3).steps():
            pass
    row, uids = await state(db, inbox.id)
    assert row["initial_sync_complete"] and uids == set(range(1, N + 1)) and row["message_count"] == N

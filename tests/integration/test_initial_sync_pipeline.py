"""The initial sync fetches batch k+1 while batch k is written; cursors still never run
ahead of committed rows (real Dovecot, real Postgres).

After every "initial" step the folder's rows are exactly the UIDs its cursor covers
([initial_low_uid, top]) and message_count counts them; a failure of the overlapping
fetch, or of the write, leaves the last committed batch and its cursor in place.
"""

from __future__ import annotations

import pytest

from mailbridge.aio.imap import ImapEndpoint, ImapSession
from mailbridge.errors import DatabaseError, ImapConnectionLost
from mailbridge.store import accounts as account_store
from mailbridge.store.accounts import NewAccount
from mailbridge.sync.account import discover
from mailbridge.sync.folder import FolderSync
from mailbridge.testing.mailgen import MaildirWriter, corpus

N = 230
BATCH = 40


def fill_inbox(user, n: int = N) -> None:
    MaildirWriter().write(user, "INBOX", corpus(n, seed=11, folder_hint="INBOX"),
                          flags_for=lambda i, _m: ("\\Seen",) if i % 3 else ())


async def add_account(db, dovecot, user) -> int:
    new = NewAccount(email=f"{user.username}@example.test", imap_host="127.0.0.1", imap_port=dovecot.port,
                     imap_tls="none", imap_username=user.username, verify_certificate=False)
    return await account_store.insert(db, new, b"not-a-real-ciphertext", limit=20)


def open_session(dovecot, user):
    return ImapSession.open(ImapEndpoint("127.0.0.1", dovecot.port, "none", user.username), user.password)


async def inbox_of(db, session, account_id):
    await session.enable("CONDSTORE")
    folders = await discover(db, session, account_id, None)
    return next(f for f in folders if f.name == "INBOX")


async def state(db, folder_id):
    row = await db.fetchrow("SELECT initial_low_uid, initial_top_uid, initial_sync_complete, message_count "
                            "FROM folders WHERE id = $1", folder_id)
    uids = {r["uid"] for r in await db.fetch("SELECT uid FROM messages WHERE folder_id = $1", folder_id)}
    return row, uids


def assert_cursor_matches_rows(row, uids):
    assert uids == set(range(row["initial_low_uid"], row["initial_top_uid"] + 1))
    assert row["message_count"] == len(uids)


class FailingFetches:
    """The session, except that the `fail_at`-th metadata UID FETCH loses the connection."""

    def __init__(self, session, fail_at: int) -> None:
        self._session = session
        self.fail_at = fail_at
        self.fetches = 0

    def __getattr__(self, name):
        return getattr(self._session, name)

    async def uid_fetch(self, uid_set, items, **kwargs):
        if "BODY.PEEK" in items:
            self.fetches += 1
            if self.fetches == self.fail_at:
                raise ImapConnectionLost("injected: connection lost during FETCH")
        return await self._session.uid_fetch(uid_set, items, **kwargs)


class FailingWrites:
    """The database, except that the `fail_at`-th batch write (the statement that upserts
    rows and moves the cursor) fails."""

    def __init__(self, db, fail_at: int) -> None:
        self._db = db
        self.fail_at = fail_at
        self.writes = 0

    def __getattr__(self, name):
        return getattr(self._db, name)

    async def fetchrow(self, sql, *args):
        if "INSERT INTO messages" in sql:
            self.writes += 1
            if self.writes == self.fail_at:
                raise DatabaseError("injected: the batch write failed")
        return await self._db.fetchrow(sql, *args)


async def test_every_initial_step_leaves_cursor_and_rows_in_agreement(db, dovecot, mail_user):
    fill_inbox(mail_user)
    account_id = await add_account(db, dovecot, mail_user)
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
    fill_inbox(mail_user)
    account_id = await add_account(db, dovecot, mail_user)
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
        inbox = (await discover(db, session, account_id, None))[0]
        async for _step in FolderSync(db, session, inbox, batch_size=BATCH).steps():
            pass
    row, uids = await state(db, inbox.id)
    assert row["initial_sync_complete"] and uids == set(range(1, N + 1)) and row["message_count"] == N


async def test_a_failed_write_keeps_the_batches_before_it(db, dovecot, mail_user):
    fill_inbox(mail_user)
    account_id = await add_account(db, dovecot, mail_user)
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
    account_id = await add_account(db, dovecot, mail_user)
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

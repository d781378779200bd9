"""NOTIFY (RFC 5465): with a server that offers it, changes in folders other than INBOX
reach the mirror within seconds, without waiting for a cycle (real Dovecot, with the
mailbox list index NOTIFY needs, and real Postgres)."""

from __future__ import annotations

import random
from contextlib import asynccontextmanager

import pytest
import trio

from actors import status as st
from mailbridge.testing.imapctl import MailboxClient
from mailbridge.testing.mailgen import make_message
from tests.support.actors import insert_account, running_supervisor, settings_for
from tests.support.dovecot import running_dovecot
from tests.support.mirror import assert_exact, fill_small, mirror, server_truth


@pytest.fixture(scope="module")
def notify_dovecot(tmp_path_factory):
    yield from running_dovecot(tmp_path_factory.mktemp("dovecot-notify"), list_index=True)


@asynccontextmanager
async def idling_with_notify(dovecot, user, db_dsn, encryption_key):
    """A supervisor whose actor for `user` idles with NOTIFY set; (harness, account id)."""
    settings = settings_for(db_dsn, encryption_key, MAILBRIDGE_POLL_SECONDS="600")  # no cycle can help
    async with running_supervisor(db_dsn, settings) as h:
        account_id = await insert_account(h.db, settings, username=user.username, password=user.password,
                                          port=dovecot.port)
        await h.wait_status(account_id, lambda s: s.state == st.IDLE and "NOTIFY" in s.step, 30,
                            "IDLE with NOTIFY")
        yield h, account_id


async def wait_until(db_dsn, account_id, check, what: str, timeout: float = 5.0) -> float:
    start = trio.current_time()
    with trio.move_on_after(timeout):
        while not check(await mirror(db_dsn, account_id)):
            await trio.sleep(0.05)
        return trio.current_time() - start
    raise AssertionError(f"{what} did not reach the mirror within {timeout:g} s")


async def test_changes_in_other_folders_arrive_within_seconds(notify_dovecot, db_dsn, encryption_key):
    dovecot = notify_dovecot
    user = dovecot.add_user()
    fill_small(dovecot, user, folders=("INBOX", "Archive", "Reise & Urlaub", "Trash"), per_folder=10)
    async with idling_with_notify(dovecot, user, db_dsn, encryption_key) as (h, account_id):
        with MailboxClient(dovecot, user) as client:
            client.append("Archive", make_message(8001, rng=random.Random(3)))
            await wait_until(db_dsn, account_id, lambda m: len(m["Archive"]) == 11, "new mail in Archive")
            uid = client.uids("Reise & Urlaub")[0]
            client.store("Reise & Urlaub", [uid], add=["\\Flagged"])
            await wait_until(db_dsn, account_id, lambda m: "\\Flagged" in m["Reise & Urlaub"][uid]["flags"],
                             "a flag change in 'Reise & Urlaub'")
            gone = client.uids("Archive")[2]
            client.expunge_uids("Archive", [gone])
            await wait_until(db_dsn, account_id, lambda m: gone not in m["Archive"], "an expunge in Archive")
            client.append("Trash", make_message(8002, rng=random.Random(4)))  # excluded: no visit
            client.append("INBOX", make_message(8003, rng=random.Random(5)))
            await wait_until(db_dsn, account_id, lambda m: len(m["INBOX"]) == 11, "new mail in INBOX")
        truth = server_truth(dovecot, user)
        assert_exact(truth, await mirror(db_dsn, account_id))
        assert "Trash" not in await mirror(db_dsn, account_id)
        assert h.status(account_id).cycles == 1  # all of it through IDLE and NOTIFY


async def test_a_folder_created_after_the_last_list_arrives_through_notify(notify_dovecot, db_dsn,
                                                                          encryption_key):
    """Created empty, only NOTIFY's LIST push tells; its first mail, a STATUS for a name
    not known yet.  (Dovecot's pushes for renamed and deleted folders can come late;
    the light cycle's LIST finds those within half a tick.)"""
    dovecot = notify_dovecot
    user = dovecot.add_user()
    fill_small(dovecot, user, folders=("INBOX", "Archive"), per_folder=5)
    async with idling_with_notify(dovecot, user, db_dsn, encryption_key) as (h, account_id):
        with MailboxClient(dovecot, user) as client:
            client.create("Projects")
            with trio.fail_after(5):
                while not await h.db.fetchval("SELECT count(*) FROM folders WHERE account_id = $1 "
                                              "AND name = 'Projects'", account_id):
                    await trio.sleep(0.05)
            client.create("Plans")
            client.append("Plans", make_message(8101, rng=random.Random(6)))
            await wait_until(db_dsn, account_id, lambda m: len(m.get("Plans", {})) == 1, "a new folder's mail")
        assert_exact(server_truth(dovecot, user), await mirror(db_dsn, account_id))
        assert h.status(account_id).cycles == 1  # found through NOTIFY, not a cycle

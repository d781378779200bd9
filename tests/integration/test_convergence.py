"""Random changes on the server while `serve` runs; afterwards the mirror converges to
the server's truth (`verify` finds no drift) and the events table records the changes.

Run against a Dovecot with CONDSTORE/QRESYNC, against one that does not advertise them
(the fallbacks: flag scans, count checks and UID SEARCH diffs), and against one whose
mailbox list index makes NOTIFY work (pushes for every folder, a slow tick).
"""

from __future__ import annotations

import random
import time

import pytest
import trio

from mailbridge.aio.db import Database
from mailbridge.testing.imapctl import MailboxClient
from mailbridge.testing.mailgen import corpus, make_message
from tests.support.cli import run_cli
from tests.support.dovecot import running_dovecot
from tests.support.mirror import add_account, assert_exact, base_env, mirror, server_truth
from tests.support.processes import Serve

BASE_FOLDERS = ["INBOX", "Sent", "Archive", "Lists.python-dev", "Reise & Urlaub"]


@pytest.fixture(scope="module")
def plain_dovecot(tmp_path_factory):
    """A second Dovecot that advertises neither CONDSTORE nor QRESYNC."""
    yield from running_dovecot(tmp_path_factory.mktemp("dovecot-plain"),
                               disable_capabilities=("CONDSTORE", "QRESYNC"))


@pytest.fixture(scope="module")
def notify_dovecot(tmp_path_factory):
    """A third Dovecot with its mailbox list index on, so NOTIFY works."""
    yield from running_dovecot(tmp_path_factory.mktemp("dovecot-notify"), list_index=True)


class Changes:
    """Random changes through a separate IMAP client, with what each should leave behind."""

    def __init__(self, dovecot, user, seed: int) -> None:
        self.dovecot, self.user = dovecot, user
        self.rng = random.Random(seed)
        self.added: set[tuple[str, int]] = set()     # (folder, uid) appended or moved in
        self.removed: set[tuple[str, int]] = set()   # (folder, uid) expunged or moved out
        self.flagged: set[tuple[str, int]] = set()   # (folder, uid) whose flags changed
        self.created: list[str] = []
        self.reset: set[str] = set()                 # folders whose UIDVALIDITY was reset
        self.moves = 0
        self.counter = 20_000

    def run(self, ops: int) -> None:
        client = MailboxClient(self.dovecot, self.user)
        try:
            for i in range(ops):
                if i == ops // 2:
                    client.close()
                    self.dovecot.renumber_folder(self.user, "Archive")  # kicks every session
                    self.reset.add("Archive")
                    client = MailboxClient(self.dovecot, self.user)
                    continue
                self.one(client, i)
                time.sleep(self.rng.uniform(0.05, 0.4))
        finally:
            client.close()

    def one(self, client: MailboxClient, i: int) -> None:
        choice = self.rng.random()
        folders = [f for f in BASE_FOLDERS + self.created]
        folder = self.rng.choice(folders)
        uids = client.uids(folder)
        if choice < 0.3 or not uids:
            self.counter += 1
            uid = client.append(folder, make_message(self.counter, rng=self.rng))
            self.added.add((folder, uid))
        elif choice < 0.55:
            uid = self.rng.choice(uids)
            flag = self.rng.choice(["\\Seen", "\\Flagged", "$Work"])
            if flag in client.flags(folder).get(uid, ()):
                client.store(folder, [uid], remove=[flag])
            else:
                client.store(folder, [uid], add=[flag])
            self.flagged.add((folder, uid))
        elif choice < 0.7:
            uid = self.rng.choice(uids)
            client.expunge_uids(folder, [uid])
            self.removed.add((folder, uid))
        elif choice < 0.8:
            uid = self.rng.choice(uids)
            dest = self.rng.choice([f for f in folders if f != folder])
            moved = client.move(folder, [uid], dest)
            self.moves += 1
            self.removed.add((folder, uid))
            if uid in moved:
                self.added.add((dest, moved[uid]))
        elif choice < 0.87:
            name = f"New{i}"
            client.create(name)
            self.created.append(name)
            for _ in range(3):
                self.counter += 1
                client.append(name, make_message(self.counter, rng=self.rng))
        elif choice < 0.94 and self.created:
            old = self.created.pop(self.rng.randrange(len(self.created)))
            new = old + "r"
            client.rename(old, new)
            self.created.append(new)
        elif self.created:
            gone = self.created.pop(self.rng.randrange(len(self.created)))
            client.delete(gone)


def fill_base(dovecot, user) -> None:
    with MailboxClient(dovecot, user) as client:
        for n, folder in enumerate(BASE_FOLDERS):
            if folder != "INBOX":
                client.create(folder)
            client.append_many(folder, list(corpus(30, seed=50 + n)))


async def converge(server, user, env, db_dsn, seed: int) -> None:
    fill_base(server, user)
    account_id = add_account(env, server, user)
    serve = Serve(env)
    try:
        serve.wait_serving()
        async with Database.connect(db_dsn) as db:
            deadline = time.monotonic() + 60
            while await db.fetchval("SELECT count(*) FROM messages") < 150:
                assert time.monotonic() < deadline, "initial sync did not finish"
                await trio.sleep(0.1)
            start_event = await db.fetchval("SELECT coalesce(max(id), 0) FROM events")
        changes = Changes(server, user, seed)
        await trio.to_thread.run_sync(changes.run, 60)  # blocking IMAP client: off the loop

        stopped = time.monotonic()
        deadline = stopped + 90
        while True:
            result = run_cli("verify", str(account_id), env=env, timeout=120)
            assert result.code in (0, 1) and "Traceback" not in result.err, result.err
            # converged: no drift, nothing pending, and the mirror equals the server exactly
            # ... and no side of a possible move still waits for its other side
            async with Database.connect(db_dsn) as db:
                held = await db.fetchval("SELECT count(*) FROM move_pending WHERE account_id = $1", account_id)
            if result.code == 0 and "pending" not in result.out and "in progress" not in result.out and not held:
                try:
                    assert_exact(server_truth(server, user), await mirror(db_dsn, account_id))
                    break
                except AssertionError:
                    pass
            assert time.monotonic() < deadline, f"no convergence:\n{result.out}"
            await trio.sleep(1)
        print(f"converged {time.monotonic() - stopped:.1f} s after the last change")

        async with Database.connect(db_dsn) as db:
            rows = await db.fetch(
                """SELECT e.kind, f.name AS folder, (e.payload->>'uid')::bigint AS uid, e.payload,
                          e.payload->>'from_folder' AS from_folder, (e.payload->>'from_uid')::bigint AS from_uid
                   FROM events e LEFT JOIN folders f ON f.id = e.folder_id
                   WHERE e.id > $1 AND e.account_id = $2""", start_event, account_id)
        seen = {(r["kind"], r["folder"], r["uid"]) for r in rows}
        # a move is one message_moved (at its destination, naming its source), or, where
        # the two sides could not be paired (a folder reset or created meanwhile), a
        # removal and an arrival
        moved_in = {(r["folder"], r["uid"]) for r in rows if r["kind"] == "message_moved"}
        moved_out = {(r["from_folder"], r["from_uid"]) for r in rows if r["kind"] == "message_moved"}
        steady = set(BASE_FOLDERS) - changes.reset
        for folder, uid in changes.added - changes.removed:
            if folder in steady:
                assert ("message_added", folder, uid) in seen or (folder, uid) in moved_in, (folder, uid)
        for folder, uid in changes.removed - changes.added:
            if folder in steady:
                assert ("message_removed", folder, uid) in seen or (folder, uid) in moved_out, (folder, uid)
        if changes.moves:
            assert "message_moved" in {r["kind"] for r in rows}
        kinds = {r["kind"] for r in rows}
        assert "folder_reset" in kinds
        if changes.flagged:
            assert "message_changed" in kinds
        code, took = serve.stop()
        assert code == 0 and took < 10
        assert "Traceback" not in "".join(serve.err)
    finally:
        serve.kill()


@pytest.mark.slow
async def test_random_changes_converge_with_condstore_and_qresync(dovecot, mail_user, db_dsn, encryption_key,
                                                                  tmp_path):
    env = base_env(db_dsn, encryption_key, tmp_path, MAILBRIDGE_POLL_SECONDS="1")
    await converge(dovecot, mail_user, env, db_dsn, seed=1)


@pytest.mark.slow
async def test_random_changes_converge_without_condstore(plain_dovecot, db_dsn, encryption_key, tmp_path):
    user = plain_dovecot.add_user()
    env = base_env(db_dsn, encryption_key, tmp_path, MAILBRIDGE_POLL_SECONDS="1")
    await converge(plain_dovecot, user, env, db_dsn, seed=2)


@pytest.mark.slow
async def test_random_changes_converge_with_notify(notify_dovecot, db_dsn, encryption_key, tmp_path):
    user = notify_dovecot.add_user()
    # pushes do the work; the light cycle's LIST finds deleted folders
    env = base_env(db_dsn, encryption_key, tmp_path, MAILBRIDGE_POLL_SECONDS="20")
    await converge(notify_dovecot, user, env, db_dsn, seed=3)

"""Moves as moves (real Dovecot, real Postgres, real actors): a message another client
moves (UID MOVE, or COPY + STORE \\Deleted + EXPUNGE) is one `message_moved` event and
keeps its `email_id` in the new folder; a move to an excluded folder is a removal, a
copy an arrival; the mirror rows are exact at every moment; `sync --once` leaves nothing
held.  With and without NOTIFY (the default test Dovecot has no mailbox list index, so
no NOTIFY: only IDLE on INBOX pushes); the figures printed are the time from the
client's command to the event."""

from __future__ import annotations

import dataclasses
import json
import random
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from actors import status as st
from mailbridge.aio.db import Database
from mailbridge.store import messages as message_store
from mailbridge.store import moves as move_store
from mailbridge.sync.moves import NOTIFY_GRACE
from mailbridge.testing.imapctl import MailboxClient
from mailbridge.testing.mailgen import make_message
from tests.support.actors import insert_account, running_supervisor, settings_for
from tests.support.cli import run_cli
from tests.support.dovecot import running_dovecot
from tests.support.mirror import add_account, assert_exact, base_env, fill_small, mirror, server_truth
from tests.support.rows import account_with_folder, meta

FOLDERS = ("INBOX", "Archive", "Lists.python-dev", "Trash")  # Trash: excluded by default


@pytest.fixture(scope="module")
def notify_dovecot(tmp_path_factory):
    yield from running_dovecot(tmp_path_factory.mktemp("dovecot-notify"), list_index=True)


@pytest.fixture(scope="module")
def no_move_dovecot(tmp_path_factory):
    """A Dovecot that advertises neither MOVE nor UIDPLUS (as an older server)."""
    yield from running_dovecot(tmp_path_factory.mktemp("dovecot-no-move"), disable_capabilities=("MOVE", "UIDPLUS"))


@asynccontextmanager
async def watching(dovecot, user, db_dsn, key, *, notify: bool, **settings: str):
    """An actor for `user` idling on INBOX (with NOTIFY where `notify`), no cycle to help
    (a 10 min tick) and a move window far longer than any test: (harness, account id)."""
    s = settings_for(db_dsn, key, MAILBRIDGE_POLL_SECONDS="600", MAILBRIDGE_MOVE_WINDOW_SECONDS="600", **settings)
    async with running_supervisor(db_dsn, s) as h:
        account_id = await insert_account(h.db, s, username=user.username, password=user.password,
                                          port=dovecot.port)
        await h.wait_status(account_id, lambda a: a.state == st.IDLE and "IDLE" in (a.step or "")
                            and ("NOTIFY" in a.step) == notify, 30, "IDLE")
        yield h, account_id


async def events_after(db, account_id: int, after: int) -> list[dict[str, Any]]:
    rows = await db.fetch(
        """SELECT e.id, e.kind, f.name AS folder, e.payload FROM events e LEFT JOIN folders f ON f.id = e.folder_id
           WHERE e.account_id = $1 AND e.id > $2 AND e.kind LIKE 'message%' ORDER BY e.id""", account_id, after)
    return [{**dict(r), "payload": r["payload"] if isinstance(r["payload"], dict) else json.loads(r["payload"])}
            for r in rows]


async def last_event(db) -> int:
    return int(await db.fetchval("SELECT coalesce(max(id), 0) FROM events"))


async def wait_events(db, account_id: int, after: int, n: int, timeout: float = 10.0) -> tuple[list, float]:
    """The first `n` message events after `after`, and the seconds until they were there."""
    start = trio.current_time()
    with trio.move_on_after(timeout):
        while len(found := await events_after(db, account_id, after)) < n:
            await trio.sleep(0.02)
        return found, trio.current_time() - start
    raise AssertionError(f"{n} event(s) expected, got {await events_after(db, account_id, after)}")


async def row(db, account_id: int, folder: str, uid: int) -> dict[str, Any] | None:
    r = await db.fetchrow("""SELECT m.* FROM messages m JOIN folders f ON f.id = m.folder_id
                             WHERE m.account_id = $1 AND f.name = $2 AND m.uid = $3""", account_id, folder, uid)
    return dict(r) if r is not None else None


async def settled(db, account_id: int, after: int, n: int) -> list[dict[str, Any]]:
    """The `n` events, once nothing else comes for a moment and nothing is held."""
    found, _ = await wait_events(db, account_id, after, n)
    await trio.sleep(0.5)
    assert await move_store.pending(db, account_id) == 0
    found = await events_after(db, account_id, after)
    assert len(found) == n, found
    return found


def assert_moved(event: dict[str, Any], *, src: str, src_uid: int, dest: str, dest_uid: int, email_id: str) -> None:
    p = event["payload"]
    assert event["kind"] == "message_moved" and event["folder"] == dest, event
    assert (p["from_folder"], p["from_uid"], p["uid"], p["email_id"]) == (src, src_uid, dest_uid, email_id), p
    assert isinstance(p["message"], int) and isinstance(p["from_folder_id"], int) and isinstance(p["from_message"], int)


# --- a client's UID MOVE ------------------------------------------------------------------


@pytest.mark.parametrize("notify", [False, True], ids=["idle-only", "notify"])
async def test_uid_move_is_one_message_moved_with_the_same_email_id(request, notify, db_dsn, encryption_key):
    dovecot = request.getfixturevalue("notify_dovecot" if notify else "dovecot")
    user = dovecot.add_user()
    fill_small(dovecot, user, folders=FOLDERS, per_folder=5)
    async with watching(dovecot, user, db_dsn, encryption_key, notify=notify) as (h, account_id):
        db = h.db
        figures = []
        with MailboxClient(dovecot, user) as client:
            routes = [("INBOX", "Archive"), ("Archive", "INBOX")]
            if notify:  # without NOTIFY nothing pushes a change between two other folders
                routes.append(("Archive", "Lists.python-dev"))
            for src, dest in routes:
                uid = client.uids(src)[0]
                before = await row(db, account_id, src, uid)
                assert before is not None and before["email_id"].startswith("mb-")
                after = await last_event(db)
                t0 = trio.current_time()
                new_uid = client.move(src, [uid], dest)[uid]
                (event,), took = await wait_events(db, account_id, after, 1)
                figures.append(f"{src}->{dest} {trio.current_time() - t0:.2f} s")
                assert_moved(event, src=src, src_uid=uid, dest=dest, dest_uid=new_uid, email_id=before["email_id"])
                moved = await row(db, account_id, dest, new_uid)
                assert moved is not None and moved["id"] == event["payload"]["message"]
                assert moved["email_id"] == before["email_id"] and moved["message_id"] == before["message_id"]
                assert await row(db, account_id, src, uid) is None
                await settled(db, account_id, after, 1)
        print(f"UID MOVE to message_moved ({'NOTIFY' if notify else 'IDLE only'}): " + ", ".join(figures))
        assert_exact(server_truth(dovecot, user), await mirror(db_dsn, account_id))


@pytest.mark.parametrize("server", ["dovecot", "no_move_dovecot"])
async def test_copy_store_deleted_expunge_is_one_message_moved(request, server, db_dsn, encryption_key):
    """A client without MOVE: COPY, STORE \\Deleted, EXPUNGE (plain, not UID EXPUNGE),
    learning the new UID by a SEARCH; also against a server offering neither MOVE nor
    UIDPLUS."""
    dovecot = request.getfixturevalue(server)
    user = dovecot.add_user()
    fill_small(dovecot, user, folders=FOLDERS, per_folder=5)
    async with watching(dovecot, user, db_dsn, encryption_key, notify=False) as (h, account_id):
        db = h.db
        with MailboxClient(dovecot, user) as client:
            for src, dest in (("INBOX", "Archive"), ("Archive", "INBOX")):
                uid = client.uids(src)[1]
                before = await row(db, account_id, src, uid)
                assert before is not None
                there = set(client.uids(dest))
                after = await last_event(db)
                t0 = trio.current_time()
                client.select(src)
                assert client.imap.uid("COPY", str(uid), dest)[0] == "OK"
                assert client.imap.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Deleted)")[0] == "OK"
                assert client.imap.expunge()[0] == "OK"
                (event,), _ = await wait_events(db, account_id, after, 1)
                took = trio.current_time() - t0
                (new_uid,) = set(client.uids(dest)) - there  # a SEARCH, no COPYUID needed
                assert_moved(event, src=src, src_uid=uid, dest=dest, dest_uid=new_uid, email_id=before["email_id"])
                await settled(db, account_id, after, 1)
                print(f"COPY+EXPUNGE {src}->{dest} ({server}) to message_moved: {took:.2f} s")
        assert_exact(server_truth(dovecot, user), await mirror(db_dsn, account_id))


# --- what is not a move ---------------------------------------------------------------------


async def test_a_move_to_an_excluded_folder_is_a_removal_at_once(dovecot, db_dsn, encryption_key):
    user = dovecot.add_user()
    fill_small(dovecot, user, folders=FOLDERS, per_folder=5)
    async with watching(dovecot, user, db_dsn, encryption_key, notify=False) as (h, account_id):
        with MailboxClient(dovecot, user) as client:
            uid = client.uids("INBOX")[0]
            after = await last_event(h.db)
            client.move("INBOX", [uid], "Trash")
            # the window is 600 s: the search for the other side proved there is none
            (event,), took = await wait_events(h.db, account_id, after, 1, timeout=5)
            assert event["kind"] == "message_removed" and event["folder"] == "INBOX", event
            assert event["payload"]["uid"] == uid
            await settled(h.db, account_id, after, 1)
            print(f"move to an excluded folder to message_removed: {took:.2f} s")

            uid = client.uids("INBOX")[0]
            after = await last_event(h.db)
            client.expunge_uids("INBOX", [uid])  # no copy anywhere: a removal too
            (event,), took = await wait_events(h.db, account_id, after, 1, timeout=5)
            assert event["kind"] == "message_removed" and event["payload"]["uid"] == uid
            await settled(h.db, account_id, after, 1)
            print(f"expunge to message_removed: {took:.2f} s")


async def test_under_notify_an_expunge_elsewhere_is_a_removal_after_the_grace(notify_dovecot, db_dsn,
                                                                             encryption_key):
    """The covered folders are not asked by STATUS: a removal alone waits NOTIFY_GRACE
    for a push of its other side, then is a message_removed (not the 600 s window)."""
    user = notify_dovecot.add_user()
    fill_small(notify_dovecot, user, folders=FOLDERS, per_folder=5)
    async with watching(notify_dovecot, user, db_dsn, encryption_key, notify=True) as (h, account_id):
        with MailboxClient(notify_dovecot, user) as client:
            uid = client.uids("Archive")[0]
            after = await last_event(h.db)
            client.expunge_uids("Archive", [uid])
            (event,), took = await wait_events(h.db, account_id, after, 1, timeout=NOTIFY_GRACE + 8)
            assert (event["kind"], event["folder"], event["payload"]["uid"]) == ("message_removed", "Archive", uid)
            await settled(h.db, account_id, after, 1)
            print(f"expunge under NOTIFY to message_removed: {took:.2f} s")


async def test_a_copy_is_an_arrival_not_a_move(dovecot, db_dsn, encryption_key):
    user = dovecot.add_user()
    fill_small(dovecot, user, folders=FOLDERS, per_folder=5)
    async with watching(dovecot, user, db_dsn, encryption_key, notify=False) as (h, account_id):
        db = h.db
        with MailboxClient(dovecot, user) as client:
            uid = client.uids("Archive")[0]
            original = await row(db, account_id, "Archive", uid)
            after = await last_event(db)
            new_uid = client.copy("Archive", [uid], "INBOX")[uid]
            # INBOX's new row shares its email_id with Archive's: held, then found a copy
            (event,), took = await wait_events(db, account_id, after, 1, timeout=5)
            assert (event["kind"], event["folder"], event["payload"]["uid"]) == ("message_added", "INBOX", new_uid)
            await settled(db, account_id, after, 1)
            copy = await row(db, account_id, "INBOX", new_uid)
            assert copy is not None and copy["email_id"] == original["email_id"]
            assert await row(db, account_id, "Archive", uid) is not None
            print(f"copy to message_added: {took:.2f} s")

            # new mail is an arrival at once (nothing else holds its email_id)
            after = await last_event(db)
            client.append("INBOX", make_message(9100, rng=random.Random(1)))
            (event,), _ = await wait_events(db, account_id, after, 1, timeout=5)
            assert event["kind"] == "message_added"


async def test_sync_once_records_a_move_and_leaves_nothing_held(dovecot, db_dsn, encryption_key, tmp_path):
    user = dovecot.add_user()
    fill_small(dovecot, user, folders=FOLDERS, per_folder=5)
    env = base_env(db_dsn, encryption_key, tmp_path)
    account_id = add_account(env, dovecot, user)
    assert run_cli("sync", "--once", env=env, timeout=120).code == 0
    async with Database.connect(db_dsn) as db:
        after = await last_event(db)
        with MailboxClient(dovecot, user) as client:
            moved_uid = client.uids("Archive")[0]
            before = await row(db, account_id, "Archive", moved_uid)
            new_uid = client.move("Archive", [moved_uid], "Lists.python-dev")[moved_uid]
            back_uid = client.uids("Lists.python-dev")[0]  # the other way: the arrival is seen first
            back = await row(db, account_id, "Lists.python-dev", back_uid)
            back_new = client.move("Lists.python-dev", [back_uid], "Archive")[back_uid]
            gone = client.uids("INBOX")[0]
            client.expunge_uids("INBOX", [gone])
        result = run_cli("sync", "--once", env=env, timeout=120)
        assert result.code == 0, result.err
        found = await events_after(db, account_id, after)
        assert await move_store.pending(db, account_id) == 0
        kinds = sorted(e["kind"] for e in found)
        assert kinds == ["message_moved", "message_moved", "message_removed"], found
        by_from = {(e["payload"]["from_folder"], e["payload"]["from_uid"]): e for e in found if e["kind"] == "message_moved"}
        assert_moved(by_from["Archive", moved_uid], src="Archive", src_uid=moved_uid, dest="Lists.python-dev",
                     dest_uid=new_uid, email_id=before["email_id"])
        assert_moved(by_from["Lists.python-dev", back_uid], src="Lists.python-dev", src_uid=back_uid, dest="Archive",
                     dest_uid=back_new, email_id=back["email_id"])
        assert_exact(server_truth(dovecot, user), await mirror(db_dsn, account_id))


# --- the store's pairing, without IMAP --------------------------------------------------------


async def test_pairing_in_either_order_one_to_one_and_flushing(db_dsn):
    async with Database.connect(db_dsn) as db:
        account_id, inbox = await account_with_folder(db, "pairs@example.test")
        archive = await db.fetchval(
            "INSERT INTO folders (account_id, name, raw_name) VALUES ($1, 'Archive', 'Archive') RETURNING id",
            account_id)
        await message_store.upsert(db, account_id, inbox, [meta(1, "a"), meta(2, "b"), meta(3, "c")],
                                   emit_events=False)
        email = await db.fetchval("SELECT email_id FROM messages WHERE folder_id = $1 AND uid = 1", inbox)
        start = await last_event(db)

        # removal first: held (the row is gone at once), then the arrival completes it
        async with db.transaction() as tx:
            assert await message_store.remove_uids(tx, account_id, inbox, [1]) == 1
        assert await db.fetchval("SELECT count(*) FROM messages WHERE folder_id = $1 AND uid = 1", inbox) == 0
        assert await events_after(db, account_id, start) == []
        await message_store.upsert(db, account_id, archive, [_with_uid(meta(1, "a"), 40)], emit_events=True)
        (event,) = await events_after(db, account_id, start)
        assert_moved(event, src="INBOX", src_uid=1, dest="Archive", dest_uid=40, email_id=email)

        # arrival first: another folder holds the email_id, so it waits for that removal
        start = await last_event(db)
        await message_store.upsert(db, account_id, archive, [_with_uid(meta(2, "b"), 41)], emit_events=True)
        assert await events_after(db, account_id, start) == []
        async with db.transaction() as tx:
            await message_store.remove_uids(tx, account_id, inbox, [2])
        (event,) = await events_after(db, account_id, start)
        assert event["kind"] == "message_moved" and event["payload"]["from_uid"] == 2

        # a held arrival whose source stays (a copy) becomes a message_added when flushed
        start = await last_event(db)
        await message_store.upsert(db, account_id, archive, [_with_uid(meta(3, "c"), 42)], emit_events=True)
        held = await move_store.held(db, account_id)
        assert held is not None and not held.removals and held.sources == {inbox}
        assert await move_store.flush_through(db, account_id, held.mark) == 1
        (event,) = await events_after(db, account_id, start)
        assert (event["kind"], event["folder"], event["payload"]["uid"]) == ("message_added", "Archive", 42)
        # a held removal past the window is a message_removed
        start = await last_event(db)
        async with db.transaction() as tx:
            await message_store.remove_uids(tx, account_id, inbox, [3])
        assert await move_store.flush_due(db, account_id, 3600) == 0
        assert await move_store.flush_due(db, account_id, 0) == 1
        (event,) = await events_after(db, account_id, start)
        assert (event["kind"], event["folder"], event["payload"]["uid"]) == ("message_removed", "INBOX", 3)
        assert await move_store.pending(db, account_id) == 0

        # a rolled back removal holds nothing and loses nothing
        await message_store.upsert(db, account_id, inbox, [meta(5, "e")], emit_events=False)
        with pytest.raises(RuntimeError):
            async with db.transaction() as tx:
                await message_store.remove_uids(tx, account_id, inbox, [5])
                raise RuntimeError("killed between")
        assert await move_store.pending(db, account_id) == 0
        assert await db.fetchval("SELECT count(*) FROM messages WHERE folder_id = $1 AND uid = 5", inbox) == 1


def _with_uid(m, uid: int):
    return dataclasses.replace(m, uid=uid)


async def test_a_side_held_when_the_actor_died_is_settled_by_the_next(dovecot, db_dsn, encryption_key):
    """The process dies after the visit that held a removal committed and before its
    search: the next actor's first search finds it alone (a message_removed), and a
    held removal whose arrival its first cycle sees becomes the message_moved."""
    user = dovecot.add_user()
    fill_small(dovecot, user, folders=FOLDERS, per_folder=5)
    async with watching(dovecot, user, db_dsn, encryption_key, notify=False) as (h, account_id):
        pass
    async with Database.connect(db_dsn) as db:
        inbox = await db.fetchval("SELECT id FROM folders WHERE account_id = $1 AND name = 'INBOX'", account_id)
        with MailboxClient(dovecot, user) as client:
            gone, moving = client.uids("INBOX")[:2]
            client.expunge_uids("INBOX", [gone])
            new_uid = client.move("INBOX", [moving], "Archive")[moving]
        before = await row(db, account_id, "INBOX", moving)
        assert before is not None
        email_id = before["email_id"]
        after = await last_event(db)
        async with db.transaction() as tx:  # what the killed visit of INBOX committed
            await message_store.remove_uids(tx, account_id, inbox, [gone, moving])
        assert await move_store.pending(db, account_id) == 2
    s = settings_for(db_dsn, encryption_key, MAILBRIDGE_POLL_SECONDS="600", MAILBRIDGE_MOVE_WINDOW_SECONDS="600")
    async with running_supervisor(db_dsn, s) as h:
        found = await settled(h.db, account_id, after, 2)
    by_kind = {e["kind"]: e for e in found}
    assert by_kind["message_removed"]["payload"]["uid"] == gone
    assert_moved(by_kind["message_moved"], src="INBOX", src_uid=moving, dest="Archive", dest_uid=new_uid,
                 email_id=email_id)

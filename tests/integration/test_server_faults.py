"""A server that answers malformed responses mid-sync (played by a rewriting proxy).

Whatever the damage, the actor reports a clear error, the other account syncs on, and
once the server behaves the mirror converges to its truth exactly."""

from __future__ import annotations

import re

import pytest
import trio

from tests.support.actors import insert_account, running_supervisor, settings_for, synced
from tests.support.cli import run_cli
from tests.support.imap_proxy import ImapProxy
from tests.support.mirror import assert_exact, base_env, fill_small, mirror, server_truth


def damage_once(pattern: bytes, replace):
    """A rewrite that damages the first server chunk matching `pattern`, then no more."""
    done = []

    def rewrite(chunk: bytes) -> bytes:
        if done or not re.search(pattern, chunk):
            return chunk
        done.append(True)
        return re.sub(pattern, replace, chunk, count=1)
    return rewrite


DAMAGES = {
    "a non-number size": (rb"RFC822\.SIZE \d+", b"RFC822.SIZE many"),
    "a literal longer than sent": (rb"\{(\d+)\}\r\n", lambda m: b"{%d}\r\n" % (int(m.group(1)) + 40)),
    "an unbalanced parenthesis": (rb"FLAGS \(", b"FLAGS (("),
    "a garbage line": (rb"\* \d+ FETCH", b"* \x00\xff garbage\r\n* 1 FETCH"),
    "an unreadable UID": (rb"FETCH \(UID \d+", b"FETCH (UID ?"),
    "a broken tagged status": (rb"(?m)^(\w+) OK Fetch", rb"\1 MAYBE Fetch"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
async def test_a_malformed_fetch_response_is_an_error_then_the_mirror_converges(
        dovecot, db_dsn, encryption_key, damage):
    damaged, healthy = dovecot.add_user(), dovecot.add_user()
    for user in (damaged, healthy):
        fill_small(dovecot, user, folders=("INBOX", "Archive"), per_folder=60)
    settings = settings_for(db_dsn, encryption_key, MAILBRIDGE_IMAP_TIMEOUT="3")
    pattern, replace = DAMAGES[damage]
    proxy = ImapProxy("127.0.0.1", dovecot.port)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        async with running_supervisor(db_dsn, settings) as h:
            proxy.rewrite = damage_once(pattern, replace)
            bad = await insert_account(h.db, settings, username=damaged.username, password=damaged.password,
                                       port=proxy.port)
            good = await insert_account(h.db, settings, username=healthy.username, password=healthy.password,
                                        port=dovecot.port)
            await h.wait_status(good, synced, 30, "the healthy account's first cycle")
            await h.wait_status(bad, lambda s: synced(s) and s.health == "healthy", 40,
                                "the damaged account to converge")
            assert_exact(server_truth(dovecot, damaged), await mirror(db_dsn, bad))
            assert_exact(server_truth(dovecot, healthy), await mirror(db_dsn, good))
        nursery.cancel_scope.cancel()


async def test_unreadable_rows_are_fetched_again_at_most_every_repair_interval(dovecot, db, db_dsn,
                                                                               encryption_key, tmp_path):
    from datetime import datetime, timedelta, timezone

    from mailbridge.aio.imap import ImapEndpoint, ImapSession
    from mailbridge.sync.folder import REPAIR_INTERVAL, FolderSync, load_folder
    from tests.support.folder_sync import fill_inbox, inbox_of, insert_account_row

    user = dovecot.add_user()
    fill_inbox(user, 30)
    account_id = await insert_account_row(db, dovecot, user)
    proxy = ImapProxy("127.0.0.1", dovecot.port)
    proxy.rewrite = lambda chunk: re.sub(rb"(\* \d+ FETCH \(UID 7 .*?RFC822\.SIZE )\d+", rb"\1many", chunk)
    clock = [datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)]

    async def visit(session, folder):
        sync = FolderSync(db, session, folder, batch_size=100, now=lambda: clock[0])
        return [step async for step in sync.steps()]

    async def unreadable():
        return [r["uid"] for r in await db.fetch(
            "SELECT uid FROM messages WHERE folder_id = $1 AND size_bytes IS NULL", inbox.id)]

    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        endpoint = ImapEndpoint("127.0.0.1", proxy.port, "none", user.username)
        async with ImapSession.open(endpoint, user.password) as session:
            inbox = await inbox_of(db, session, account_id)
            steps = await visit(session, inbox)  # the initial sync, then one refetch: damaged again
            assert [s.phase for s in steps].count("repair") == 1
            assert await unreadable() == [7]
            assert await db.fetchval("SELECT count(*) FROM messages WHERE folder_id = $1", inbox.id) == 30

            clock[0] += REPAIR_INTERVAL - timedelta(minutes=1)
            steps = await visit(session, await load_folder(db, inbox.id))
            assert "repair" not in [s.phase for s in steps]  # not before the interval is up
            assert await unreadable() == [7]
            env = base_env(db_dsn, encryption_key, tmp_path)
            shown = await trio.to_thread.run_sync(lambda: run_cli("accounts", "show", str(account_id), env=env))
            assert "1 message(s) with unreadable metadata (fetched again every 10 min" in shown.out, shown.out

            proxy.rewrite = None  # the server answers properly again
            clock[0] += timedelta(minutes=2)
            steps = await visit(session, await load_folder(db, inbox.id))
            repair = next(s for s in steps if s.phase == "repair")
            assert repair.changed == 1 and repair.added == 0
            assert await unreadable() == []
        nursery.cancel_scope.cancel()
    events = await db.fetchval("SELECT count(*) FROM events WHERE kind = 'message_changed' "
                               "AND (payload->>'uid')::int = 7")
    assert events == 1
    count = await db.fetchval("SELECT message_count FROM folders WHERE id = $1", inbox.id)
    assert count == 30


async def test_sync_once_goes_on_past_a_folder_the_server_refuses(dovecot, db_dsn, encryption_key, tmp_path):
    """A NO to one folder's FETCH: that folder waits for the next run, the others sync,
    the account is recorded degraded with the reason, and the exit code stays 0."""
    user = dovecot.add_user()
    fill_small(dovecot, user, folders=("INBOX", "Archive", "Sent"), per_folder=30)
    proxy = ImapProxy("127.0.0.1", dovecot.port)
    env = base_env(db_dsn, encryption_key, tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        added = await trio.to_thread.run_sync(lambda: run_cli(
            "accounts", "add", "--email", f"{user.username}@example.test", "--host", "127.0.0.1",
            "--port", str(proxy.port), "--tls", "none", "--username", user.username, "--password-stdin",
            env=env, input=user.password + "\n"))
        assert added.code == 0, added.err
        account_id = int(added.last_line)
        proxy.rewrite = damage_once(rb"(?m)^(\w+) OK Fetch", rb"\1 NO [SERVERBUG] Fetch failed")
        first = await trio.to_thread.run_sync(lambda: run_cli("sync", "--once", env=env))
        proxy.rewrite = None
        truth = server_truth(dovecot, user)
        mirrored = await mirror(db_dsn, account_id)
        refused_folders = [f for f in truth if set(mirrored.get(f, {})) != set(truth[f])]
        second = await trio.to_thread.run_sync(lambda: run_cli("sync", "--once", env=env))
        nursery.cancel_scope.cancel()
    assert first.code == 0, first.err
    assert "Traceback" not in first.err
    assert len(refused_folders) == 1, refused_folders
    assert f"account {account_id}: degraded: folder {refused_folders[0]!r}" in first.err
    assert "SERVERBUG" in first.err
    assert_exact({f: truth[f] for f in truth if f not in refused_folders},
                 {f: rows for f, rows in mirrored.items() if f not in refused_folders})
    assert second.code == 0 and "degraded" not in second.err, second.err
    assert_exact(server_truth(dovecot, user), await mirror(db_dsn, account_id))


async def test_a_server_gone_silent_mid_fetch_times_out_and_the_restart_converges(dovecot, db_dsn, encryption_key):
    user = dovecot.add_user()
    fill_small(dovecot, user, folders=("INBOX", "Archive"), per_folder=60)
    settings = settings_for(db_dsn, encryption_key, MAILBRIDGE_IMAP_TIMEOUT="2")
    proxy = ImapProxy("127.0.0.1", dovecot.port, stall_on="UID FETCH")
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        async with running_supervisor(db_dsn, settings) as h:
            account_id = await insert_account(h.db, settings, username=user.username, password=user.password,
                                              port=proxy.port)
            with trio.fail_after(10):
                await proxy.stalled.wait()
            await h.wait_status(account_id, lambda s: s.restarts >= 1, 10, "a restart after the timeout")
            status = h.status(account_id)
            assert "got no answer" in (status.last_error or ""), status.last_error
            proxy.resume()  # the server answers again (the held replies go to a closed socket)
            await h.wait_status(account_id, lambda s: synced(s) and s.health == "healthy", 30,
                                "the restarted actor to converge")
            assert_exact(server_truth(dovecot, user), await mirror(db_dsn, account_id))
        nursery.cancel_scope.cancel()

"""`mailbridge verify ID` compares the mirror with the server (real Dovecot, real Postgres).

verify must find drift on either side, stay quiet about mail that arrived after the last
sync (pending) and about the part of a folder an initial sync has not reached, take no
advisory lock, and never write to the database.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from mailbridge.aio.db import Database
from mailbridge.aio.locks import LockConnections
from mailbridge.config import Settings
from mailbridge.testing.imapctl import MailboxClient
from mailbridge.testing.mailgen import MaildirWriter, corpus, make_message
from tests.support.cli import REPO, run_cli
from tests.support.mirror import add_account, base_env, fill

FOLDERS = ["INBOX", "Sent", "Lists"]


@pytest.fixture
def env(db_dsn, encryption_key, tmp_path):
    return base_env(db_dsn, encryption_key, tmp_path)


def synced_account(env, dovecot, user, per_folder: int = 40) -> int:
    fill(dovecot, user, per_folder, folders=FOLDERS)
    account_id = add_account(env, dovecot, user)
    result = run_cli("sync", "--once", env=env, timeout=300)
    assert result.code == 0, result.err
    return account_id


def verify(env, account_id):
    result = run_cli("verify", str(account_id), env=env, timeout=120)
    print(f"$ mailbridge verify {account_id} -> exit {result.code}\n{result.out}{result.err}")  # shown on failure
    assert "Traceback" not in result.err, result.err
    assert "Traceback" not in result.out
    return result


async def snapshot(db_dsn) -> tuple:
    """Everything verify must leave alone."""
    async with Database.connect(db_dsn) as db:
        messages = await db.fetch("SELECT folder_id, uid, flags, updated_at FROM messages ORDER BY folder_id, uid")
        folders = await db.fetch("SELECT * FROM folders ORDER BY id")
        accounts = await db.fetch("SELECT * FROM accounts ORDER BY id")
        events = await db.fetchval("SELECT count(*) FROM events")
    return ([tuple(r) for r in messages], [tuple(r) for r in folders], [tuple(r) for r in accounts], events)


async def folder_id(db_dsn, account_id, name) -> int:
    async with Database.connect(db_dsn) as db:
        return await db.fetchval("SELECT id FROM folders WHERE account_id = $1 AND name = $2", account_id, name)


def line_of(out: str, folder: str) -> str:
    """The output lines of one folder (its header line and its indented detail lines)."""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"{folder}: "):
            block = [line]
            for more in lines[i + 1:]:
                if not more.startswith("  "):
                    break
                block.append(more)
            return "\n".join(block)
    raise AssertionError(f"no line for {folder!r} in:\n{out}")


def uids_in(text: str) -> set[int]:
    return {int(x) for x in re.findall(r"\b\d+\b", text)}


async def test_clean_after_sync_then_tampered_mirror(env, dovecot, mail_user, db_dsn):
    account_id = synced_account(env, dovecot, mail_user)
    before = await snapshot(db_dsn)
    clean = verify(env, account_id)
    assert clean.code == 0, clean.out + clean.err
    assert "no drift" in clean.out
    for folder in FOLDERS:
        assert line_of(clean.out, folder) == f"{folder}: ok"
    assert "Trash: skipped (excluded)" in clean.out or "Trash" not in clean.out
    assert await snapshot(db_dsn) == before  # verify never writes

    inbox = await folder_id(db_dsn, account_id, "INBOX")
    lists = await folder_id(db_dsn, account_id, "Lists")
    async with Database.connect(db_dsn) as db:
        deleted = await db.fetchval("DELETE FROM messages WHERE folder_id = $1 AND uid = 7 RETURNING uid", inbox)
        changed = await db.fetchval(
            "UPDATE messages SET flags = ARRAY['\\Answered', '$Bogus'] WHERE folder_id = $1 AND uid = 12 "
            "RETURNING uid", inbox)
        await db.execute("INSERT INTO messages (account_id, folder_id, uid) VALUES ($1, $2, 99999)",
                         account_id, lists)
    assert (deleted, changed) == (7, 12)
    before = await snapshot(db_dsn)
    result = verify(env, account_id)
    assert result.code == 1, result.out + result.err
    inbox_block = line_of(result.out, "INBOX")
    assert "DRIFT" in inbox_block
    assert re.search(r"1 UID\(s\) on the server missing from the mirror: 7$", inbox_block, re.M), inbox_block
    assert re.search(r"1 UID\(s\) with different flags: 12 \(mirror \$Bogus \\Answered; server", inbox_block), \
        inbox_block
    lists_block = line_of(result.out, "Lists")
    assert re.search(r"1 UID\(s\) in the mirror not on the server: 99999$", lists_block, re.M), lists_block
    assert line_of(result.out, "Sent") == "Sent: ok"
    assert result.out.strip().splitlines()[-1] == (
        f"DRIFT in 2 of 3 folder(s) of account {account_id} ({mail_user.username}@example.test): "
        "1 UID(s) missing from the mirror, 1 extra UID(s) in the mirror, 1 flag mismatch(es)")
    assert await snapshot(db_dsn) == before  # drift is reported, never repaired


async def test_server_side_changes_not_yet_synced_are_drift(env, dovecot, mail_user, db_dsn):
    account_id = synced_account(env, dovecot, mail_user)
    with MailboxClient(dovecot, mail_user) as client:
        sent_uid = client.uids("Sent")[4]
        client.store("Sent", [sent_uid], add=["\\Flagged", "$Urgent"])
        gone = client.uids("Lists")[:3]
        client.expunge_uids("Lists", gone)
        client.create("Projects")
        client.append("Projects", make_message(5, rng=random.Random(2)))
    result = verify(env, account_id)
    assert result.code == 1, result.out + result.err
    sent_block = line_of(result.out, "Sent")
    assert f"different flags: {sent_uid} (mirror" in sent_block
    assert "$Urgent" in sent_block and "\\Flagged" in sent_block
    lists_block = line_of(result.out, "Lists")
    assert "in the mirror not on the server: " + ", ".join(map(str, gone)) in lists_block
    assert line_of(result.out, "Projects") == "Projects: DRIFT: on the server, not in the mirror (not discovered yet)"
    assert line_of(result.out, "INBOX") == "INBOX: ok"

    # the next sync repairs all of it
    assert run_cli("sync", "--once", env=env).code == 0
    again = verify(env, account_id)
    assert again.code == 0, again.out
    assert "no drift" in again.out

    # a folder deleted on the server, still in the mirror
    with MailboxClient(dovecot, mail_user) as client:
        client.delete("Projects")
    result = verify(env, account_id)
    assert result.code == 1
    assert line_of(result.out, "Projects") == (
        "Projects: DRIFT: gone from the server; the mirror still has it (1 message(s))")


async def test_new_mail_above_the_mirrored_range_is_pending_not_drift(env, dovecot, mail_user, db_dsn):
    account_id = synced_account(env, dovecot, mail_user, per_folder=20)
    with MailboxClient(dovecot, mail_user) as client:
        for n in range(3):
            client.append("INBOX", make_message(900 + n, rng=random.Random(n)))
    result = verify(env, account_id)
    assert result.code == 0, result.out + result.err
    assert "ok; 3 new message(s) pending above the mirrored range" in line_of(result.out, "INBOX")
    assert "no drift" in result.out


async def test_initial_sync_in_progress_compares_only_the_mirrored_range(env, dovecot, mail_user, db_dsn):
    account_id = synced_account(env, dovecot, mail_user, per_folder=30)
    inbox = await folder_id(db_dsn, account_id, "INBOX")
    # as if the initial sync (newest first) had mirrored only UIDs 21..30 so far
    async with Database.connect(db_dsn) as db:
        await db.execute("DELETE FROM messages WHERE folder_id = $1 AND uid < 21", inbox)
        await db.execute("UPDATE folders SET initial_low_uid = 21, initial_sync_complete = false WHERE id = $1",
                         inbox)
    result = verify(env, account_id)
    assert result.code == 0, result.out + result.err
    assert line_of(result.out, "INBOX") == "INBOX: ok; initial sync in progress: 20 older message(s) not mirrored yet"

    # a hole inside the mirrored range is drift
    async with Database.connect(db_dsn) as db:
        await db.execute("DELETE FROM messages WHERE folder_id = $1 AND uid = 25", inbox)
    result = verify(env, account_id)
    assert result.code == 1
    assert "missing from the mirror: 25" in line_of(result.out, "INBOX")


async def test_uidvalidity_mismatch_is_drift(env, dovecot, mail_user, db_dsn):
    account_id = synced_account(env, dovecot, mail_user, per_folder=5)
    async with Database.connect(db_dsn) as db:
        stored = await db.fetchval(
            "UPDATE folders SET uidvalidity = uidvalidity + 1 WHERE account_id = $1 AND name = 'Sent' "
            "RETURNING uidvalidity", account_id)
    result = verify(env, account_id)
    assert result.code == 1
    assert f"UIDVALIDITY differs: mirror {stored}, server {stored - 1}" in line_of(result.out, "Sent")


async def test_verify_needs_no_lock_and_runs_while_another_process_owns_the_account(
        env, dovecot, mail_user, db_dsn):
    account_id = synced_account(env, dovecot, mail_user, per_folder=5)
    async with LockConnections.open(db_dsn, count=1) as locks:
        assert await locks.try_lock(account_id) is not None
        result = verify(env, account_id)
        assert result.code == 0, result.out + result.err
        assert "no drift" in result.out
        # and sync, which needs the lock, is refused meanwhile
        assert run_cli("sync", "--once", env=env).code == 1


async def test_verify_during_an_initial_sync_reports_no_false_drift(env, dovecot, mail_user, db_dsn):
    """serve (here: sync --once) writes while verify reads: the cursors and the second look
    keep verify from reporting what the sync is still doing."""
    MaildirWriter().write(mail_user, "INBOX", corpus(3000, seed=8))
    account_id = add_account(env, dovecot, mail_user)
    full_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    full_env.update(env)
    async with Database.connect(db_dsn) as db:
        proc = subprocess.Popen([sys.executable, "-m", "mailbridge", "sync", "--once"], env=full_env, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not await db.fetchval("SELECT count(*) FROM messages"):
                await trio.sleep(0.05)
            during = verify(env, account_id)
            partial = await db.fetchval("SELECT count(*) FROM messages")
        finally:
            _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert during.code == 0, during.out + during.err
    assert "no drift" in during.out
    if partial < 3000:  # the sync was still running when verify read the cursors
        assert "initial sync in progress" in during.out or "second look" in during.out
    after = verify(env, account_id)
    assert after.code == 0 and line_of(after.out, "INBOX") == "INBOX: ok"


async def test_big_folder_is_read_in_chunks(env, dovecot, mail_user, db_dsn, monkeypatch, encryption_key,
                                            tmp_path):
    """In-process with a tiny chunk size: many UID ranges, sparse UIDs, drift found."""
    from mailbridge import verify as verify_mod

    with MailboxClient(dovecot, mail_user) as client:
        uids = client.append_many("INBOX", list(corpus(120, seed=4)))
        client.expunge_uids("INBOX", [u for u in uids if 30 <= u < 90])  # a gap in the UIDs
    account_id = add_account(env, dovecot, mail_user)
    assert run_cli("sync", "--once", env=env).code == 0
    inbox = await folder_id(db_dsn, account_id, "INBOX")
    commands: list[str] = []  # counted through the throttle every command passes
    monkeypatch.setattr(verify_mod, "CHUNK", 8)
    monkeypatch.setattr(verify_mod, "RECHECK_DELAY", 0.1)
    from mailbridge.imap import throttle as throttle_mod

    real_acquire = throttle_mod.Throttle.acquire

    async def counting_acquire(self, cost: int = 1):
        commands.append("x")
        return await real_acquire(self, cost)

    monkeypatch.setattr(throttle_mod.Throttle, "acquire", counting_acquire)
    settings = Settings(database_url=db_dsn, home=Path(tmp_path), encryption_keys=(encryption_key,),
                        api_token=None, port=None, commands_per_minute=100_000)
    async with Database.connect(db_dsn) as db:
        report = await verify_mod.verify_account(db, settings, account_id)
        assert report.clean, verify_mod.format_report(report)
        assert len(commands) > 2 * (60 // 8)  # several SEARCH + FETCH ranges
        await db.execute("DELETE FROM messages WHERE folder_id = $1 AND uid = ANY($2::bigint[])",
                         inbox, [3, 95, 120])
        await db.execute("UPDATE messages SET flags = ARRAY['\\Seen'] WHERE folder_id = $1 AND uid = 100", inbox)
        report = await verify_mod.verify_account(db, settings, account_id)
        # with MAILBRIDGE_RETENTION_DAYS, a missing UID older than the window is not drift
        from dataclasses import replace

        kept = await verify_mod.verify_account(db, replace(settings, retention_days=1), account_id)
    (kept_drift,) = kept.drift
    assert kept_drift.flag_mismatches == ((100, ("\\Seen",), ()),)
    assert set(kept_drift.missing_uids) <= {3, 95, 120}
    assert ("older than MAILBRIDGE_RETENTION_DAYS" in kept_drift.note) == (kept_drift.missing_uids != (3, 95, 120))
    assert not report.clean
    (drift,) = report.drift
    assert drift.folder == "INBOX"
    assert drift.missing_uids == (3, 95, 120)
    assert drift.flag_mismatches == ((100, ("\\Seen",), ()),)
    assert drift.extra_uids == ()
    lines = verify_mod.format_report(report)
    assert lines[-1].startswith("DRIFT in 1 of 1 folder(s)")


async def test_unknown_account_and_wrong_password(env, dovecot, mail_user, db_dsn):
    result = verify(env, 999)
    assert result.code == 1
    assert result.err.strip() == "mailbridge: error: no account with id 999: see `mailbridge accounts list`"

    account_id = add_account(env, dovecot, mail_user)
    dovecot.set_password(mail_user, "another-password")
    before = await snapshot(db_dsn)
    result = verify(env, account_id)
    assert result.code == 1
    assert "authentication failed" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert await snapshot(db_dsn) == before  # not even the account's health


def test_format_report_shows_twenty_uids_of_each_kind_then_how_many_more():
    from mailbridge.verify import FolderDrift, VerifyReport, format_report

    drift = FolderDrift("Lists.python-dev", missing_uids=tuple(range(1, 31)), extra_uids=(500,),
                        flag_mismatches=tuple((u, ("\\Seen",), ()) for u in range(100, 125)),
                        uidvalidity_mismatch=None, note="2 new message(s) pending above the mirrored range")
    report = VerifyReport(7, 3, (drift,), (("Trash", "excluded"),), email="me@example.test",
                          checked=("INBOX", "Lists.python-dev", "Sent"), notes=(("Sent", "a note"),))
    lines = format_report(report)
    assert lines[0] == "INBOX: ok"
    assert lines[1] == "Lists.python-dev: DRIFT: 2 new message(s) pending above the mirrored range"
    assert lines[2] == ("  30 UID(s) on the server missing from the mirror: "
                        + ", ".join(map(str, range(1, 21))) + " … and 10 more")
    assert lines[3] == "  1 UID(s) in the mirror not on the server: 500"
    assert lines[4].startswith("  25 UID(s) with different flags: 100 (mirror \\Seen; server (none)), 101 ")
    assert lines[4].endswith("119 (mirror \\Seen; server (none)) … and 5 more")
    assert lines[5:] == [
        "Sent: ok; a note",
        "Trash: skipped (excluded)",
        "DRIFT in 1 of 3 folder(s) of account 7 (me@example.test): 30 UID(s) missing from the mirror, "
        "1 extra UID(s) in the mirror, 25 flag mismatch(es)",
    ]
    assert not report.clean
    assert VerifyReport(7, 3, (), ()).clean
    assert format_report(VerifyReport(7, 0, (), ()))[-1] == "no drift: 0 folder(s) of account 7 match the server"

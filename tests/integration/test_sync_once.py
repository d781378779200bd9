"""`mailbridge sync --once` mirrors every folder exactly (real Dovecot, real Postgres).

The server's truth is read with a separate client (stdlib imaplib); header fields are
compared with `extract_header_fields` applied to the server's raw header bytes, whose
own agreement with the `email` package is asserted in tests/unit/imap.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from mailbridge.aio.db import Database
from mailbridge.imap.headers import extract_header_fields
from mailbridge.testing.imapctl import MailboxClient
from mailbridge.testing.mailgen import MaildirWriter, corpus, make_message
from tests.support.cli import REPO, run_cli

FOLDERS = ["INBOX", "Sent", "Lists", "Lists.python-dev", "Reise & Urlaub.日本語"]


@pytest.fixture
def env(db_dsn, encryption_key, tmp_path):
    return {"DATABASE_URL": db_dsn, "MAILBRIDGE_ENCRYPTION_KEY": encryption_key,
            "MAILBRIDGE_HOME": str(tmp_path / "home"), "MAILBRIDGE_BATCH_SIZE": "100"}


def add_account(env, dovecot, user) -> int:
    result = run_cli("accounts", "add", "--email", f"{user.username}@example.test", "--host", "127.0.0.1",
                     "--port", str(dovecot.port), "--tls", "none", "--username", user.username,
                     "--password-stdin", env=env, input=user.password + "\n")
    assert result.code == 0, result.err
    return int(result.last_line)


def fill(dovecot, user, per_folder: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    with MailboxClient(dovecot, user) as client:
        for folder in FOLDERS:
            if folder != "INBOX":
                client.create(folder)
        for n, folder in enumerate(FOLDERS):
            messages = list(corpus(per_folder, seed=seed + n, folder_hint=folder))
            uids = client.append_many(folder, messages)
            client.store(folder, [u for u in uids if rng.random() < 0.4], add=["\\Seen"])
            client.store(folder, [u for u in uids if rng.random() < 0.1], add=["\\Flagged", "$Work"])


async def mirror(db_dsn, account_id) -> dict[str, dict[int, dict]]:
    async with Database.connect(db_dsn) as db:
        rows = await db.fetch(
            """SELECT f.name, m.* FROM messages m JOIN folders f ON f.id = m.folder_id
               WHERE m.account_id = $1""", account_id)
    out: dict[str, dict[int, dict]] = {}
    for r in rows:
        out.setdefault(r["name"], {})[r["uid"]] = dict(r)
    return out


def server_truth(dovecot, user) -> dict[str, dict[int, dict]]:
    with MailboxClient(dovecot, user) as client:
        return {folder: client.fetch_meta(folder) for folder in client.list_folders()
                if folder not in ("Trash", "Junk", "Spam")}


def assert_exact(truth, mirrored):
    assert set(mirrored) <= set(truth)
    for folder, server in truth.items():
        rows = mirrored.get(folder, {})
        assert set(rows) == set(server), f"{folder}: UIDs differ"
        for uid, meta in server.items():
            row = rows[uid]
            assert tuple(sorted(row["flags"])) == meta["flags"], (folder, uid)
            assert row["size_bytes"] == meta["size"], (folder, uid)
            assert row["internal_date"] == meta["internal_date"], (folder, uid)
            expected = extract_header_fields(meta["header_bytes"])
            assert row["message_id"] == expected.message_id
            assert row["subject"] == expected.subject
            assert row["from_email"] == expected.from_email
            assert row["from_name"] == expected.from_name
            assert tuple(row["to_emails"]) == expected.to_emails
            assert tuple(row["cc_emails"]) == expected.cc_emails
            assert row["in_reply_to"] == expected.in_reply_to
            assert tuple(row["references_header"]) == expected.references
            assert row["sent_at"] == expected.sent_at


async def test_mirror_is_exact_second_run_changes_nothing_new_mail_arrives(env, dovecot, mail_user, db_dsn):
    fill(dovecot, mail_user, per_folder=300)
    account_id = add_account(env, dovecot, mail_user)
    first = run_cli("sync", "--once", env=env, timeout=300)
    assert first.code == 0, first.err
    assert "Traceback" not in first.err
    truth = server_truth(dovecot, mail_user)
    assert sum(len(v) for v in truth.values()) == 300 * len(FOLDERS)
    assert_exact(truth, await mirror(db_dsn, account_id))
    async with Database.connect(db_dsn) as db:
        names = {r["name"] for r in await db.fetch("SELECT name FROM folders WHERE account_id = $1", account_id)}
        events_before = await db.fetchval("SELECT count(*) FROM events")
        updated_before = await db.fetchval("SELECT max(updated_at) FROM messages")
    assert {"Lists.python-dev", "Reise & Urlaub.日本語", "INBOX", "Sent"} <= names

    second = run_cli("sync", "--once", env=env, timeout=300)
    assert second.code == 0, second.err
    async with Database.connect(db_dsn) as db:
        assert await db.fetchval("SELECT count(*) FROM events") == events_before
        assert await db.fetchval("SELECT max(updated_at) FROM messages") == updated_before

    with MailboxClient(dovecot, mail_user) as client:
        client.append("INBOX", make_message(10_001, rng=random.Random(5)))
        client.append("Lists.python-dev", make_message(10_002, rng=random.Random(6), kind="encoded"))
        client.store("Sent", client.uids("Sent")[:3], add=["\\Answered"])
        client.expunge_uids("Lists", client.uids("Lists")[:2])
    third = run_cli("sync", "--once", env=env, timeout=300)
    assert third.code == 0, third.err
    assert_exact(server_truth(dovecot, mail_user), await mirror(db_dsn, account_id))


async def test_kill_9_during_initial_sync_then_resume_exactly(env, dovecot, mail_user, db_dsn):
    writer = MaildirWriter()
    writer.write(mail_user, "INBOX", corpus(6000, seed=3))
    account_id = add_account(env, dovecot, mail_user)
    full_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    full_env.update(env)
    async with Database.connect(db_dsn) as db:
        proc = subprocess.Popen([sys.executable, "-m", "mailbridge", "sync", "--once"], env=full_env, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                n = await db.fetchval("SELECT count(*) FROM messages")
                if n >= 1500:
                    break
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(30)
        partial = await db.fetchval("SELECT count(*) FROM messages")
        assert 0 < partial < 6000, partial
    result = run_cli("sync", "--once", env=env, timeout=300)
    assert result.code == 0, result.err
    truth = server_truth(dovecot, mail_user)
    assert len(truth["INBOX"]) == 6000
    assert_exact(truth, await mirror(db_dsn, account_id))


async def test_uidvalidity_change_mirrors_the_new_state(env, dovecot, mail_user, db_dsn):
    with MailboxClient(dovecot, mail_user) as client:
        client.create("Archive")
        client.append_many("Archive", list(corpus(50, seed=9)))
    account_id = add_account(env, dovecot, mail_user)
    assert run_cli("sync", "--once", env=env).code == 0
    dovecot.renumber_folder(mail_user, "Archive")
    with MailboxClient(dovecot, mail_user) as client:
        client.append("Archive", make_message(777, rng=random.Random(1)))
    result = run_cli("sync", "--once", env=env)
    assert result.code == 0, result.err
    assert "reset" in result.out
    assert_exact(server_truth(dovecot, mail_user), await mirror(db_dsn, account_id))
    async with Database.connect(db_dsn) as db:
        resets = await db.fetchval("SELECT count(*) FROM events WHERE kind = 'folder_reset'")
    assert resets == 1


async def test_wrong_password_marks_auth_failed(env, dovecot, mail_user, db_dsn):
    account_id = add_account(env, dovecot, mail_user)
    dovecot.set_password(mail_user, "a-new-password")
    result = run_cli("sync", "--once", env=env)
    assert result.code == 1 and "authentication failed" in result.err
    assert "Traceback" not in result.err
    async with Database.connect(db_dsn) as db:
        assert await db.fetchval("SELECT health FROM accounts WHERE id = $1", account_id) == "auth_failed"

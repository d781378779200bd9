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
import trio

from mailbridge.aio.db import Database
from mailbridge.testing.imapctl import MailboxClient
from mailbridge.testing.mailgen import MaildirWriter, corpus, make_message
from tests.support.cli import REPO, run_cli
from tests.support.mirror import FOLDERS, add_account, assert_exact, base_env, fill, mirror, server_truth


@pytest.fixture
def env(db_dsn, encryption_key, tmp_path):
    return base_env(db_dsn, encryption_key, tmp_path)


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
                await trio.sleep(0.05)
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


async def test_uidvalidity_resets_past_the_limit_park_the_folder_until_reset(env, dovecot, mail_user, db_dsn):
    with MailboxClient(dovecot, mail_user) as client:
        client.create("Archive")
        client.append_many("Archive", list(corpus(20, seed=11)))
        client.append_many("INBOX", list(corpus(5, seed=12)))
    env = dict(env, MAILBRIDGE_UIDVALIDITY_RESET_LIMIT="1")
    account_id = add_account(env, dovecot, mail_user)
    assert run_cli("sync", "--once", env=env).code == 0

    dovecot.renumber_folder(mail_user, "Archive")  # the first reset is within the limit
    assert run_cli("sync", "--once", env=env).code == 0
    dovecot.renumber_folder(mail_user, "Archive")  # the second in 24 h is not
    with MailboxClient(dovecot, mail_user) as client:
        client.append("INBOX", make_message(900, rng=random.Random(2)))
    result = run_cli("sync", "--once", env=env)
    assert result.code == 0, result.err  # the rest of the account synced; the health tells
    assert "Traceback" not in result.out + result.err
    assert f"account {account_id}: degraded: folder 'Archive' is parked" in result.err

    async with Database.connect(db_dsn) as db:
        folder = await db.fetchrow("SELECT parked, parked_reason, message_count FROM folders "
                                   "WHERE account_id = $1 AND name = 'Archive'", account_id)
        account = await db.fetchrow("SELECT health, health_reason FROM accounts WHERE id = $1", account_id)
        archived = await db.fetchval("SELECT count(*) FROM messages m JOIN folders f ON f.id = m.folder_id "
                                     "WHERE f.name = 'Archive'")
    assert folder["parked"] and "UIDVALIDITY changed 2 times in 24 h (limit 1)" in folder["parked_reason"]
    assert f"`mailbridge accounts reset {account_id} --folder Archive` resumes it" in folder["parked_reason"]
    assert archived == 0  # nothing half-synced under a UIDVALIDITY that keeps changing
    assert account["health"] == "degraded" and "'Archive' is parked" in account["health_reason"]
    truth = server_truth(dovecot, mail_user)
    assert_exact({"INBOX": truth["INBOX"]}, {"INBOX": (await mirror(db_dsn, account_id))["INBOX"]})

    shown = run_cli("accounts", "show", str(account_id), env=env)
    assert f"parked: UIDVALIDITY changed 2 times in 24 h (limit 1); `mailbridge accounts reset {account_id} " \
           "--folder Archive` resumes it" in shown.out, shown.out

    assert run_cli("sync", "--once", env=env).code == 0  # parked stays parked: no re-download
    assert (await mirror(db_dsn, account_id)).get("Archive", {}) == {}

    assert run_cli("accounts", "reset", str(account_id), "--folder", "Archive", env=env).code == 0
    assert run_cli("sync", "--once", env=env).code == 0
    assert_exact(server_truth(dovecot, mail_user), await mirror(db_dsn, account_id))
    async with Database.connect(db_dsn) as db:
        assert not await db.fetchval("SELECT parked FROM folders WHERE account_id = $1 AND name = 'Archive'",
                                     account_id)
        health = await db.fetchval("SELECT health FROM accounts WHERE id = $1", account_id)
    assert health == "healthy"

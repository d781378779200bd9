"""`mailbridge serve` as a real process: pick-up, one owner per account, takeover after
kill -9, clean stop on SIGTERM (real Dovecot, real Postgres)."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest
import trio

from mailbridge.aio.db import Database
from mailbridge.testing.imapctl import MailboxClient
from mailbridge.testing.mailgen import MaildirWriter, corpus, make_message
from tests.support.cli import run_cli
from tests.support.mirror import add_account, assert_exact, base_env, mirror, server_truth
from tests.support.processes import Serve


@pytest.fixture
def env(db_dsn, encryption_key, tmp_path):
    return base_env(db_dsn, encryption_key, tmp_path, MAILBRIDGE_POLL_SECONDS="1")


async def poll(db, sql, *args, until, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = await db.fetchval(sql, *args)
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last value {value!r})")
        await trio.sleep(0.05)


async def advisory_locks(db) -> int:
    return await db.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())", 0x6D62)


async def test_serve_picks_up_a_new_account_within_2_s_and_mirrors_it(env, dovecot, mail_user, db_dsn):
    with MailboxClient(dovecot, mail_user) as client:
        client.create("Lists.python-dev")
        client.append_many("Lists.python-dev", list(corpus(60, seed=4)))
        client.append_many("INBOX", list(corpus(60, seed=5)))
    serve = Serve(env)
    try:
        serve.wait_serving()
        assert any("ok   schema" in line for line in serve.out)
        async with Database.connect(db_dsn) as db:
            account_id = add_account(env, dovecot, mail_user)
            added = time.monotonic()
            await poll(db, "SELECT owner FROM accounts WHERE id = $1", account_id, until=lambda v: v == serve.owner,
                       timeout=5, what="serve to take the account")
            assert time.monotonic() - added <= 2.0
            await poll(db, "SELECT count(*) FROM messages", until=lambda v: v == 120, timeout=60,
                       what="the initial sync")
            assert_exact(server_truth(dovecot, mail_user), await mirror(db_dsn, account_id))
            with MailboxClient(dovecot, mail_user) as client:
                client.append("INBOX", make_message(9001, rng=random.Random(3)))
            await poll(db, "SELECT count(*) FROM messages", until=lambda v: v == 121, timeout=10,
                       what="new mail")
            assert await db.fetchval("SELECT health FROM accounts WHERE id = $1", account_id) == "healthy"
            code, took = serve.stop()
            assert code == 0 and took < 10, (code, took, serve.err)
            assert await advisory_locks(db) == 0
            assert await db.fetchval("SELECT owner FROM accounts WHERE id = $1", account_id) is None
        assert "Traceback" not in "".join(serve.err)
    finally:
        serve.kill()


async def test_two_processes_one_owner_and_takeover_after_kill_9(env, dovecot, mail_user, db_dsn):
    with MailboxClient(dovecot, mail_user) as client:
        client.append_many("INBOX", list(corpus(30, seed=8)))
    account_id = add_account(env, dovecot, mail_user)
    first, second = Serve(env), None
    try:
        first.wait_serving()
        async with Database.connect(db_dsn) as db:
            await poll(db, "SELECT owner FROM accounts WHERE id = $1", account_id,
                       until=lambda v: v == first.owner, timeout=10, what="the first process to own it")
            second = Serve(env)
            second.wait_serving()
            await trio.sleep(3)  # the account is one process's share: it may have moved to the newcomer
            owner = await db.fetchval("SELECT owner FROM accounts WHERE id = $1", account_id)
            assert owner in (first.owner, second.owner)
            assert await advisory_locks(db) == 1
            if owner == second.owner:
                first, second = second, first

            first.kill()  # SIGKILL: no cleanup at all
            killed = time.monotonic()
            await poll(db, "SELECT owner FROM accounts WHERE id = $1", account_id,
                       until=lambda v: v == second.owner, timeout=30, what="the second process to take over")
            assert time.monotonic() - killed < 30
            with MailboxClient(dovecot, mail_user) as client:
                client.append("INBOX", make_message(9002, rng=random.Random(4)))
            await poll(db, "SELECT count(*) FROM messages", until=lambda v: v == 31, timeout=15,
                       what="the new owner to sync new mail")
            assert_exact(server_truth(dovecot, mail_user), await mirror(db_dsn, account_id))
            code, _ = second.stop()
            assert code == 0
    finally:
        first.kill()
        if second is not None:
            second.kill()


async def test_sigterm_during_initial_sync_exits_0_and_the_next_run_resumes(env, dovecot, mail_user, db_dsn):
    MaildirWriter().write(mail_user, "INBOX", corpus(6000, seed=11))
    account_id = add_account(env, dovecot, mail_user)
    serve = Serve(env)
    try:
        serve.wait_serving()
        async with Database.connect(db_dsn) as db:
            await poll(db, "SELECT count(*) FROM messages", until=lambda v: v >= 800, timeout=60,
                       what="the initial sync to get going")
            code, took = serve.stop(signal.SIGTERM)
            partial = await db.fetchval("SELECT count(*) FROM messages")
            assert code == 0 and took < 10, (code, took, serve.err)
            assert partial < 6000, "the sync finished before the signal; the test proves nothing"
            assert await advisory_locks(db) == 0
        result = run_cli("sync", "--once", env=env, timeout=300)
        assert result.code == 0, result.err
        assert_exact(server_truth(dovecot, mail_user), await mirror(db_dsn, account_id))
    finally:
        serve.kill()


def test_serve_refuses_an_unmigrated_database(empty_db_dsn, encryption_key, tmp_path):
    env = {"DATABASE_URL": empty_db_dsn, "MAILBRIDGE_ENCRYPTION_KEY": encryption_key,
           "MAILBRIDGE_HOME": str(tmp_path / "home")}
    result = run_cli("serve", env=env, timeout=60)
    assert result.code == 1
    assert "mailbridge migrate" in result.out + result.err
    assert "Traceback" not in result.err


def test_serve_refuses_to_listen_beyond_loopback_without_a_token(db_dsn, encryption_key, tmp_path):
    env = {"DATABASE_URL": db_dsn, "MAILBRIDGE_ENCRYPTION_KEY": encryption_key,
           "MAILBRIDGE_HOME": str(tmp_path / "home")}
    result = run_cli("serve", "--bind", "0.0.0.0:0", env=env, timeout=60)
    assert result.code == 2
    assert "MAILBRIDGE_API_TOKEN" in result.err and "Traceback" not in result.err
    result = run_cli("serve", "--bind", "nonsense", env=env, timeout=60)
    assert result.code == 2 and "HOST:PORT" in result.err


async def test_serve_answers_http_with_its_token_and_stops_http_first(env, dovecot, mail_user, db_dsn):
    import json
    import urllib.error
    import urllib.request

    env = {**env, "MAILBRIDGE_API_TOKEN": "s3cret-token"}
    account_id = add_account(env, dovecot, mail_user)
    serve = Serve(env)
    try:
        serve.wait_serving()
        with urllib.request.urlopen(serve.url + "/health", timeout=10) as response:
            assert response.status == 200
        try:
            urllib.request.urlopen(serve.url + "/actors", timeout=10)
            raise AssertionError("no 401 without the token")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
        request = urllib.request.Request(serve.url + "/actors", headers={"Authorization": "Bearer s3cret-token"})
        deadline = time.monotonic() + 20
        while True:
            with urllib.request.urlopen(request, timeout=10) as response:
                actors = json.loads(response.read())
            entries = actors["actors"] if isinstance(actors, dict) else actors
            if any(a["account_id"] == account_id and a["lock_held"] for a in entries):
                break
            assert time.monotonic() < deadline, actors
            await trio.sleep(0.2)
        code, took = serve.stop()
        assert code == 0 and took < 10
        assert "s3cret-token" not in "".join(serve.out + serve.err)
    finally:
        serve.kill()

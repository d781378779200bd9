"""Signed webhooks against real receivers (HTTP servers on loopback), real Dovecot and
real Postgres: retries until a failing receiver recovers, exactly once and in order;
a dead receiver delays neither the mirror nor a healthy receiver; `kill -9` of `serve`
mid-delivery loses nothing and repeats only with the same id."""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import replace

import pytest
import trio

from mailbridge.aio.db import Database
from mailbridge.aio.locks import LockConnections
from mailbridge.config import load_settings
from mailbridge.store import webhooks as webhook_store
from mailbridge.testing.imapctl import MailboxClient
from mailbridge.testing.mailgen import corpus, make_message
from mailbridge.webhooks import manage
from mailbridge.webhooks.backoff import Backoff
from mailbridge.webhooks.delivery import Deliverers
from tests.support.cli import run_cli
from tests.support.mirror import add_account, base_env
from tests.support.processes import Serve
from tests.support.receivers import Receiver

SECRET = "whsec-test-7c1d"


@pytest.fixture
def env(db_dsn, encryption_key, tmp_path):
    return base_env(db_dsn, encryption_key, tmp_path, MAILBRIDGE_POLL_SECONDS="1")


async def until(check, *, timeout: float, what: str, every: float = 0.05):
    """Poll the (async or plain) `check` until it returns a true value; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if hasattr(value, "__await__"):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await trio.sleep(every)


def add_webhook_cli(env, url: str, *extra: str) -> int:
    result = run_cli("webhooks", "add", url, "--secret-stdin", *extra, env=env, input=SECRET + "\n")
    assert result.code == 0, result.err
    return int(result.last_line)


async def events_after(db, base: int) -> list[dict]:
    return [dict(r) for r in await db.fetch("SELECT id, account_id, kind FROM events WHERE id > $1 ORDER BY id",
                                            base)]


def assert_in_order_per_account(receiver: Receiver) -> None:
    seen: dict[int | None, list[int]] = {}
    first: set[int] = set()
    for d in receiver.delivered:
        if d.event_id in first:
            continue
        first.add(d.event_id)
        seen.setdefault(d.account_id, []).append(d.event_id)
    for account, ids in seen.items():
        assert ids == sorted(ids), f"account {account}: delivered out of order: {ids}"


async def test_a_receiver_failing_three_times_then_gets_every_event_exactly_once_signed_in_order(
        env, dovecot, mail_user, db_dsn):
    with MailboxClient(dovecot, mail_user) as client:
        client.create("Work")
    add_account(env, dovecot, mail_user)
    assert run_cli("sync", "--once", env=env).code == 0  # the initial sync records no message events
    with MailboxClient(dovecot, mail_user) as client:
        client.append_many("INBOX", list(corpus(6, seed=11)))
        client.append_many("Work", list(corpus(4, seed=12)))
    settings = replace(load_settings(env, dotenv=None), webhook_timeout_seconds=1.0)
    # 500, then no answer (and the receiver stops listening: the next try is refused)
    with Receiver(SECRET, script=[500, "hang_close"], hang_seconds=5) as receiver:
        async with Database.connect(db_dsn, max_size=4) as db, LockConnections.open(db_dsn, count=1) as locks:
            webhook_id = await manage.add(db, settings, receiver.url, SECRET, None)
            base = int(await db.fetchval("SELECT coalesce(max(id), 0) FROM events"))
            result = run_cli("sync", "--once", env=env)
            assert result.code == 0, result.err
            expected = await events_after(db, base)
            assert sum(e["kind"] == "message_added" for e in expected) == 10

            seen: list[tuple[int, int | None, str | None]] = []

            async def watch_state() -> None:
                while True:
                    hook = await webhook_store.get(db, webhook_id)
                    if not seen or seen[-1][0] != hook.failures:
                        seen.append((hook.failures, hook.last_status, hook.last_error))
                    await trio.sleep(0.02)

            deliverers = Deliverers(db, locks, settings, owner="test", rescan=0.5, idle=0.5,
                                    backoff=Backoff(retry_hours=1, base=0.2, cap=0.4))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_state)
                await nursery.start(deliverers.run)
                await until(lambda: seen and seen[-1][0] >= 3, timeout=20, what="three failed attempts")
                assert receiver.delivered == []
                receiver.open()  # recovered, on the same port
                await until(lambda: len(receiver.delivered) >= len(expected), timeout=30,
                            what="every event after the recovery")
                await trio.sleep(1.0)  # nothing more comes (no repeats)
                hook = await webhook_store.get(db, webhook_id)
                lag = await webhook_store.lag(db, hook)
                nursery.cancel_scope.cancel()

    failures = {f: (status, error) for f, status, error in seen}
    assert failures[1][0] == 500 and failures[1][1].startswith("HTTP 500"), failures
    assert failures[2][0] is None and "no answer within 1 s" in failures[2][1], failures
    assert failures[3][0] is None and "cannot connect" in failures[3][1], failures
    ids = receiver.ids()
    assert ids == [e["id"] for e in expected], "every event exactly once, in event order"
    assert receiver.invalid == 0 and all(d.valid for d in receiver.delivered)
    assert all(d.header_id == str(d.event_id) for d in receiver.delivered)
    assert_in_order_per_account(receiver)
    assert hook.attempts == 0 and hook.failures == 3 and hook.last_status == 200 and hook.last_error is None
    assert hook.last_event_id == ids[-1] and lag == 0 and hook.state == "ok"
    # a message event carries the message as the API shows it: no second call needed
    added = [d.body for d in receiver.delivered if d.type == "message_added"]
    async with Database.connect(db_dsn, max_size=2) as db:
        rows = {r["id"]: r for r in await db.fetch(
            "SELECT m.id, m.uid, m.subject, m.message_id, m.from_email, f.name AS folder, m.flags "
            "FROM messages m JOIN folders f ON f.id = m.folder_id")}
    assert len(added) == 10
    for body in added:
        data, row = body["data"], rows[body["data"]["id"]]
        assert (data["uid"], data["subject"], data["message_id"], data["from_email"], data["folder"]) == (
            row["uid"], row["subject"], row["message_id"], row["from_email"], row["folder"])
        assert data["flags"] == list(row["flags"]) and "unread" in data and "email_id" in data
        assert set(body) == {"id", "type", "account_id", "created_at", "data"}
    assert {b["data"]["folder"] for b in added} == {"INBOX", "Work"}


async def test_parked_after_the_retry_window_with_the_last_error_then_resumed(env, db_dsn, mail_user, dovecot):
    settings = replace(load_settings(env, dotenv=None), webhook_timeout_seconds=1.0)
    with Receiver(SECRET, default=503) as receiver:
        async with Database.connect(db_dsn, max_size=4) as db, LockConnections.open(db_dsn, count=1) as locks:
            webhook_id = await manage.add(db, settings, receiver.url, SECRET, ["folder_added"])
            add_account(env, dovecot, mail_user)
            assert run_cli("sync", "--once", env=env).code == 0
            deliverers = Deliverers(db, locks, settings, owner="test", rescan=0.3, idle=0.3,
                                    backoff=Backoff(retry_hours=1.5 / 3600, base=0.2, cap=0.3))
            async with trio.open_nursery() as nursery:
                await nursery.start(deliverers.run)
                hook = await until(lambda: _parked(db, webhook_id), timeout=20, what="the webhook parked")
                assert hook.last_status == 503 and hook.last_error.startswith("HTTP 503")
                attempts = receiver.attempts
                await trio.sleep(1.0)
                assert receiver.attempts == attempts, "a parked webhook is not tried"
                assert await webhook_store.lag(db, hook) >= 1
                receiver.default = "ok"
                result = run_cli("webhooks", "resume", str(webhook_id), env=env)
                assert result.code == 0, result.err
                await until(lambda: receiver.delivered, timeout=10, what="delivery after the resume")
                hook = await until(lambda: _drained(db, webhook_id), timeout=10, what="the lag to drain")
                nursery.cancel_scope.cancel()
    assert {d.type for d in receiver.delivered} == {"folder_added"}
    assert not hook.parked and hook.state == "ok"


async def _parked(db, webhook_id):
    hook = await webhook_store.get(db, webhook_id)
    return hook if hook.parked else None


async def _drained(db, webhook_id):
    hook = await webhook_store.get(db, webhook_id)
    return hook if await webhook_store.lag(db, hook) == 0 else None


async def test_cli_add_list_test_remove(env, db_dsn):
    with Receiver(SECRET) as receiver:
        bad = run_cli("webhooks", "add", "ftp://example.test/x", "--secret-stdin", env=env, input=SECRET + "\n")
        assert bad.code == 2 and "http:// or https://" in bad.err
        bad = run_cli("webhooks", "add", receiver.url, "--events", "message_added,nope", "--secret-stdin",
                      env=env, input=SECRET + "\n")
        assert bad.code == 2 and "'nope'" in bad.err
        webhook_id = add_webhook_cli(env, receiver.url, "--events", "message_added,message_removed")
        listed = run_cli("webhooks", "list", env=env)
        assert listed.code == 0 and receiver.url in listed.out and SECRET not in listed.out
        tested = run_cli("webhooks", "test", str(webhook_id), env=env)
        assert tested.code == 0 and "HTTP 200" in tested.out, tested.err
        [delivery] = receiver.delivered
        assert delivery.type == "webhook.test" and delivery.valid and delivery.body["data"]["webhook_id"] == webhook_id
        async with Database.connect(db_dsn, max_size=2) as db:
            stored = await db.fetchval("SELECT secret_encrypted FROM webhooks WHERE id = $1", webhook_id)
            assert SECRET.encode() not in bytes(stored)
        assert run_cli("webhooks", "remove", str(webhook_id), env=env).code == 0
        gone = run_cli("webhooks", "test", str(webhook_id), env=env)
        assert gone.code == 1 and f"no webhook with id {webhook_id}" in gone.err
    refused = run_cli("webhooks", "add", receiver.url, "--secret-stdin", env=env, input=SECRET + "\n")
    tested = run_cli("webhooks", "test", refused.last_line, env=env)
    assert tested.code == 1 and "cannot connect" in tested.err


async def test_keys_rotate_reencrypts_webhook_secrets(env, db_dsn, encryption_key):
    from mailbridge.secrets import Cipher, generate_key

    webhook_id = add_webhook_cli(env, "http://127.0.0.1:9/hook")
    new_key = generate_key()
    rotated = {**env, "MAILBRIDGE_ENCRYPTION_KEY": f"{new_key},{encryption_key}"}
    assert run_cli("keys", "rotate", env=rotated).code == 0
    async with Database.connect(db_dsn, max_size=2) as db:
        stored = bytes(await db.fetchval("SELECT secret_encrypted FROM webhooks WHERE id = $1", webhook_id))
    assert Cipher([new_key]).decrypt(stored) == SECRET


async def test_a_dead_receiver_delays_neither_the_mirror_nor_a_healthy_receiver(env, dovecot, mail_user, db_dsn):
    with MailboxClient(dovecot, mail_user) as client:
        client.append_many("INBOX", list(corpus(20, seed=21)))
    env = {**env, "MAILBRIDGE_WEBHOOK_TIMEOUT_SECONDS": "30"}
    with Receiver(SECRET, default="hang", hang_seconds=120) as dead, Receiver(SECRET) as healthy:
        account_id = add_account(env, dovecot, mail_user)
        dead_id = add_webhook_cli(env, dead.url)
        healthy_id = add_webhook_cli(env, healthy.url)
        serve = Serve(env)
        try:
            serve.wait_serving()
            async with Database.connect(db_dsn, max_size=2) as db:
                await until(lambda: _count(db, "SELECT count(*) FROM messages", 20), timeout=60,
                            what="the initial sync")
                await until(lambda: _drained(db, healthy_id), timeout=20, what="the healthy receiver to catch up")
                assert dead.attempts >= 1 and dead.delivered == []
                with MailboxClient(dovecot, mail_user) as client:
                    client.append("INBOX", make_message(5001, rng=random.Random(5)))
                t0 = time.monotonic()
                await until(lambda: _count(db, "SELECT count(*) FROM messages", 21), timeout=10, what="new mail")
                mirrored = time.monotonic() - t0
                await until(lambda: any(d.type == "message_added" and d.at >= t0 for d in healthy.delivered),
                            timeout=10, what="the healthy receiver to get the new mail")
                received = max(d.at for d in healthy.delivered) - t0
                dead_hook = await webhook_store.get(db, dead_id)
                assert await webhook_store.lag(db, dead_hook) > 0
                assert await db.fetchval("SELECT owner FROM webhooks WHERE id = $1", healthy_id) == serve.owner
            assert mirrored <= 5.0, mirrored
            assert received <= 5.0, received
            assert dead.attempts == 1, "the dead receiver still holds its first delivery"
            assert account_id
            print(f"new mail in Postgres after {mirrored:.2f} s, at the healthy receiver after {received:.2f} s")
        finally:
            serve.kill()


async def _count(db, sql, want):
    return await db.fetchval(sql) == want


async def test_kill_9_mid_delivery_loses_nothing_and_repeats_only_with_the_same_id(env, dovecot, mail_user, db_dsn):
    add_account(env, dovecot, mail_user)
    assert run_cli("sync", "--once", env=env).code == 0  # the initial sync records no message events
    with MailboxClient(dovecot, mail_user) as client:
        client.append_many("INBOX", list(corpus(150, seed=31)))
    with Receiver(SECRET, delay=0.03) as receiver:
        webhook_id = add_webhook_cli(env, receiver.url)
        async with Database.connect(db_dsn, max_size=2) as db:
            base = int(await db.fetchval("SELECT coalesce(max(id), 0) FROM events"))  # what it gets: after
            assert run_cli("sync", "--once", env=env).code == 0
            first = Serve(env)
            try:
                first.wait_serving()
                await until(lambda: len(receiver.delivered) >= 40, timeout=30, what="deliveries to start")
                first.kill()  # SIGKILL mid-delivery
                # a delivery already on the wire still lands (the receiver answers after
                # its delay): count once nothing more can arrive from the killed process
                await trio.sleep(0.5)
                at_kill = len(receiver.delivered)
            finally:
                first.kill()
            second = Serve(env)
            try:
                second.wait_serving()
                await until(lambda: _drained(db, webhook_id), timeout=60, what="the rest after the restart")
                await until(lambda: db.fetchval("SELECT owner FROM webhooks WHERE id = $1", webhook_id),
                            timeout=5, what="the owner")
                expected = [e["id"] for e in await events_after(db, base)]
                hook = await webhook_store.get(db, webhook_id)
            finally:
                second.kill()
    ids = receiver.ids()
    assert at_kill < len(expected), "the kill came mid-delivery"
    assert set(ids) == set(expected), "no event missing"
    repeats = {i: n for i, n in Counter(ids).items() if n > 1}
    # at most the in-flight batch: the event in flight and those answered in the last
    # COMMIT_SECONDS (0.2 s at ~30 ms a delivery: about 7), each repeated once
    assert all(n == 2 for n in repeats.values()) and len(repeats) <= 15, repeats
    assert set(repeats) <= set(ids[:at_kill][-15:]), "only what was delivered just before the kill"
    for event_id in repeats:
        bodies = [d for d in receiver.delivered if d.event_id == event_id]
        assert len({(d.header_id, d.type, d.account_id) for d in bodies}) == 1
    assert all(d.valid for d in receiver.delivered)
    assert_in_order_per_account(receiver)
    assert hook.owner == second.owner
    print(f"{len(ids)} deliveries of {len(set(ids))} events, {at_kill} before the kill, repeats {repeats}")


async def test_an_event_whose_transaction_commits_late_is_not_stepped_over(env, db_dsn):
    """Ids are handed out before commit: event A (smaller id) may commit after event B.
    Delivery waits for A's transaction instead of moving its cursor past A's id."""
    settings = load_settings(env, dotenv=None)
    with Receiver(SECRET) as receiver:
        async with Database.connect(db_dsn, max_size=4) as db, LockConnections.open(db_dsn, count=1) as locks:
            await manage.add(db, settings, receiver.url, SECRET, None)
            deliverers = Deliverers(db, locks, settings, owner="test", rescan=0.3, idle=0.3)
            a_written, commit_a = trio.Event(), trio.Event()

            async def slow_writer() -> None:
                async with db.transaction() as tx:
                    await tx.execute("INSERT INTO events (kind, payload) VALUES ('folder_reset', '{\"n\": \"A\"}')")
                    a_written.set()
                    await commit_a.wait()

            async with trio.open_nursery() as nursery:
                await nursery.start(deliverers.run)
                nursery.start_soon(slow_writer)
                await a_written.wait()
                await db.execute("INSERT INTO events (kind, payload) VALUES ('folder_reset', '{\"n\": \"B\"}')")
                ids = {r["payload"]: r["id"] for r in await db.fetch("SELECT id, payload::text FROM events")}
                await trio.sleep(1.5)
                assert receiver.delivered == [], "B waits while A's transaction runs"
                commit_a.set()
                await until(lambda: len(receiver.delivered) == 2, timeout=10, what="both events")
                await trio.sleep(0.5)
                nursery.cancel_scope.cancel()
    assert [d.body["data"]["n"] for d in receiver.delivered] == ["A", "B"]
    assert len(ids) == 1  # only B was visible while A's transaction ran


async def test_a_long_transaction_in_another_database_does_not_hold_delivery_back(env, db_dsn, empty_db_dsn):
    settings = load_settings(env, dotenv=None)
    with Receiver(SECRET) as receiver:
        async with Database.connect(db_dsn, max_size=4) as db, Database.connect(empty_db_dsn, max_size=1) as other, \
                LockConnections.open(db_dsn, count=1) as locks:
            await manage.add(db, settings, receiver.url, SECRET, None)
            async with other.transaction() as tx:
                await tx.execute("CREATE TABLE t (x int)")  # holds an xid until the block ends
                deliverers = Deliverers(db, locks, settings, owner="test", rescan=0.3, idle=0.3)
                async with trio.open_nursery() as nursery:
                    await nursery.start(deliverers.run)
                    await db.execute("INSERT INTO events (kind) VALUES ('folder_reset')")
                    await until(lambda: receiver.delivered, timeout=5, what="the event")
                    nursery.cancel_scope.cancel()


async def test_of_two_serve_processes_exactly_one_delivers_a_webhook(env, dovecot, mail_user, db_dsn):
    add_account(env, dovecot, mail_user)
    assert run_cli("sync", "--once", env=env).code == 0
    with Receiver(SECRET) as receiver:
        webhook_id = add_webhook_cli(env, receiver.url, "--events", "message_added")
        first, second = Serve(env), Serve(env)
        try:
            first.wait_serving()
            second.wait_serving()
            with MailboxClient(dovecot, mail_user) as client:
                client.append_many("INBOX", list(corpus(30, seed=41)))
            async with Database.connect(db_dsn, max_size=2) as db:
                await until(lambda: len(receiver.delivered) >= 30, timeout=30, what="30 new messages' events")
                await until(lambda: _drained(db, webhook_id), timeout=10, what="the lag to drain")
                await trio.sleep(1.0)
                owner = await db.fetchval("SELECT owner FROM webhooks WHERE id = $1", webhook_id)
                locks = await db.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2 "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                    0x6D65, webhook_id)
        finally:
            first.kill()
            second.kill()
    ids = receiver.ids()
    assert len(ids) == len(set(ids)) == 30, "each event once: one process delivers"
    assert owner in (first.owner, second.owner) and locks == 1
    assert_in_order_per_account(receiver)


async def test_a_move_is_delivered_as_one_message_moved_with_the_message_and_its_origin(env, dovecot, mail_user,
                                                                                      db_dsn):
    with MailboxClient(dovecot, mail_user) as client:
        client.create("Archive")
        client.append_many("INBOX", list(corpus(3, seed=21)))
    add_account(env, dovecot, mail_user)
    assert run_cli("sync", "--once", env=env).code == 0
    with MailboxClient(dovecot, mail_user) as client:
        uid = client.uids("INBOX")[0]
        new_uid = client.move("INBOX", [uid], "Archive")[uid]
    settings = load_settings(env, dotenv=None)
    with Receiver(SECRET) as receiver:
        async with Database.connect(db_dsn, max_size=4) as db, LockConnections.open(db_dsn, count=1) as locks:
            await manage.add(db, settings, receiver.url, SECRET, ["message_moved", "message_removed",
                                                                 "message_added"])
            assert run_cli("sync", "--once", env=env).code == 0
            deliverers = Deliverers(db, locks, settings, owner="test", rescan=0.5, idle=0.5)
            async with trio.open_nursery() as nursery:
                await nursery.start(deliverers.run)
                await until(lambda: receiver.delivered, timeout=20, what="the move's delivery")
                await trio.sleep(0.5)
                nursery.cancel_scope.cancel()
            row = await db.fetchrow("SELECT m.id, m.subject, m.email_id FROM messages m JOIN folders f "
                                    "ON f.id = m.folder_id WHERE f.name = 'Archive' AND m.uid = $1", new_uid)
    [delivery] = receiver.delivered
    data = delivery.body["data"]
    assert delivery.valid and delivery.type == "message_moved"
    assert (data["id"], data["folder"], data["uid"], data["subject"]) == (row["id"], "Archive", new_uid,
                                                                          row["subject"])
    assert (data["from_folder"], data["from_uid"], data["email_id"]) == ("INBOX", uid, row["email_id"])
    assert "gone" not in data

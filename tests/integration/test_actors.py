"""The Supervisor and AccountActors in-process, against real Postgres and Dovecot.

A counting proxy (tests/support/imap_proxy.py) sits between the actors and Dovecot
where a test must know what reached the server (LOGINs, commands per minute) or must
cut the connection.
"""

from __future__ import annotations

import random

import trio

from actors import status as st
from actors.messages import FetchBody
from actors.registry import ActorTimeout, ActorUnavailable
from mailbridge.errors import MessageGone, MessageTooLarge
from mailbridge.imap.throttle import Throttle
from mailbridge.secrets import Cipher
from mailbridge.testing.imapctl import MailboxClient
from mailbridge.testing.mailgen import MaildirWriter, corpus, make_message
from tests.support.actors import insert_account, running_supervisor, settings_for, synced
from tests.support.imap_proxy import ImapProxy
from tests.support.mirror import assert_exact, fill_small, mirror, server_truth


async def test_actor_mirrors_every_folder_and_new_mail(dovecot, mail_user, db_dsn, encryption_key):
    fill_small(dovecot, mail_user)
    settings = settings_for(db_dsn, encryption_key)
    async with running_supervisor(db_dsn, settings) as h:
        account_id = await insert_account(h.db, settings, username=mail_user.username,
                                          password=mail_user.password, port=dovecot.port)
        await h.wait_status(account_id, synced, 60, "the first cycle")
        assert_exact(server_truth(dovecot, mail_user), await mirror(db_dsn, account_id))
        status = h.status(account_id)
        assert status.lock_held and status.health == "healthy" and status.restarts == 0
        inbox = next(p for p in status.folders if p.name == "INBOX")
        assert inbox.synced == inbox.total == 40
        assert await h.db.fetchval("SELECT owner FROM accounts WHERE id = $1", account_id) == "test-host:1"

        with MailboxClient(dovecot, mail_user) as client:
            client.append("INBOX", make_message(5001, rng=random.Random(1)))
        with trio.fail_after(10):
            while len((await mirror(db_dsn, account_id)).get("INBOX", {})) < 41:
                await trio.sleep(0.1)
        assert_exact(server_truth(dovecot, mail_user), await mirror(db_dsn, account_id))


async def test_body_fetch_goes_through_the_owning_actor(dovecot, mail_user, db_dsn, encryption_key):
    fill_small(dovecot, mail_user, folders=("INBOX", "Archive"), per_folder=20)
    settings = settings_for(db_dsn, encryption_key)
    async with running_supervisor(db_dsn, settings) as h:
        account_id = await insert_account(h.db, settings, username=mail_user.username,
                                          password=mail_user.password, port=dovecot.port)
        await h.wait_status(account_id, synced, 60, "the first cycle")
        row = await h.db.fetchrow(
            """SELECT f.id AS folder_id, f.raw_name, f.uidvalidity, m.uid FROM messages m
               JOIN folders f ON f.id = m.folder_id WHERE f.name = 'Archive' ORDER BY m.uid LIMIT 1""")
        request = FetchBody(row["folder_id"], row["raw_name"], row["uidvalidity"], row["uid"], 10_000_000)
        body = await h.registry.request(account_id, request, timeout=10)
        with MailboxClient(dovecot, mail_user) as client:
            assert body == client.fetch_raw("Archive", row["uid"])
            assert "\\Seen" not in client.flags("Archive")[row["uid"]]  # BODY.PEEK never marks read
        try:
            await h.registry.request(account_id, FetchBody(row["folder_id"], row["raw_name"], row["uidvalidity"],
                                                           row["uid"], 10), timeout=10)
            raise AssertionError("a body over the limit was served")
        except MessageTooLarge as exc:
            assert exc.limit == 10 and exc.size == len(body)
        try:
            await h.registry.request(account_id, FetchBody(row["folder_id"], row["raw_name"], row["uidvalidity"],
                                                           999_999, 10_000_000), timeout=10)
            raise AssertionError("a missing message was served")
        except MessageGone:
            pass
        try:
            await h.registry.request(4242, request, timeout=1)
            raise AssertionError("an unknown account answered")
        except ActorUnavailable:
            pass


async def test_dropped_connection_restarts_the_actor_with_backoff(dovecot, mail_user, db_dsn, encryption_key):
    fill_small(dovecot, mail_user, folders=("INBOX",), per_folder=10)
    settings = settings_for(db_dsn, encryption_key)
    proxy = ImapProxy("127.0.0.1", dovecot.port)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        async with running_supervisor(db_dsn, settings) as h:
            account_id = await insert_account(h.db, settings, username=mail_user.username,
                                              password=mail_user.password, port=proxy.port)
            await h.wait_status(account_id, synced, 30, "the first cycle")
            await proxy.drop_all()
            await h.wait_status(account_id, lambda s: s.state == st.BACKOFF, 10, "a backoff after the drop")
            crashed = h.status(account_id)
            assert crashed.restarts == 1 and crashed.last_error and crashed.retry_at is not None
            assert not crashed.lock_held
            await h.wait_status(account_id, lambda s: synced(s) and s.restarts == 1 and s.lock_held, 30,
                                "the restarted actor's cycle")
            assert proxy.connections == 2
            assert h.status(account_id).health == "healthy"
        nursery.cancel_scope.cancel()


async def test_wrong_password_parks_without_a_login_storm(dovecot, mail_user, db_dsn, encryption_key):
    settings = settings_for(db_dsn, encryption_key)
    proxy = ImapProxy("127.0.0.1", dovecot.port)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        async with running_supervisor(db_dsn, settings) as h:
            account_id = await insert_account(h.db, settings, username=mail_user.username,
                                              password="not-the-password", port=proxy.port)
            await h.wait_status(account_id, lambda s: s.state == st.PARKED, 15, "the actor to park")
            await trio.sleep(4)  # many poll intervals and backoffs: nothing may retry
            assert proxy.count("LOGIN") == 1
            status = h.status(account_id)
            assert status.health == "auth_failed" and "authentication failed" in status.health_reason
            assert "not-the-password" not in repr(status.to_json())
            row = await h.db.fetchrow("SELECT health, health_reason FROM accounts WHERE id = $1", account_id)
            assert row["health"] == "auth_failed"
            assert await h.db.fetchval(
                "SELECT count(*) FROM events WHERE kind = 'account_health' AND payload->>'health' = 'auth_failed'") == 1

            token = Cipher(settings.require_keys()).encrypt(mail_user.password)
            await h.db.execute("UPDATE accounts SET password_encrypted = $2, credentials_changed_at = now() "
                               "WHERE id = $1", account_id, token)
            await h.wait_status(account_id, lambda s: synced(s) and s.health == "healthy", 15,
                                "new credentials to wake the account")
            assert proxy.count("LOGIN") == 2
        nursery.cancel_scope.cancel()


async def test_throttle_bounds_the_commands_reaching_the_server(dovecot, mail_user, db_dsn, encryption_key):
    fill_small(dovecot, mail_user, folders=("INBOX", "A", "B", "C", "D", "E"), per_folder=3)
    per_minute = 12
    settings = settings_for(db_dsn, encryption_key, MAILBRIDGE_COMMANDS_PER_MINUTE=str(per_minute))
    proxy = ImapProxy("127.0.0.1", dovecot.port)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        async with running_supervisor(db_dsn, settings) as h:
            start = trio.current_time()
            account_id = await insert_account(h.db, settings, username=mail_user.username,
                                              password=mail_user.password, port=proxy.port)
            await trio.sleep(12)
            elapsed = trio.current_time() - start
            status = h.status(account_id)
        nursery.cancel_scope.cancel()
    sent = [t for t, _, name in proxy.commands if name != "LOGOUT"]
    bucket = Throttle(per_minute)
    allowed = bucket.burst + bucket.rate * elapsed
    assert 3 <= len(sent) <= allowed + 1e-9, (len(sent), allowed, proxy.commands)
    assert status.throttle_waits > 0 and status.cycles == 0  # still throttled mid-first-cycle


async def test_accounts_added_disabled_removed_are_noticed_within_2_s(dovecot, mail_user, db_dsn, encryption_key):
    settings = settings_for(db_dsn, encryption_key)
    async with running_supervisor(db_dsn, settings, rescan_seconds=600) as h:  # only NOTIFY can be this quick
        await trio.sleep(0.3)
        account_id = await insert_account(h.db, settings, username=mail_user.username,
                                          password=mail_user.password, port=dovecot.port)
        took = await h.wait_status(account_id, lambda s: s.lock_held, 2, "the new account's actor to take its lock")
        assert took < 2
        await h.wait_status(account_id, synced, 30, "the first cycle")

        await h.db.execute("UPDATE accounts SET enabled = false WHERE id = $1", account_id)
        await h.wait_status(account_id, lambda s: s.state == st.STOPPED and s.health == "disabled", 3,
                            "the disabled account's actor to stop")
        await h.wait_for(lambda: account_id not in h.supervisor.running, 3, "the child to go")
        with trio.fail_after(5):
            while await h.advisory_lock_held(account_id):
                await trio.sleep(0.05)

        await h.db.execute("UPDATE accounts SET enabled = true WHERE id = $1", account_id)
        await h.wait_status(account_id, lambda s: s.lock_held, 3, "the re-enabled account's actor")
        await h.db.execute("DELETE FROM accounts WHERE id = $1", account_id)
        await h.wait_for(lambda: h.status(account_id) is None, 3, "the removed account to leave the registry")
        with trio.fail_after(5):
            while await h.advisory_lock_held(account_id):
                await trio.sleep(0.05)


async def test_accounts_over_the_limit_are_reported_not_run(dovecot, db_dsn, encryption_key):
    users = [dovecot.add_user() for _ in range(3)]
    settings = settings_for(db_dsn, encryption_key, MAILBRIDGE_MAX_ACCOUNTS="5")
    limited = settings_for(db_dsn, encryption_key, MAILBRIDGE_MAX_ACCOUNTS="2")
    async with running_supervisor(db_dsn, limited) as h:
        ids = [await insert_account(h.db, settings, username=u.username, password=u.password, port=dovecot.port)
               for u in users]
        await h.wait_status(ids[2], lambda s: s.state == st.STOPPED and s.health == "over_limit", 5,
                            "the newest account to be over the limit")
        await h.wait_status(ids[0], synced, 30, "the oldest account to sync")
        await h.wait_status(ids[1], synced, 30, "the second account to sync")
        assert h.supervisor.running == ids[:2]
        assert await h.db.fetchval("SELECT health FROM accounts WHERE id = $1", ids[2]) == "over_limit"


async def test_idle_brings_new_inbox_mail_and_flag_changes_within_seconds(dovecot, mail_user, db_dsn,
                                                                          encryption_key):
    fill_small(dovecot, mail_user, folders=("INBOX", "Archive"), per_folder=10)
    settings = settings_for(db_dsn, encryption_key, MAILBRIDGE_POLL_SECONDS="600")  # only IDLE can be quick
    async with running_supervisor(db_dsn, settings) as h:
        account_id = await insert_account(h.db, settings, username=mail_user.username,
                                          password=mail_user.password, port=dovecot.port)
        await h.wait_status(account_id, lambda s: s.state == st.IDLE and "IDLE" in s.step, 30, "IDLE on INBOX")
        with MailboxClient(dovecot, mail_user) as client:
            client.append("INBOX", make_message(7001, rng=random.Random(2)))
            appended = trio.current_time()
            with trio.fail_after(5):
                while await h.db.fetchval("SELECT count(*) FROM messages m JOIN folders f ON f.id = m.folder_id "
                                          "WHERE f.name = 'INBOX'") < 11:
                    await trio.sleep(0.05)
            took_new = trio.current_time() - appended
            uid = client.uids("INBOX")[0]
            client.store("INBOX", [uid], add=["\\Flagged"])
            client.expunge_uids("INBOX", [client.uids("INBOX")[1]])
        with trio.fail_after(5):
            while True:
                rows = await mirror(db_dsn, account_id)
                if len(rows["INBOX"]) == 10 and "\\Flagged" in rows["INBOX"][uid]["flags"]:
                    break
                await trio.sleep(0.05)
        assert_exact(server_truth(dovecot, mail_user), await mirror(db_dsn, account_id))
        assert took_new < 5
        assert h.status(account_id).cycles == 1  # all of it through IDLE, no second cycle


async def test_metrics_after_a_sync(dovecot, mail_user, db_dsn, encryption_key):
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    def samples() -> dict[tuple, float]:
        out = {}
        for family in text_string_to_metric_families(generate_latest().decode()):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    before = samples()
    fill_small(dovecot, mail_user, folders=("INBOX", "Archive"), per_folder=15)
    settings = settings_for(db_dsn, encryption_key)
    async with running_supervisor(db_dsn, settings) as h:
        account_id = await insert_account(h.db, settings, username=mail_user.username,
                                          password=mail_user.password, port=dovecot.port)
        await h.wait_status(account_id, synced, 30, "the first cycle")
        after = samples()
    grew = lambda key: after.get(key, 0) - before.get(key, 0)  # noqa: E731
    assert grew(("mailbridge_messages_total", (("kind", "added"),))) >= 30
    assert grew(("mailbridge_imap_commands_total", (("command", "LOGIN"),))) >= 1
    assert grew(("mailbridge_imap_commands_total", (("command", "UID FETCH"),))) >= 2
    assert grew(("mailbridge_cycle_seconds_count", ())) >= 1
    account = str(account_id)
    assert after[("mailbridge_actor_restarts_total", (("account_id", account),))] == 0
    assert ("mailbridge_throttle_waits_total", (("account_id", account),)) in after
    assert after[("mailbridge_accounts", (("health", "healthy"),))] >= 1
    lag = after[("mailbridge_folder_lag_seconds", (("account_id", account), ("folder", "Archive")))]
    assert 0 <= lag < 30


async def test_retention_window_keeps_old_mail_out_and_expires_it(dovecot, mail_user, db_dsn, encryption_key):
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc)
    with MailboxClient(dovecot, mail_user) as client:
        client.create("Archive")
        for n in range(6):
            old = n % 2 == 0
            client.append("Archive", make_message(8000 + n, rng=random.Random(n)),
                          date=now - timedelta(days=400 if old else 3))
    everything = settings_for(db_dsn, encryption_key)
    async with running_supervisor(db_dsn, everything) as h:
        account_id = await insert_account(h.db, everything, username=mail_user.username,
                                          password=mail_user.password, port=dovecot.port)
        await h.wait_status(account_id, synced, 30, "the first cycle")
    assert len((await mirror(db_dsn, account_id))["Archive"]) == 6

    windowed = settings_for(db_dsn, encryption_key, MAILBRIDGE_RETENTION_DAYS="30")
    async with running_supervisor(db_dsn, windowed) as h:
        await h.wait_status(account_id, lambda s: s.state == st.IDLE and s.cycles >= 2, 30, "two cycles")
        kept = await mirror(db_dsn, account_id)
        expired = await h.db.fetchval("SELECT payload->>'count' FROM events WHERE kind = 'messages_expired'")
    assert len(kept["Archive"]) == 3 and expired == "3"
    assert all(row["internal_date"] > now - timedelta(days=30) for row in kept["Archive"].values())


async def test_a_flood_of_body_requests_does_not_stall_the_initial_sync(dovecot, mail_user, db_dsn,
                                                                        encryption_key):
    """Requests beyond the throttle's rate take turns with sync steps (one per step) instead
    of each step waiting behind every queued request, and only a few may wait: 20 batches
    under a steady flood."""
    MaildirWriter().write(mail_user, "INBOX", corpus(400, seed=5, folder_hint="INBOX"))
    settings = settings_for(db_dsn, encryption_key, MAILBRIDGE_COMMANDS_PER_MINUTE="600",
                            MAILBRIDGE_BATCH_SIZE="20")
    answered, refused = [], []
    async with running_supervisor(db_dsn, settings) as h:
        account_id = await insert_account(h.db, settings, username=mail_user.username,
                                          password=mail_user.password, port=dovecot.port)

        async def flood() -> None:
            rng = random.Random()
            while True:
                rows = await h.db.fetch(
                    """SELECT f.id, f.raw_name, f.uidvalidity, m.uid FROM messages m JOIN folders f
                       ON f.id = m.folder_id WHERE m.account_id = $1 AND f.name = 'INBOX' LIMIT 50""", account_id)
                if not rows:
                    await trio.sleep(0.05)
                    continue
                r = rng.choice(rows)
                asked = trio.current_time()
                try:
                    await h.registry.request(account_id, FetchBody(r["id"], r["raw_name"], r["uidvalidity"],
                                                                   r["uid"], 10_000_000), timeout=20)
                    answered.append(trio.current_time() - asked)
                except (ActorUnavailable, ActorTimeout):
                    refused.append(trio.current_time())
                    await trio.sleep(0.05)

        def inbox_done(status: st.ActorStatus) -> bool:
            inbox = next((p for p in status.folders if p.name == "INBOX"), None)
            return inbox is not None and inbox.phase != "initial" and inbox.synced >= 400

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(flood)
            started = trio.current_time()
            # each step behind all 16 queued requests: ~2 s a step at 10 commands/s, 40 s in all
            await h.wait_status(account_id, inbox_done, 25, "the initial sync under the flood")
            took = trio.current_time() - started
            nursery.cancel_scope.cancel()
    assert len(answered) >= 10, (len(answered), len(refused), took)
    # the excess is refused at once, so an answered request waited a few steps, not 16
    assert refused and max(answered) < 8, (sorted(answered)[-5:], len(refused), took)
    assert_exact(server_truth(dovecot, mail_user), await mirror(db_dsn, account_id))

"""A Postgres with few connections still serves every account: `serve` opens its pool,
its lock connections and one LISTEN connection, whatever the account count, and leaves
room for other clients (real Dovecot, a private Postgres with max_connections=20)."""

from __future__ import annotations

import time

import trio

from mailbridge.aio.db import Database
from mailbridge.store.migrations import migrate
from mailbridge.testing.imapctl import MailboxClient
from mailbridge.testing.mailgen import corpus
from mailbridge.testing.postgres import running_postgres
from tests.support.actors import insert_account, settings_for
from tests.support.cli import run_cli
from tests.support.mirror import base_env
from tests.support.processes import Serve

ACCOUNTS = 40
MAX_CONNECTIONS = 20  # 17 for clients beside the 3 reserved for superusers


async def test_forty_accounts_on_a_postgres_with_twenty_connections(dovecot, encryption_key, tmp_path):
    users = [dovecot.add_user() for _ in range(ACCOUNTS)]
    for n, user in enumerate(users):
        with MailboxClient(dovecot, user) as client:
            client.append_many("INBOX", list(corpus(2, seed=n)))
    with running_postgres(tmp_path / "pg", max_connections=MAX_CONNECTIONS) as dsn:
        await migrate(dsn)
        settings = settings_for(dsn, encryption_key, MAILBRIDGE_MAX_ACCOUNTS=str(ACCOUNTS))
        env = base_env(dsn, encryption_key, tmp_path, MAILBRIDGE_MAX_ACCOUNTS=str(ACCOUNTS),
                       MAILBRIDGE_DB_POOL_SIZE="6")
        async with Database.connect(dsn, max_size=1) as db:
            for user in users:
                await insert_account(db, settings, username=user.username, password=user.password,
                                     port=dovecot.port)
            serve = Serve(env)
            try:
                serve.wait_serving(60)
                assert any("ok   connections" in line and "needs 9" in line for line in serve.out), serve.out
                started, most = time.monotonic(), 0
                while True:
                    healthy = await db.fetchval("SELECT count(*) FROM accounts WHERE health = 'healthy'")
                    most = max(most, await db.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"))
                    if healthy == ACCOUNTS:
                        break
                    assert time.monotonic() - started < 120, (healthy, serve.text()[-3000:])
                    await trio.sleep(0.2)
                assert await db.fetchval("SELECT count(*) FROM messages") == 2 * ACCOUNTS
                # serve's 9 and this test's 1, never more
                assert most <= 10, most
                # other clients still get in while serve runs
                listed = await trio.to_thread.run_sync(lambda: run_cli("accounts", "list", env=env))
                assert listed.code == 0, listed.err
                assert "too many clients" not in serve.text()
                code, _ = serve.stop()
                assert code == 0
            finally:
                serve.kill()

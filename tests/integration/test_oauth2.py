"""OAuth2 sign-in against a real Dovecot (oauth2 passdb, RFC 7662 introspection) and a
real local authorization server (authlib): AUTHENTICATE, refresh, revocation."""

from __future__ import annotations

import json

import pytest
import trio

from mailbridge.aio.db import Database
from mailbridge.aio.imap import ImapEndpoint, ImapSession
from mailbridge.credentials import Bearer
from mailbridge.errors import ImapAuthError
from mailbridge.secrets import Cipher
from mailbridge.store import oauth2 as oauth2_store
from mailbridge.testing.oauth2_server import OAuth2TestServer

from tests.support.cli import run_cli
from tests.support.oauth2 import auth_server, oauth_dovecot  # noqa: F401 (fixtures)


def endpoint(dovecot, user) -> ImapEndpoint:
    return ImapEndpoint(host="127.0.0.1", port=dovecot.port, tls="none", username=user.username)


def fresh_access_token(server: OAuth2TestServer, username: str) -> str:
    import httpx

    refresh = server.issue_refresh_token(username)
    response = httpx.post(server.token_url, data={
        "grant_type": "refresh_token", "refresh_token": refresh,
        "client_id": server.client.client_id, "client_secret": server.client.client_secret})
    response.raise_for_status()
    return response.json()["access_token"]


async def test_authenticate_with_a_live_token_and_password_users_still_log_in(oauth_dovecot, auth_server):
    user = oauth_dovecot.add_user()
    token = await trio.to_thread.run_sync(fresh_access_token, auth_server, user.username)
    async with ImapSession.open(endpoint(oauth_dovecot, user), Bearer(user.username, token)) as session:
        assert "IMAP4REV1" in session.capabilities
        await session.select("INBOX", readonly=True)
    async with ImapSession.open(endpoint(oauth_dovecot, user), user.password) as session:
        await session.select("INBOX", readonly=True)


async def test_a_refused_token_raises_auth_error_without_hanging_and_without_the_token(oauth_dovecot):
    user = oauth_dovecot.add_user()
    with trio.fail_after(30):
        with pytest.raises(ImapAuthError) as caught:
            async with ImapSession.open(endpoint(oauth_dovecot, user), Bearer(user.username, "not-a-live-token-123")):
                pass
    assert "not-a-live-token-123" not in str(caught.value)
    assert "OAUTHBEARER" in str(caught.value)


# --- a stored OAuth2 account: add, sync, revoke ------------------------------------------


@pytest.fixture
def env(db_dsn, encryption_key, tmp_path):
    return {"DATABASE_URL": db_dsn, "MAILBRIDGE_ENCRYPTION_KEY": encryption_key,
            "MAILBRIDGE_HOME": str(tmp_path / "home")}


def settings_for(db_dsn, encryption_key, tmp_path):
    from pathlib import Path

    from mailbridge.config import Settings

    return Settings(database_url=db_dsn, home=Path(tmp_path), encryption_keys=(encryption_key,),
                    api_token=None, port=None)


async def add_oauth2_account(db, settings, dovecot, server, user) -> tuple[int, str]:
    """Register the test server's client and add `user` with a new refresh token."""
    from mailbridge.accountops import add_oauth2_account as add, validate

    cipher = Cipher(settings.encryption_keys)
    if not await db.fetchval("SELECT count(*) FROM oauth2_clients WHERE name = 'test'"):
        await oauth2_store.insert_client(
            db, oauth2_store.NewOAuth2Client("test", server.token_url, server.client.client_id,
                                             server.authorize_url, "imap"),
            cipher.encrypt(server.client.client_secret))
    refresh = server.issue_refresh_token(user.username)
    new = validate({"email": f"{user.username}@example.test", "host": "127.0.0.1", "port": dovecot.port,
                    "tls": "none", "username": user.username})
    return await add(db, settings, new, "test", refresh), refresh


async def dump(db) -> str:
    rows = await db.fetch("SELECT a::text AS t FROM accounts a UNION ALL SELECT c::text FROM oauth2_clients c")
    return "\n".join(r["t"] for r in rows)


async def test_an_account_added_with_a_refresh_token_syncs_and_stores_only_ciphertext(
        oauth_dovecot, auth_server, db_dsn, encryption_key, tmp_path, env):
    user = oauth_dovecot.add_user()
    for i in range(3):
        oauth_dovecot.deliver(user, f"Subject: hello {i}\r\nFrom: a@example.test\r\n\r\nbody {i}\r\n".encode())
    settings = settings_for(db_dsn, encryption_key, tmp_path)
    async with Database.connect(db_dsn) as db:
        account_id, refresh = await add_oauth2_account(db, settings, oauth_dovecot, auth_server, user)
        before = auth_server.refreshes
        result = await trio.to_thread.run_sync(lambda: run_cli("sync", "--once", env=env, timeout=120))
        assert result.code == 0, result.err
        assert await db.fetchval(
            "SELECT count(*) FROM messages m JOIN folders f ON f.id = m.folder_id WHERE f.account_id = $1",
            account_id) == 3
        assert auth_server.refreshes == before + 1  # the stored 5 s token is within the margin
        row = await db.fetchrow("SELECT auth_kind, access_token_expires_at FROM accounts WHERE id = $1", account_id)
        assert row["auth_kind"] == "oauth2" and row["access_token_expires_at"] is not None
        stored = await dump(db)
        listed = await trio.to_thread.run_sync(lambda: run_cli("accounts", "list", "--json", env=env))
    for secret in auth_server.secrets_issued():
        for text in (result.out, result.err, stored, listed.out):
            assert secret not in text
    assert json.loads(listed.out)[0]["id"] == account_id


async def test_a_revoked_refresh_token_parks_the_account_auth_failed_after_one_refresh(
        oauth_dovecot, auth_server, db_dsn, encryption_key, tmp_path, env):
    user = oauth_dovecot.add_user()
    settings = settings_for(db_dsn, encryption_key, tmp_path)
    async with Database.connect(db_dsn) as db:
        account_id, refresh = await add_oauth2_account(db, settings, oauth_dovecot, auth_server, user)
        auth_server.revoke(refresh)
        before = auth_server.refresh_attempts
        result = await trio.to_thread.run_sync(lambda: run_cli("sync", "--once", env=env, timeout=120))
        assert result.code != 0
        assert auth_server.refresh_attempts == before + 1
        row = await db.fetchrow("SELECT health, health_reason FROM accounts WHERE id = $1", account_id)
    assert row["health"] == "auth_failed", row
    assert "invalid_grant" in row["health_reason"]
    assert refresh not in result.out + result.err


async def test_serve_signs_in_with_oauth2_mirrors_new_mail_and_prints_no_secret(
        oauth_dovecot, auth_server, db_dsn, encryption_key, tmp_path, env):
    import time

    from tests.support.processes import Serve

    user = oauth_dovecot.add_user()
    oauth_dovecot.deliver(user, b"Subject: first\r\nFrom: a@example.test\r\n\r\nx\r\n")
    settings = settings_for(db_dsn, encryption_key, tmp_path)
    async with Database.connect(db_dsn) as db:
        account_id, refresh = await add_oauth2_account(db, settings, oauth_dovecot, auth_server, user)
        before = auth_server.refreshes
        serve = Serve({**env, "MAILBRIDGE_POLL_SECONDS": "1"})
        try:
            await trio.to_thread.run_sync(serve.wait_serving)

            async def wait_for(sql: str, want: object, what: str, timeout: float = 30) -> None:
                deadline = time.monotonic() + timeout
                while (value := await db.fetchval(sql, account_id)) != want:
                    assert time.monotonic() < deadline, f"timed out waiting for {what} (last {value!r})"
                    await trio.sleep(0.1)

            count = ("SELECT count(*) FROM messages m JOIN folders f ON f.id = m.folder_id "
                     "WHERE f.account_id = $1")
            await wait_for(count, 1, "the initial sync")
            oauth_dovecot.deliver(user, b"Subject: second\r\nFrom: a@example.test\r\n\r\ny\r\n")
            await wait_for(count, 2, "new mail")
            await wait_for("SELECT health FROM accounts WHERE id = $1", "healthy", "healthy")
            assert auth_server.refreshes >= before + 1
            code, _ = await trio.to_thread.run_sync(serve.stop)
            assert code == 0, serve.text()
        finally:
            serve.kill()
    text = serve.text()
    assert "Traceback" not in text
    for secret in auth_server.secrets_issued():
        assert secret not in text


async def test_keys_rotate_re_encrypts_the_client_secret_and_the_tokens(
        oauth_dovecot, auth_server, db_dsn, encryption_key, tmp_path, env):
    from mailbridge.secrets import generate_key

    user = oauth_dovecot.add_user()
    settings = settings_for(db_dsn, encryption_key, tmp_path)
    async with Database.connect(db_dsn) as db:
        account_id, refresh = await add_oauth2_account(db, settings, oauth_dovecot, auth_server, user)
        new_key = generate_key()
        result = await trio.to_thread.run_sync(lambda: run_cli(
            "keys", "rotate", env={**env, "MAILBRIDGE_ENCRYPTION_KEY": f"{new_key},{encryption_key}"}))
        assert result.code == 0, result.err
        only_new = Cipher((new_key,))
        row = await db.fetchrow(
            "SELECT a.refresh_token_encrypted, a.access_token_encrypted, c.client_secret_encrypted "
            "FROM accounts a JOIN oauth2_clients c ON c.id = a.oauth2_client WHERE a.id = $1", account_id)
    assert only_new.decrypt(row["refresh_token_encrypted"]) == refresh
    assert only_new.decrypt(row["client_secret_encrypted"]) == auth_server.client.client_secret
    assert only_new.decrypt(row["access_token_encrypted"])
    # and the account still signs in with only the new key
    result = await trio.to_thread.run_sync(lambda: run_cli(
        "sync", "--once", env={**env, "MAILBRIDGE_ENCRYPTION_KEY": new_key}, timeout=120))
    assert result.code == 0, result.err


async def test_a_refused_access_token_gets_exactly_one_refresh_and_then_signs_in(
        oauth_dovecot, auth_server, db_dsn, encryption_key, tmp_path, env):
    user = oauth_dovecot.add_user()
    settings = settings_for(db_dsn, encryption_key, tmp_path)
    async with Database.connect(db_dsn) as db:
        account_id, refresh = await add_oauth2_account(db, settings, oauth_dovecot, auth_server, user)
        # a stored token the server no longer accepts, though it looks good for an hour
        await db.execute("UPDATE accounts SET access_token_encrypted = $2, "
                         "access_token_expires_at = now() + interval '1 hour' WHERE id = $1",
                         account_id, Cipher((encryption_key,)).encrypt("stale-token-xyz"))
        before = auth_server.refresh_attempts
        result = await trio.to_thread.run_sync(lambda: run_cli("sync", "--once", env=env, timeout=120))
        assert result.code == 0, result.err
        assert auth_server.refresh_attempts == before + 1
        assert await db.fetchval("SELECT health FROM accounts WHERE id = $1", account_id) == "healthy"
    assert "stale-token-xyz" not in result.out + result.err


async def test_cli_oauth2_add_list_and_accounts_add_with_a_refresh_token(
        oauth_dovecot, auth_server, db_dsn, env):
    user = oauth_dovecot.add_user()
    secret = auth_server.client.client_secret

    def cli(*args, input=None):
        return run_cli(*args, env=env, input=input, timeout=120)

    added = await trio.to_thread.run_sync(lambda: cli(
        "oauth2", "add", "local", "--token-url", auth_server.token_url, "--client-id",
        auth_server.client.client_id, "--scope", "imap", input=secret + "\n"))
    assert added.code == 0, added.err
    listed = await trio.to_thread.run_sync(lambda: cli("oauth2", "list", "--json"))
    assert listed.code == 0 and json.loads(listed.out)[0]["name"] == "local"
    assert secret not in listed.out
    refresh = auth_server.issue_refresh_token(user.username)
    account = await trio.to_thread.run_sync(lambda: cli(
        "accounts", "add", "--email", f"{user.username}@example.test", "--host", "127.0.0.1",
        "--port", str(oauth_dovecot.port), "--tls", "none", "--username", user.username,
        "--oauth2", "local", "--refresh-token-stdin", input=refresh + "\n"))
    assert account.code == 0, account.err
    account_id = int(account.last_line)
    tested = await trio.to_thread.run_sync(lambda: cli("accounts", "test", str(account_id)))
    assert tested.code == 0 and "login ok" in tested.out, tested.err
    auth_server.revoke(refresh)
    again = await trio.to_thread.run_sync(lambda: cli(
        "accounts", "add", "--email", f"other-{user.username}@example.test", "--host", "127.0.0.1",
        "--port", str(oauth_dovecot.port), "--tls", "none", "--username", user.username,
        "--oauth2", "local", "--refresh-token-stdin", input=refresh + "\n"))
    assert again.code == 1 and "invalid_grant" in again.err and "Traceback" not in again.err
    for text in (added.out, added.err, account.out, account.err, tested.out, again.err):
        assert secret not in text and refresh not in text


async def test_serve_signs_in_again_before_the_access_token_expires_without_an_error(
        oauth_dovecot, auth_server, db_dsn, encryption_key, tmp_path, env):
    """The module's server issues 5 s access tokens: a ~25 s `serve` renews its session
    (a refresh each time) at step boundaries, keeps mirroring, and stays healthy."""
    import time

    from tests.support.processes import Serve

    user = oauth_dovecot.add_user()
    oauth_dovecot.deliver(user, b"Subject: first\r\nFrom: a@example.test\r\n\r\nx\r\n")
    settings = settings_for(db_dsn, encryption_key, tmp_path)
    count = "SELECT count(*) FROM messages m JOIN folders f ON f.id = m.folder_id WHERE f.account_id = $1"
    async with Database.connect(db_dsn) as db:
        account_id, refresh = await add_oauth2_account(db, settings, oauth_dovecot, auth_server, user)
        before = auth_server.refreshes
        serve = Serve({**env, "MAILBRIDGE_POLL_SECONDS": "30"})
        try:
            await trio.to_thread.run_sync(serve.wait_serving)
            started, healths, delivered = time.monotonic(), set(), 1
            while time.monotonic() - started < 25:
                if time.monotonic() - started > 8 * delivered and delivered < 3:
                    delivered += 1
                    oauth_dovecot.deliver(user, f"Subject: n{delivered}\r\nFrom: a@x.test\r\n\r\nz\r\n".encode())
                health = await db.fetchval("SELECT health FROM accounts WHERE id = $1", account_id)
                healths.add(health)
                await trio.sleep(0.2)
            deadline = time.monotonic() + 15
            while await db.fetchval(count, account_id) != 3:
                assert time.monotonic() < deadline, "new mail was not mirrored"
                await trio.sleep(0.2)
            assert await db.fetchval("SELECT health FROM accounts WHERE id = $1", account_id) == "healthy"
            assert auth_server.refreshes >= before + 2
            code, _ = await trio.to_thread.run_sync(serve.stop)
            assert code == 0, serve.text()
        finally:
            serve.kill()
    assert healths <= {"healthy", "starting", "syncing", None}, healths
    assert "healthy" in healths
    text = serve.text()
    assert "Traceback" not in text and "auth_failed" not in text
    assert "signing in again" in text or "about to expire" in text
    for secret in auth_server.secrets_issued():
        assert secret not in text

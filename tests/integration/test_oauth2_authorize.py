"""`mailbridge accounts authorize` (authorization code + PKCE, loopback redirect) and
`accounts update --refresh-token-stdin`, run as subprocesses against a real local
authorization server (authlib, auto-approving /authorize) and a real Dovecot whose oauth2
passdb validates the tokens by introspection.  The test plays the browser with httpx."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import trio

from mailbridge.aio.db import Database
from mailbridge.testing.oauth2_server import OAuth2TestServer
from tests.support.cli import REPO, Result, run_cli
from tests.support.oauth2 import auth_server, oauth_dovecot  # noqa: F401 (fixtures)


@pytest.fixture
def env(db_dsn, encryption_key, tmp_path):
    return {"DATABASE_URL": db_dsn, "MAILBRIDGE_ENCRYPTION_KEY": encryption_key,
            "MAILBRIDGE_HOME": str(tmp_path / "home")}


@pytest.fixture
def client(env, auth_server):
    """The test server's client registered as "local" (its secret on stdin)."""
    added = run_cli("oauth2", "add", "local", "--token-url", auth_server.token_url, "--authorize-url",
                    auth_server.authorize_url, "--client-id", auth_server.client.client_id, "--scope", "imap",
                    env=env, input=auth_server.client.client_secret + "\n")
    assert added.code == 0, added.err
    return "local"


class Authorize:
    """`mailbridge accounts authorize ...` running; its output read as it comes."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        full_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MAILBRIDGE_ENCRYPTION_KEY")}
        full_env.update(env)
        self.proc = subprocess.Popen([sys.executable, "-m", "mailbridge", "accounts", "authorize", *args],
                                     env=full_env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def url(self, timeout: float = 30) -> str:
        """The authorization URL it printed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if line.startswith("http"):
                    return line.strip()
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        self.proc.kill()
        raise AssertionError(f"no URL printed: {''.join(self.lines)} {self.proc.stderr.read() if self.proc.stderr else ''}")

    def result(self, timeout: float = 60) -> Result:
        try:
            self.proc.wait(timeout)
        finally:
            self.proc.kill()
        self._reader.join(5)
        assert self.proc.stderr is not None
        return Result(self.proc.returncode, "".join(self.lines), self.proc.stderr.read())


def account_args(dovecot, user) -> list[str]:
    return ["--email", f"{user.username}@example.test", "--host", "127.0.0.1", "--port", str(dovecot.port),
            "--tls", "none", "--username", user.username]


def browse(url: str) -> httpx.Response:
    """What a browser does with the URL: the auto-approving /authorize redirects to the
    loopback listener, which answers the page."""
    return httpx.get(url, follow_redirects=True, timeout=30)


def redirect_uri_of(url: str) -> tuple[str, str]:
    query = parse_qs(urlsplit(url).query)
    return query["redirect_uri"][0], query["state"][0]


async def count_messages(db_dsn: str, account_id: int) -> int:
    async with Database.connect(db_dsn, max_size=1) as db:
        return int(await db.fetchval(
            "SELECT count(*) FROM messages m JOIN folders f ON f.id = m.folder_id WHERE f.account_id = $1",
            account_id))


async def health(db_dsn: str, account_id: int) -> str:
    async with Database.connect(db_dsn, max_size=1) as db:
        return str(await db.fetchval("SELECT health FROM accounts WHERE id = $1", account_id))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def revoke_all(server: OAuth2TestServer) -> None:
    for token in server.secrets_issued():
        server.revoke(token)


async def test_authorize_adds_an_account_that_syncs_and_prints_no_secret(
        oauth_dovecot, auth_server, env, client, db_dsn):
    user = oauth_dovecot.add_user()
    for i in range(2):
        oauth_dovecot.deliver(user, f"Subject: code {i}\r\nFrom: a@example.test\r\n\r\nx\r\n".encode())
    port = free_port()
    run = Authorize(env, "--oauth2", client, *account_args(oauth_dovecot, user), "--redirect-port", str(port))
    url = await trio.to_thread.run_sync(run.url)
    query = parse_qs(urlsplit(url).query)
    assert query["redirect_uri"] == [f"http://127.0.0.1:{port}/"]
    assert url.startswith(auth_server.authorize_url + "?")
    assert query["response_type"] == ["code"] and query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43 and query["login_hint"] == [user.username]
    assert query["redirect_uri"][0].startswith("http://127.0.0.1:") and query["scope"] == ["imap"]
    page = await trio.to_thread.run_sync(browse, url)
    assert page.status_code == 200 and "signed in" in page.text, page.text
    code = parse_qs(urlsplit(page.history[-1].headers["location"]).query)["code"][0]
    result = await trio.to_thread.run_sync(run.result)
    assert result.code == 0, result.err
    assert "sign-in ok; added account" in result.out
    account_id = int(result.last_line)

    synced = await trio.to_thread.run_sync(lambda: run_cli("sync", "--once", env=env, timeout=120))
    assert synced.code == 0, synced.err
    assert await count_messages(db_dsn, account_id) == 2
    listed = await trio.to_thread.run_sync(lambda: run_cli("accounts", "list", "--json", env=env))
    assert '"auth_kind": "oauth2"' in listed.out and '"oauth2_client": "local"' in listed.out
    for text in (result.out, result.err, synced.out, synced.err, listed.out, page.text):
        assert code not in text
        for secret in auth_server.secrets_issued():
            assert secret not in text


async def test_a_revoked_account_is_fixed_by_update_or_by_authorize_again(
        oauth_dovecot, auth_server, env, client, db_dsn):
    user = oauth_dovecot.add_user()
    oauth_dovecot.deliver(user, b"Subject: one\r\nFrom: a@example.test\r\n\r\nx\r\n")
    refresh = auth_server.issue_refresh_token(user.username)
    added = await trio.to_thread.run_sync(lambda: run_cli(
        "accounts", "add", *account_args(oauth_dovecot, user), "--oauth2", client, "--refresh-token-stdin",
        env=env, input=refresh + "\n", timeout=120))
    assert added.code == 0, added.err
    account_id = int(added.last_line)
    outputs = [added.out, added.err]

    async def revoke_and_fail() -> None:
        revoke_all(auth_server)
        failed = await trio.to_thread.run_sync(lambda: run_cli("sync", "--once", env=env, timeout=120))
        assert failed.code != 0
        assert await health(db_dsn, account_id) == "auth_failed"
        outputs.extend((failed.out, failed.err))

    async def sync_ok(expect: int) -> None:
        synced = await trio.to_thread.run_sync(lambda: run_cli("sync", "--once", env=env, timeout=120))
        assert synced.code == 0, synced.err
        assert await health(db_dsn, account_id) == "healthy"
        assert await count_messages(db_dsn, account_id) == expect
        outputs.extend((synced.out, synced.err))

    # 1. `accounts update ID --refresh-token-stdin`
    await revoke_and_fail()
    stale = await trio.to_thread.run_sync(lambda: run_cli(
        "accounts", "update", str(account_id), "--refresh-token-stdin", env=env, input=refresh + "\n"))
    assert stale.code == 1 and "invalid_grant" in stale.err and "Traceback" not in stale.err, stale
    fresh = auth_server.issue_refresh_token(user.username)
    updated = await trio.to_thread.run_sync(lambda: run_cli(
        "accounts", "update", str(account_id), "--refresh-token-stdin", env=env, input=fresh + "\n"))
    assert updated.code == 0, updated.err
    outputs += [stale.out, stale.err, updated.out, updated.err]
    await sync_ok(1)

    # 2. `accounts authorize` for the address of an existing account (no --host needed)
    await revoke_and_fail()
    oauth_dovecot.deliver(user, b"Subject: two\r\nFrom: a@example.test\r\n\r\ny\r\n")
    run = Authorize(env, "--oauth2", client, "--email", f"{user.username}@example.test")
    url = await trio.to_thread.run_sync(run.url)
    assert parse_qs(urlsplit(url).query)["login_hint"] == [user.username]
    page = await trio.to_thread.run_sync(browse, url)
    assert page.status_code == 200, page.text
    result = await trio.to_thread.run_sync(run.result)
    assert result.code == 0, result.err
    assert int(result.last_line) == account_id and "new tokens" in result.out
    outputs += [result.out, result.err]
    await sync_ok(2)

    # 3. back to a password: `accounts update ID --password-stdin` forgets the tokens
    switched = await trio.to_thread.run_sync(lambda: run_cli(
        "accounts", "update", str(account_id), "--password-stdin", env=env, input=user.password + "\n"))
    assert switched.code == 0, switched.err
    async with Database.connect(db_dsn, max_size=1) as db:
        row = await db.fetchrow("SELECT auth_kind, oauth2_client, refresh_token_encrypted, access_token_encrypted "
                                "FROM accounts WHERE id = $1", account_id)
    assert dict(row) == {"auth_kind": "password", "oauth2_client": None, "refresh_token_encrypted": None,
                         "access_token_encrypted": None}
    shown = await trio.to_thread.run_sync(lambda: run_cli("accounts", "show", str(account_id), env=env))
    assert "sign-in  password" in shown.out, shown
    await sync_ok(2)
    for text in outputs:
        for secret in auth_server.secrets_issued():
            assert secret not in text


async def test_a_wrong_state_a_refusal_and_a_timeout_end_clearly_and_store_nothing(
        oauth_dovecot, auth_server, env, client, db_dsn):
    user = oauth_dovecot.add_user()
    args = ["--oauth2", client, *account_args(oauth_dovecot, user)]

    # a wrong state (after a stray request, which is answered 404 and does not end the wait)
    run = Authorize(env, *args)
    redirect, state = redirect_uri_of(await trio.to_thread.run_sync(run.url))
    stray = await trio.to_thread.run_sync(lambda: httpx.get(redirect + "favicon.ico"))
    assert stray.status_code == 404
    bare = await trio.to_thread.run_sync(lambda: httpx.get(redirect))
    assert bare.status_code == 404 and run.proc.poll() is None
    forged = await trio.to_thread.run_sync(lambda: httpx.get(redirect, params={"code": "abc", "state": "other"}))
    assert forged.status_code == 400 and "state does not match" in forged.text
    result = await trio.to_thread.run_sync(run.result)
    assert result.code == 1 and "state does not match" in result.err and "Traceback" not in result.err, result

    # the user says no
    run = Authorize(env, *args)
    redirect, state = redirect_uri_of(await trio.to_thread.run_sync(run.url))
    refused = await trio.to_thread.run_sync(lambda: httpx.get(redirect, params={
        "error": "access_denied", "error_description": "The user said no", "state": state}))
    assert refused.status_code == 400
    result = await trio.to_thread.run_sync(run.result)
    assert result.code == 1 and "refused the sign-in: access_denied (The user said no)" in result.err, result

    # nobody comes back
    started = time.monotonic()
    run = Authorize(env, *args, "--timeout", "2", "--redirect-host", "localhost")
    assert redirect_uri_of(await trio.to_thread.run_sync(run.url))[0].startswith("http://localhost:")
    result = await trio.to_thread.run_sync(run.result)
    assert result.code == 1 and "no sign-in within 2 s" in result.err, result
    assert time.monotonic() - started < 30

    # an unknown client, and a new address without --host: said before any listening
    unknown = await trio.to_thread.run_sync(lambda: run_cli(
        "accounts", "authorize", "--oauth2", "nope", *account_args(oauth_dovecot, user), env=env))
    assert unknown.code == 1 and "no OAuth2 client named 'nope'" in unknown.err, unknown
    hostless = await trio.to_thread.run_sync(lambda: run_cli(
        "accounts", "authorize", "--oauth2", client, "--email", "nobody@example.test", env=env))
    assert hostless.code == 2 and "give --host" in hostless.err, hostless
    assert "http" not in unknown.out + hostless.out

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = await trio.to_thread.run_sync(lambda: run_cli(
            *["accounts", "authorize", *args, "--redirect-port", str(taken.getsockname()[1])], env=env))
    assert busy.code == 1 and "cannot listen on 127.0.0.1:" in busy.err and "--redirect-port" in busy.err, busy

    listed = await trio.to_thread.run_sync(lambda: run_cli("accounts", "list", "--json", env=env))
    assert listed.out.strip() == "[]", listed

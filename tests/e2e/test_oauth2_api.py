"""OAuth2 over the HTTP API end to end: `GET|POST /oauth2/clients`, `POST /accounts` and
`PATCH /accounts/{id}` with `"oauth2"`, against a real Dovecot whose oauth2 passdb asks
a real local authorization server (authlib) by RFC 7662 introspection, with real actors.
No secret (client secret, refresh or access token) in any answer or captured log."""

from __future__ import annotations

import logging

import pytest
import trio

from mailbridge.testing.oauth2_server import OAuth2TestServer
from tests.e2e.support import api_settings, running_api, wait_synced
from tests.support.cli import run_cli
from tests.support.oauth2 import auth_server, oauth_dovecot  # noqa: F401 (fixtures)


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.DEBUG, logger="mailbridge")
    caplog.set_level(logging.DEBUG, logger="actors")
    caplog.set_level(logging.INFO)
    return caplog


def client_body(server: OAuth2TestServer, name: str = "local") -> dict:
    return {"name": name, "token_url": server.token_url, "authorize_url": server.authorize_url,
            "client_id": server.client.client_id, "client_secret": server.client.client_secret, "scopes": "imap"}


def account_body(dovecot, user, **extra) -> dict:
    return {"email": f"{user.username}@example.test", "host": "127.0.0.1", "port": dovecot.port, "tls": "none",
            "username": user.username, **extra}


def assert_no_secret(server: OAuth2TestServer, *texts: str) -> None:
    for secret in server.secrets_issued():
        for text in texts:
            assert secret not in text


async def test_oauth2_clients_are_listed_and_registered_with_the_command_lines_checks(
        db_dsn, encryption_key, auth_server, logs):
    s = api_settings(db_dsn, encryption_key)
    seen: list[str] = []
    async with running_api(db_dsn, s) as api:
        http = api.http
        assert (await http.get("/oauth2/clients", token=None)).status == 401
        assert (await http.ok("GET", "/oauth2/clients")) == {"clients": []}

        made = await http.ok("POST", "/oauth2/clients", 201, json=client_body(auth_server))
        assert {k: made[k] for k in ("name", "token_url", "authorize_url", "client_id", "scopes")} == {
            "name": "local", "token_url": auth_server.token_url, "authorize_url": auth_server.authorize_url,
            "client_id": auth_server.client.client_id, "scopes": "imap"}
        assert "client_secret" not in made and isinstance(made["id"], int)
        google = await http.ok("POST", "/oauth2/clients", 201, json={
            "name": "g", "client_id": "123.apps.googleusercontent.com", "preset": "google"})
        assert google["token_url"] == "https://oauth2.googleapis.com/token"
        assert google["authorize_url"].startswith("https://accounts.google.com/")
        assert google["scopes"] == "https://mail.google.com/"

        dup = await http.request("POST", "/oauth2/clients", json=client_body(auth_server))
        assert dup.status == 409 and dup.json()["error"]["code"] == "already_exists", dup
        assert "local" in dup.json()["error"]["message"]

        bad = await http.request("POST", "/oauth2/clients", json={
            "name": " ", "client_id": "x", "token_url": "ftp://example.test/token", "scopes": 'a "b"',
            "preset": "yahoo", "bogus": 1})
        assert bad.status == 422, bad
        fields = bad.json()["error"]["fields"]
        assert {"name", "token_url", "scopes", "preset", "bogus"} <= set(fields), fields
        assert fields["token_url"] == "must be an https:// (or http://) URL"
        missing = await http.request("POST", "/oauth2/clients", json={"name": "n", "client_id": "c"})
        assert missing.status == 422 and "token_url" in missing.json()["error"]["fields"], missing
        assert (await http.request("POST", "/oauth2/clients", body=b"[1]",
                                   headers={"Content-Type": "application/json"})).status == 400

        listed = await http.ok("GET", "/oauth2/clients")
        assert [c["name"] for c in listed["clients"]] == ["g", "local"]
        seen += [repr(made), repr(dup), repr(listed)]
        spec = await http.ok("GET", "/openapi.json")
        assert {"get", "post"} <= set(spec["paths"]["/oauth2/clients"])
        assert "auth_kind" in spec["components"]["schemas"]["Account"]["properties"]

    # the command line says the same of the same mistake (one validation)
    env = {"DATABASE_URL": db_dsn, "MAILBRIDGE_ENCRYPTION_KEY": encryption_key}
    cli = await trio.to_thread.run_sync(lambda: run_cli(
        "oauth2", "add", "x", "--token-url", "ftp://example.test/token", "--client-id", "c", env=env, input=""))
    assert cli.code == 1 and "token_url: must be an https:// (or http://) URL" in cli.err, cli
    cli = await trio.to_thread.run_sync(lambda: run_cli(
        "oauth2", "add", "local", "--token-url", auth_server.token_url, "--client-id", "c", env=env, input=""))
    assert cli.code == 1 and "already exists" in cli.err, cli
    assert_no_secret(auth_server, *seen, logs.text)


async def test_an_account_posted_with_a_refresh_token_syncs_and_nothing_secret_shows(
        db_dsn, encryption_key, auth_server, oauth_dovecot, logs):
    user = oauth_dovecot.add_user()
    for i in range(3):
        oauth_dovecot.deliver(user, f"Subject: oauth {i}\r\nFrom: a@example.test\r\n\r\nbody {i}\r\n".encode())
    s = api_settings(db_dsn, encryption_key)
    seen: list[str] = []
    async with running_api(db_dsn, s) as api:
        http = api.http
        await http.ok("POST", "/oauth2/clients", 201, json=client_body(auth_server))
        refresh = auth_server.issue_refresh_token(user.username)

        both = await http.request("POST", "/accounts", json=account_body(
            oauth_dovecot, user, password="x", oauth2={"client": "local", "refresh_token": refresh}))
        assert both.status == 422 and "oauth2" in both.json()["error"]["fields"], both
        neither = await http.request("POST", "/accounts", json=account_body(oauth_dovecot, user))
        assert neither.status == 422 and "password" in neither.json()["error"]["fields"], neither
        unknown = await http.request("POST", "/accounts", json=account_body(
            oauth_dovecot, user, oauth2={"client": "nope", "refresh_token": refresh}))
        assert unknown.status == 422, unknown
        assert "'nope'" in unknown.json()["error"]["fields"]["oauth2.client"]
        no_token = await http.request("POST", "/accounts", json=account_body(
            oauth_dovecot, user, oauth2={"client": "local"}))
        assert no_token.status == 422 and "oauth2.refresh_token" in no_token.json()["error"]["fields"], no_token
        dead = auth_server.issue_refresh_token(user.username)
        auth_server.revoke(dead)
        revoked = await http.request("POST", "/accounts", json=account_body(
            oauth_dovecot, user, oauth2={"client": "local", "refresh_token": dead}))
        assert revoked.status == 422, revoked
        assert "invalid_grant" in revoked.json()["error"]["fields"]["oauth2.refresh_token"]
        assert (await http.ok("GET", "/accounts"))["accounts"] == []

        made = await http.ok("POST", "/accounts", 201, json=account_body(
            oauth_dovecot, user, oauth2={"client": "local", "refresh_token": refresh}))
        assert made["auth_kind"] == "oauth2" and made["oauth2_client"] == "local", made
        actor = await wait_synced(api, made["id"], timeout=60)
        assert actor["health"] == "healthy", actor
        messages = (await http.ok("GET", f"/accounts/{made['id']}/messages"))["messages"]
        assert sorted(m["subject"] for m in messages) == ["oauth 0", "oauth 1", "oauth 2"]

        # a password account beside it says so
        other = oauth_dovecot.add_user()
        plain = await http.ok("POST", "/accounts", 201, json=account_body(oauth_dovecot, other,
                                                                         password=other.password))
        assert plain["auth_kind"] == "password" and plain["oauth2_client"] is None
        listed = await http.ok("GET", "/accounts")
        assert {a["id"]: a["auth_kind"] for a in listed["accounts"]} == {made["id"]: "oauth2",
                                                                        plain["id"]: "password"}
        one = await http.ok("GET", f"/accounts/{made['id']}")
        seen += [repr(r) for r in (both, neither, unknown, no_token, revoked, made, listed, one)]
        seen.append(repr(await http.ok("GET", "/actors")))
    assert_no_secret(auth_server, *seen, logs.text)


async def test_patch_with_a_new_refresh_token_brings_an_auth_failed_account_back(
        db_dsn, encryption_key, auth_server, oauth_dovecot, logs):
    user = oauth_dovecot.add_user()
    oauth_dovecot.deliver(user, b"Subject: before\r\nFrom: a@example.test\r\n\r\nx\r\n")
    s = api_settings(db_dsn, encryption_key)
    seen: list[str] = []
    async with running_api(db_dsn, s) as api:
        http = api.http
        await http.ok("POST", "/oauth2/clients", 201, json=client_body(auth_server))
        refresh = auth_server.issue_refresh_token(user.username)
        made = await http.ok("POST", "/accounts", 201, json=account_body(
            oauth_dovecot, user, oauth2={"client": "local", "refresh_token": refresh}))
        account_id = made["id"]
        await wait_synced(api, account_id)

        # the user revokes mailbridge's access: the next sign-in's refresh parks the account
        auth_server.revoke(refresh)
        with trio.fail_after(40):
            while (account := await http.ok("GET", f"/accounts/{account_id}"))["health"] != "auth_failed":
                await trio.sleep(0.2)
        assert "invalid_grant" in account["health_reason"]

        moved = await http.request("PATCH", f"/accounts/{account_id}", json={"host": "localhost"})
        assert moved.status == 422 and "oauth2" in moved.json()["error"]["fields"], moved
        wrong = await http.request("PATCH", f"/accounts/{account_id}",
                                   json={"oauth2": {"refresh_token": refresh}})
        assert wrong.status == 422 and "invalid_grant" in wrong.json()["error"]["fields"]["oauth2.refresh_token"]

        fresh = auth_server.issue_refresh_token(user.username)
        fixed = await http.ok("PATCH", f"/accounts/{account_id}", json={"oauth2": {"refresh_token": fresh}})
        assert fixed["credentials_changed_at"] > account["credentials_changed_at"]
        assert fixed["auth_kind"] == "oauth2" and fixed["oauth2_client"] == "local"
        oauth_dovecot.deliver(user, b"Subject: after\r\nFrom: a@example.test\r\n\r\ny\r\n")
        with trio.fail_after(40):
            while True:
                account = await http.ok("GET", f"/accounts/{account_id}")
                messages = (await http.ok("GET", f"/accounts/{account_id}/messages"))["messages"]
                if account["health"] == "healthy" and len(messages) == 2:
                    break
                await trio.sleep(0.2)
        # and back to a password (the tokens forgotten)
        plain = await http.ok("PATCH", f"/accounts/{account_id}", json={"password": user.password})
        assert plain["auth_kind"] == "password" and plain["oauth2_client"] is None
        assert await api.harness.db.fetchval("SELECT refresh_token_encrypted FROM accounts WHERE id = $1",
                                             account_id) is None
        with trio.fail_after(40):
            while (await http.ok("GET", f"/accounts/{account_id}"))["credentials_changed_at"] <= \
                    fixed["credentials_changed_at"]:
                await trio.sleep(0.2)
        seen += [repr(r) for r in (made, moved, wrong, fixed, account, plain)]
    assert_no_secret(auth_server, *seen, logs.text)

"""`mailbridge accounts …` against a real Dovecot and Postgres, as a user runs it."""

from __future__ import annotations

import json

import pytest

from mailbridge.aio.db import Database

from tests.support.cli import run_cli


@pytest.fixture
def env(db_dsn, encryption_key, tmp_path):
    return {"DATABASE_URL": db_dsn, "MAILBRIDGE_ENCRYPTION_KEY": encryption_key,
            "MAILBRIDGE_HOME": str(tmp_path / "home")}


def add_args(dovecot, user, *extra):
    return ("accounts", "add", "--email", f"{user.username}@example.test", "--host", "127.0.0.1",
            "--port", str(dovecot.port), "--tls", "none", "--username", user.username,
            "--password-stdin", *extra)


async def dump_database(dsn: str) -> str:
    """Every row of every table, as text."""
    async with Database.connect(dsn) as db:
        tables = await db.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        out = []
        for t in tables:
            rows = await db.fetch(f'SELECT t::text AS row, encode(convert_to(t::text, \'UTF8\'), \'escape\') AS raw FROM "{t["tablename"]}" t')
            out.extend(r["row"] for r in rows)
        return "\n".join(out)


async def test_add_right_password_saves_it_encrypted_and_nowhere_in_clear(env, dovecot, mail_user, db_dsn):
    result = run_cli(*add_args(dovecot, mail_user), env=env, input=mail_user.password + "\n")
    assert result.code == 0, result.err
    account_id = int(result.last_line)
    listed = run_cli("accounts", "list", "--json", env=env)
    assert listed.code == 0
    accounts = json.loads(listed.out)
    assert [a["id"] for a in accounts] == [account_id]
    assert accounts[0]["imap_username"] == mail_user.username
    assert not [k for a in accounts for k in a if "password" in k.lower()]  # auth_kind may say "password"
    secret = mail_user.password
    for text in (result.out, result.err, listed.out, listed.err, await dump_database(db_dsn)):
        assert secret not in text
    async with Database.connect(db_dsn) as db:
        stored = bytes(await db.fetchval("SELECT password_encrypted FROM accounts"))
    assert secret.encode() not in stored
    tested = run_cli("accounts", "test", str(account_id), env=env)
    assert tested.code == 0 and "login ok" in tested.out


async def test_add_wrong_password_exits_1_and_saves_nothing(env, dovecot, mail_user, db_dsn):
    result = run_cli(*add_args(dovecot, mail_user), env=env, input="not-the-password\n")
    assert result.code == 1
    assert "authentication failed" in result.err
    assert "Traceback" not in result.err and "not-the-password" not in result.err + result.out
    assert len(result.err.strip().splitlines()) == 1
    async with Database.connect(db_dsn) as db:
        assert await db.fetchval("SELECT count(*) FROM accounts") == 0


@pytest.mark.parametrize("case, args, expect", [
    ("unknown host", ("--host", "no-such-host.invalid", "--tls", "tls", "--port", "993"), "unknown host"),
    ("refused port", ("--host", "127.0.0.1", "--tls", "none", "--port", "1"), "refused"),
    ("tls on a plain port", ("--host", "127.0.0.1", "--tls", "tls", "--port", "PLAIN"), "TLS handshake"),
    ("untrusted certificate", ("--host", "127.0.0.1", "--tls", "tls", "--port", "TLS"), "not trusted"),
])
async def test_add_connection_problems_give_one_clear_line(env, dovecot, mail_user, db_dsn, case, args, expect):
    args = tuple(str(dovecot.port) if a == "PLAIN" else str(dovecot.tls_port) if a == "TLS" else a for a in args)
    result = run_cli("accounts", "add", "--email", "x@example.test", "--username", mail_user.username,
                     "--password-stdin", *args, env=env, input=mail_user.password + "\n")
    assert result.code == 1, case
    assert expect in result.err, result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
    async with Database.connect(db_dsn) as db:
        assert await db.fetchval("SELECT count(*) FROM accounts") == 0


async def test_starttls_and_implicit_tls_with_a_trusted_ca(env, dovecot, mail_user):
    env = dict(env, SSL_CERT_FILE=str(dovecot.ca_cert_path))
    for tls, port in (("starttls", dovecot.port), ("tls", dovecot.tls_port)):
        result = run_cli("accounts", "add", "--email", f"{tls}@example.test", "--host", "localhost",
                         "--port", str(port), "--tls", tls, "--username", mail_user.username,
                         "--password-stdin", env=env, input=mail_user.password + "\n")
        assert result.code == 0, result.err


async def test_invalid_fields_and_limit(env, dovecot, mail_user):
    bad = run_cli("accounts", "add", "--email", "not-an-email", "--host", "127.0.0.1", "--password-stdin",
                  env=env, input="x\n")
    assert bad.code == 1 and "email" in bad.err
    limited = dict(env, MAILBRIDGE_MAX_ACCOUNTS="1")
    assert run_cli(*add_args(dovecot, mail_user), env=limited, input=mail_user.password + "\n").code == 0
    other = dovecot.add_user()
    over = run_cli(*add_args(dovecot, other), env=limited, input=other.password + "\n")
    assert over.code == 1 and "MAILBRIDGE_MAX_ACCOUNTS=1" in over.err


async def test_remove_and_unknown_id(env, dovecot, mail_user):
    account_id = run_cli(*add_args(dovecot, mail_user), env=env, input=mail_user.password + "\n").last_line
    assert run_cli("accounts", "remove", account_id, env=env).code == 0
    gone = run_cli("accounts", "remove", account_id, env=env)
    assert gone.code == 1 and f"no account with id {account_id}" in gone.err
    assert json.loads(run_cli("accounts", "list", "--json", env=env).out) == []


async def test_keys_rotate_keeps_logins_working_under_the_new_key(env, dovecot, mail_user, encryption_key):
    from mailbridge.secrets import generate_key

    account_id = run_cli(*add_args(dovecot, mail_user), env=env, input=mail_user.password + "\n").last_line
    new_key = generate_key()
    rotating = dict(env, MAILBRIDGE_ENCRYPTION_KEY=f"{new_key},{encryption_key}")
    rotated = run_cli("keys", "rotate", env=rotating)
    assert rotated.code == 0 and "re-encrypted 1" in rotated.out
    only_new = dict(env, MAILBRIDGE_ENCRYPTION_KEY=new_key)
    assert run_cli("accounts", "test", account_id, env=only_new).code == 0
    only_old = run_cli("accounts", "test", account_id, env=env)
    assert only_old.code == 1 and "cannot be decrypted" in only_old.err


async def test_config_errors_exit_2_with_the_variable_named(env):
    for var, value in (("MAILBRIDGE_ENCRYPTION_KEY", "short"), ("DATABASE_URL", "mysql://x/y"),
                       ("MAILBRIDGE_POLL_SECONDS", "soon"), ("PORT", "99999")):
        result = run_cli("accounts", "list", env=dict(env, **{var: value}))
        assert result.code == 2, var
        assert var in result.err and "Traceback" not in result.err
        assert len(result.err.strip().splitlines()) == 1


async def test_preflight_reports_a_checklist(env, dovecot, mail_user):
    ok = run_cli("preflight", env=env)
    assert ok.code == 0, ok.out + ok.err
    for item in ("database", "schema", "lock self-test", "accounts", "encryption key"):
        assert item in ok.out
    prod = run_cli("preflight", "--production", env=env)
    assert prod.code == 1 and "at least one account" in prod.out
    pooler = run_cli("preflight", env=dict(env, DATABASE_URL="postgresql://u@127.0.0.1:6543/db"))
    assert pooler.code == 1 and "pooler" in pooler.out
    unreachable = run_cli("preflight", env=dict(env, DATABASE_URL="postgresql://u@127.0.0.1:1/db"))
    assert unreachable.code == 1 and "FAIL database" in unreachable.out


def test_usage_error_exits_2_before_any_side_effect(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    result = run_cli("accounts", "add", "--email", "x", env={"MAILBRIDGE_HOME": str(home)}, cwd=tmp_path)
    assert result.code == 2
    assert "--host" in result.err and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert list(home.iterdir()) == []  # no embedded Postgres, no key file

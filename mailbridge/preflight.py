"""Start-up checks: environment, database, schema, lock self-test, connections, accounts, keys.

`run_preflight` returns one `Check` per item, in order; `serve` prints them as its
checklist and refuses to start when one failed.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from mailbridge.aio.db import Database
from mailbridge.aio.locks import SELF_TEST_LOCK_CLASS, LockConnections
from mailbridge.config import Settings
from mailbridge.errors import MailbridgeError, SecretError
from mailbridge.secrets import Cipher
from mailbridge.store import accounts as account_store
from mailbridge.store import members as member_store
from mailbridge.store.db import server_version
from mailbridge.store.migrations import pending

POOLER_PORT = 6543


@dataclass(frozen=True, slots=True)
class Check:
    """One start-up check: what was checked, whether it passed, and what it found."""

    name: str
    ok: bool
    detail: str


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def pooler_problem(dsn: str) -> str | None:
    """Why `dsn` looks like a transaction pooler (which breaks session locks), or None."""
    parts = urlsplit(dsn)
    host = (parts.hostname or "") + " " + " ".join(parse_qs(parts.query).get("host", []))
    try:
        port = parts.port
    except ValueError:
        port = None
    if port == POOLER_PORT:
        return (f"port {POOLER_PORT} is a transaction pooler's (pgbouncer/Supavisor): session advisory "
                "locks do not work through it; use the direct connection (usually port 5432)")
    if "pgbouncer" in host.lower() or "pooler" in host.lower():
        return ("the host looks like a connection pooler: session advisory locks do not work through "
                "a transaction pooler; use the database's direct address")
    return None


async def lock_self_test(dsn: str) -> str | None:
    """None when a second connection cannot take a lock the first holds; else the problem."""
    key = secrets.randbelow(2**31 - 1) + 1  # processes starting together test different locks
    async with LockConnections.open(dsn, count=1) as one, LockConnections.open(dsn, count=1) as other:
        first = await one.try_lock(key, SELF_TEST_LOCK_CLASS)
        if first is None:
            return "could not take a test lock (is another preflight running?)"
        if await other.try_lock(key, SELF_TEST_LOCK_CLASS) is not None:
            return ("a second connection took a lock the first holds: connections are pooled "
                    "per transaction; use a direct Postgres connection")
    return None


def connections_needed(settings: Settings) -> int:
    """Postgres connections one `serve` process opens at most: its pool, its lock
    connections and one LISTEN connection (never more with more accounts)."""
    return settings.db_pool_size + settings.lock_connections + 1


async def connections_check(settings: Settings, db: Database) -> Check:
    """Whether Postgres has room for this process beside what is connected now; says what
    the whole deployment (this process and the live serve processes) needs."""
    need = connections_needed(settings)
    row = await db.fetchrow(
        """SELECT current_setting('max_connections')::int AS max,
                  current_setting('superuser_reserved_connections')::int AS reserved,
                  (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS used""")
    assert row is not None
    usable, used = row["max"] - row["reserved"], int(row["used"])
    others = len(await member_store.live(db, settings.member_timeout))
    detail = (f"a serve process needs {need} (pool {settings.db_pool_size}, locks {settings.lock_connections}, "
              f"LISTEN 1)")
    if others:
        detail += f"; with the {others} live serve process(es): {need * (others + 1)}"
    detail += f"; Postgres allows {usable}, {used} in use now"
    if need > usable:
        return Check("connections", False, detail + ": lower MAILBRIDGE_DB_POOL_SIZE or raise max_connections")
    if need > usable - used:
        # connections come and go; the pool grows only as far as it can and waits otherwise
        detail += " (short of room right now: lower MAILBRIDGE_DB_POOL_SIZE if this persists)"
    return Check("connections", True, detail)


async def run_preflight(settings: Settings, dsn: str, *, production: bool = False) -> list[Check]:
    """Every check, stopping after the first one that makes the rest meaningless."""
    checks: list[Check] = [Check("environment", True, "settings valid")]
    problem = pooler_problem(dsn) if not settings.embedded else None
    if problem:
        checks.append(Check("database", False, problem))
        return checks
    try:
        async with Database.connect(dsn, min_size=1, max_size=2) as db:
            version = await server_version(db)
            where = "embedded Postgres" if settings.embedded else redact_dsn(dsn)
            checks.append(Check("database", True, f"{where} (PostgreSQL {version})"))
            todo = await pending(dsn)
            if todo:
                names = ", ".join(f"{m.version:04d}_{m.name}" for m in todo)
                checks.append(Check("schema", False, f"not applied: {names}; run `mailbridge migrate`"))
                return checks
            checks.append(Check("schema", True, "all migrations applied"))
            lock_problem = await lock_self_test(dsn)
            checks.append(Check("lock self-test", lock_problem is None,
                                lock_problem or "a second connection cannot take a held lock"))
            checks.append(await connections_check(settings, db))
            accounts = await account_store.list_all(db)
            n = len(accounts)
            accounts_ok = not (production and n == 0)
            detail = f"{n}/{settings.max_accounts}"
            if n > settings.max_accounts:
                detail += f" (the {n - settings.max_accounts} newest are not synced)"
            if not accounts_ok:
                detail += ": --production needs at least one account (`mailbridge accounts add`)"
            checks.append(Check("accounts", accounts_ok, detail))
            checks.append(await _keys_check(settings, db, [a.id for a in accounts]))
    except MailbridgeError as exc:
        checks.append(Check("database", False, str(exc)))
    return checks


async def _keys_check(settings: Settings, db: Database, ids: list[int]) -> Check:
    if not settings.encryption_keys:
        return Check("encryption key", False, "MAILBRIDGE_ENCRYPTION_KEY is not set")
    cipher = Cipher(settings.encryption_keys)
    bad: list[int] = []
    for account_id in ids:
        try:
            cipher.decrypt(await account_store.get_password_encrypted(db, account_id))
        except SecretError:
            bad.append(account_id)
    if bad:
        return Check("encryption key", False,
                     f"cannot decrypt the password of account(s) {', '.join(map(str, bad))}: "
                     "the key changed; list the old key after the new one and run `mailbridge keys rotate`")
    source = "key file under MAILBRIDGE_HOME" if settings.key_source == "file" else "MAILBRIDGE_ENCRYPTION_KEY"
    return Check("encryption key", True, f"{source} opens all {len(ids)} stored password(s)")

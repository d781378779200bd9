"""Start-up checks: environment, database, schema, lock self-test, accounts, keys.

`run_preflight` returns one `Check` per item, in order; `serve` prints them as its
checklist and refuses to start when one failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from mailbridge.aio.db import AccountLock, Database
from mailbridge.config import Settings
from mailbridge.errors import MailbridgeError, SecretError
from mailbridge.secrets import Cipher
from mailbridge.store import accounts as account_store
from mailbridge.store.db import server_version
from mailbridge.store.migrations import pending

POOLER_PORT = 6543
SELF_TEST_LOCK = 2_000_000_000  # an account id no real account gets


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
    async with AccountLock.hold(dsn, SELF_TEST_LOCK) as first:
        if not first.acquired:
            return "could not take a test lock (is another preflight running?)"
        async with AccountLock.hold(dsn, SELF_TEST_LOCK) as second:
            if second.acquired:
                return ("a second connection took a lock the first holds: connections are pooled "
                        "per transaction; use a direct Postgres connection")
    return None


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

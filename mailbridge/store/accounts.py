"""SQL for the accounts table.  Passwords go in and out only as ciphertext."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailbridge.errors import AccountLimitReached, AccountNotFound, UniqueViolation, InvalidInput
from mailbridge.store.db import Db, Row, Tx

PUBLIC_COLUMNS = (
    "id, email, imap_host, imap_port, imap_tls, imap_username, verify_certificate, enabled, "
    "health, health_reason, health_changed_at, owner, heartbeat_at, excluded_folders, "
    "credentials_changed_at, created_at, updated_at, auth_kind, "
    "(SELECT c.name FROM oauth2_clients c WHERE c.id = accounts.oauth2_client) AS oauth2_client"
)


@dataclass(frozen=True, slots=True)
class Account:
    """An account row without its password."""

    id: int
    email: str
    imap_host: str
    imap_port: int
    imap_tls: str
    imap_username: str
    verify_certificate: bool
    enabled: bool
    health: str
    health_reason: str | None
    health_changed_at: datetime
    owner: str | None
    heartbeat_at: datetime | None
    excluded_folders: tuple[str, ...] | None
    credentials_changed_at: datetime
    created_at: datetime
    updated_at: datetime
    auth_kind: str = "password"  # or "oauth2"
    oauth2_client: str | None = None  # the OAuth2 client's name (oauth2 accounts)

    @classmethod
    def from_row(cls, row: Row) -> "Account":
        data = dict(row)
        if data["excluded_folders"] is not None:
            data["excluded_folders"] = tuple(data["excluded_folders"])
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (no password or token, ever)."""
        out: dict[str, Any] = {}
        for key in self.__slots__:
            value = getattr(self, key)
            out[key] = value.isoformat() if isinstance(value, datetime) else (
                list(value) if isinstance(value, tuple) else value)
        return out


@dataclass(frozen=True, slots=True)
class NewAccount:
    email: str
    imap_host: str
    imap_port: int
    imap_tls: str
    imap_username: str
    verify_certificate: bool = True


async def count(db: Db) -> int:
    return int(await db.fetchval("SELECT count(*) FROM accounts"))


async def insert(db: Db, new: NewAccount, password_encrypted: bytes, *, limit: int) -> int:
    """Insert an account; AccountLimitReached past `limit`, InvalidInput on a duplicate."""
    async with db.transaction() as tx:
        # serialize concurrent adds so the limit holds
        await tx.execute("LOCK TABLE accounts IN SHARE ROW EXCLUSIVE MODE")
        existing = int(await tx.fetchval("SELECT count(*) FROM accounts"))
        if existing >= limit:
            raise AccountLimitReached(
                f"mailbridge already has {existing} accounts, the limit (MAILBRIDGE_MAX_ACCOUNTS={limit}); "
                "remove one or raise the limit"
            )
        try:
            return int(await tx.fetchval(
                """INSERT INTO accounts (email, imap_host, imap_port, imap_tls, imap_username,
                                         password_encrypted, verify_certificate)
                   VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id""",
                new.email, new.imap_host, new.imap_port, new.imap_tls, new.imap_username,
                password_encrypted, new.verify_certificate,
            ))
        except UniqueViolation:
            raise InvalidInput(
                f"an account for {new.email} as {new.imap_username} on {new.imap_host} already exists",
                {"email": "already exists"},
            ) from None


async def list_all(db: Db) -> list[Account]:
    rows = await db.fetch(f"SELECT {PUBLIC_COLUMNS} FROM accounts ORDER BY id")
    return [Account.from_row(r) for r in rows]


async def get(db: Db, account_id: int) -> Account:
    row = await db.fetchrow(f"SELECT {PUBLIC_COLUMNS} FROM accounts WHERE id = $1", account_id)
    if row is None:
        raise AccountNotFound(f"no account with id {account_id}: see `mailbridge accounts list`")
    return Account.from_row(row)


async def find_by_email(db: Db, email: str, host: str | None = None) -> list[Account]:
    """The accounts with this email address (case-insensitive), on `host` when given."""
    rows = await db.fetch(
        f"""SELECT {PUBLIC_COLUMNS} FROM accounts
            WHERE lower(email) = lower($1) AND ($2::text IS NULL OR lower(imap_host) = lower($2))
            ORDER BY id""", email, host)
    return [Account.from_row(r) for r in rows]


async def get_password_encrypted(db: Db, account_id: int) -> bytes:
    value = await db.fetchval("SELECT password_encrypted FROM accounts WHERE id = $1", account_id)
    if value is None:
        raise AccountNotFound(f"no account with id {account_id}")
    return bytes(value)


async def delete(db: Db, account_id: int) -> None:
    status = await db.execute("DELETE FROM accounts WHERE id = $1", account_id)
    if status.endswith(" 0"):
        raise AccountNotFound(f"no account with id {account_id}: see `mailbridge accounts list`")


async def all_ciphertexts(tx: Tx) -> list[tuple[int, bytes]]:
    rows = await tx.fetch("SELECT id, password_encrypted FROM accounts ORDER BY id FOR UPDATE")
    return [(r["id"], bytes(r["password_encrypted"])) for r in rows]


async def set_ciphertext(tx: Tx, account_id: int, token: bytes) -> None:
    """Store a re-encrypted password (same plaintext: does not count as a credential change)."""
    await tx.execute("UPDATE accounts SET password_encrypted = $2, updated_at = now() WHERE id = $1",
                     account_id, token)


async def set_health(db: Db, account_id: int, health: str, reason: str | None) -> bool:
    """Store the account's health; a change of state also appends an `account_health`
    event, in the same statement (so in the same transaction).  True when it changed."""
    changed = await db.fetchval(
        """WITH old AS (SELECT health FROM accounts WHERE id = $1 FOR UPDATE),
                upd AS (UPDATE accounts a SET health = $2, health_reason = $3,
                            health_changed_at = CASE WHEN a.health IS DISTINCT FROM $2
                                                     THEN now() ELSE a.health_changed_at END
                        WHERE a.id = $1),
                ev AS (INSERT INTO events (account_id, kind, payload)
                       SELECT $1, 'account_health',
                              jsonb_build_object('health', $2::text, 'reason', $3::text,
                                                 'previous', old.health)
                       FROM old WHERE old.health IS DISTINCT FROM $2
                       RETURNING 1)
           SELECT count(*) > 0 FROM ev""",
        account_id, health, reason,
    )
    return bool(changed)


async def set_owner(db: Db, account_id: int, owner: str | None, *, only_if: str | None = None) -> None:
    """Record which process syncs the account (and its heartbeat); with `only_if`,
    only when that process is still the recorded owner (so a late cleanup never erases
    the owner that took over)."""
    if only_if is None:
        await db.execute("UPDATE accounts SET owner = $2, heartbeat_at = now() WHERE id = $1",
                         account_id, owner)
    else:
        await db.execute("UPDATE accounts SET owner = $2, heartbeat_at = now() WHERE id = $1 AND owner = $3",
                         account_id, owner, only_if)


async def get_owner(db: Db, account_id: int) -> str | None:
    """The recorded owner (host:pid) of the account; None when unowned or unknown."""
    return await db.fetchval("SELECT owner FROM accounts WHERE id = $1", account_id)

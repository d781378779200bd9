"""SQL for OAuth2 sign-in: the `oauth2_clients` table and the OAuth2 columns of
`accounts`.  Secrets (client secret, refresh and access tokens) go in and out only as
ciphertext; nothing here returns them in a public shape."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailbridge.errors import InvalidInput, NameTaken, UniqueViolation
from mailbridge.store.db import Db, Tx


@dataclass(frozen=True, slots=True)
class OAuth2Client:
    """A registered OAuth2 client, without its secret."""

    id: int
    name: str
    token_url: str
    authorize_url: str | None
    client_id: str
    scopes: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (never the secret)."""
        return {"id": self.id, "name": self.name, "token_url": self.token_url,
                "authorize_url": self.authorize_url, "client_id": self.client_id,
                "scopes": self.scopes, "created_at": self.created_at.isoformat()}


@dataclass(frozen=True, slots=True)
class NewOAuth2Client:
    name: str
    token_url: str
    client_id: str
    authorize_url: str | None = None
    scopes: str = ""


@dataclass(frozen=True, slots=True)
class AccountTokens:
    """An OAuth2 account's credentials as stored (ciphertext) with its client's row."""

    account_id: int
    client: OAuth2Client
    client_secret_encrypted: bytes | None
    refresh_token_encrypted: bytes
    access_token_encrypted: bytes | None
    access_token_expires_at: datetime | None


_CLIENT_COLUMNS = "id, name, token_url, authorize_url, client_id, scopes, created_at"


async def insert_client(db: Db, new: NewOAuth2Client, secret_encrypted: bytes | None) -> int:
    """Register a client; NameTaken (an InvalidInput) when the name is taken.  Returns its id."""
    try:
        return int(await db.fetchval(
            """INSERT INTO oauth2_clients (name, token_url, authorize_url, client_id,
                                           client_secret_encrypted, scopes)
               VALUES ($1, $2, $3, $4, $5, $6) RETURNING id""",
            new.name, new.token_url, new.authorize_url, new.client_id, secret_encrypted, new.scopes))
    except UniqueViolation:
        raise NameTaken(f"an OAuth2 client named {new.name!r} already exists", {"name": "already exists"}) from None


async def list_clients(db: Db) -> list[OAuth2Client]:
    rows = await db.fetch(f"SELECT {_CLIENT_COLUMNS} FROM oauth2_clients ORDER BY name")
    return [OAuth2Client(**dict(r)) for r in rows]


async def get_client(db: Db, name: str) -> OAuth2Client:
    """The client named `name`; InvalidInput when there is none."""
    row = await db.fetchrow(f"SELECT {_CLIENT_COLUMNS} FROM oauth2_clients WHERE name = $1", name)
    if row is None:
        raise InvalidInput(f"no OAuth2 client named {name!r}: see `mailbridge oauth2 list`",
                           {"oauth2": f"no OAuth2 client named {name!r}"})
    return OAuth2Client(**dict(row))


async def get_client_secret_encrypted(db: Db, client_pk: int) -> bytes | None:
    value = await db.fetchval("SELECT client_secret_encrypted FROM oauth2_clients WHERE id = $1", client_pk)
    return None if value is None else bytes(value)


async def set_account_oauth2(db: Db | Tx, account_id: int, client_pk: int, refresh_encrypted: bytes,
                             access_encrypted: bytes | None = None,
                             access_expires_at: datetime | None = None, *,
                             credentials_changed: bool = False) -> None:
    """Make the account sign in with OAuth2 through the client, with this refresh token
    (and, when known, a current access token).  `credentials_changed`: also bump
    `credentials_changed_at`, which the accounts trigger turns into a NOTIFY (the
    supervisor replaces the actor, waking one parked as auth_failed)."""
    bump = ", credentials_changed_at = clock_timestamp()" if credentials_changed else ""
    await db.execute(
        f"""UPDATE accounts SET auth_kind = 'oauth2', oauth2_client = $2, refresh_token_encrypted = $3,
                   access_token_encrypted = $4, access_token_expires_at = $5, updated_at = now(){bump}
            WHERE id = $1""",
        account_id, client_pk, refresh_encrypted, access_encrypted, access_expires_at)


async def clear_account_oauth2(db: Db | Tx, account_id: int) -> None:
    """Make the account sign in with its password again (its OAuth2 tokens forgotten); the
    caller stores the password (which bumps `credentials_changed_at`)."""
    await db.execute(
        """UPDATE accounts SET auth_kind = 'password', oauth2_client = NULL, refresh_token_encrypted = NULL,
                  access_token_encrypted = NULL, access_token_expires_at = NULL, updated_at = now()
           WHERE id = $1""", account_id)


async def auth_kind(db: Db, account_id: int) -> str:
    """'password' or 'oauth2' ('password' for an account that is gone: its caller finds out)."""
    value = await db.fetchval("SELECT auth_kind FROM accounts WHERE id = $1", account_id)
    return str(value or "password")


async def get_account_tokens(db: Db, account_id: int) -> AccountTokens | None:
    """The account's OAuth2 credentials (ciphertext), or None when it uses a password."""
    row = await db.fetchrow(
        f"""SELECT a.id AS account_id, a.refresh_token_encrypted, a.access_token_encrypted,
                   a.access_token_expires_at, c.client_secret_encrypted,
                   {", ".join("c." + c.strip() + " AS c_" + c.strip() for c in _CLIENT_COLUMNS.split(","))}
            FROM accounts a JOIN oauth2_clients c ON c.id = a.oauth2_client
            WHERE a.id = $1 AND a.auth_kind = 'oauth2'""", account_id)
    if row is None:
        return None
    data = dict(row)
    client = OAuth2Client(**{k[2:]: v for k, v in data.items() if k.startswith("c_")})
    return AccountTokens(
        account_id=data["account_id"], client=client,
        client_secret_encrypted=None if data["client_secret_encrypted"] is None else bytes(data["client_secret_encrypted"]),
        refresh_token_encrypted=bytes(data["refresh_token_encrypted"]),
        access_token_encrypted=None if data["access_token_encrypted"] is None else bytes(data["access_token_encrypted"]),
        access_token_expires_at=data["access_token_expires_at"])


async def save_refreshed(db: Db, account_id: int, access_encrypted: bytes, expires_at: datetime,
                         refresh_encrypted: bytes | None) -> None:
    """Store a refreshed access token (and a rotated refresh token when one came).  Not a
    credential change: running actors are not replaced."""
    if refresh_encrypted is None:
        await db.execute(
            "UPDATE accounts SET access_token_encrypted = $2, access_token_expires_at = $3 WHERE id = $1",
            account_id, access_encrypted, expires_at)
    else:
        await db.execute(
            """UPDATE accounts SET access_token_encrypted = $2, access_token_expires_at = $3,
                      refresh_token_encrypted = $4 WHERE id = $1""",
            account_id, access_encrypted, expires_at, refresh_encrypted)


async def all_ciphertexts(tx: Tx) -> list[tuple[str, int, str, bytes]]:
    """Every OAuth2 secret as (table, id, column, ciphertext), locked for a key rotation."""
    out: list[tuple[str, int, str, bytes]] = []
    for r in await tx.fetch("SELECT id, client_secret_encrypted FROM oauth2_clients "
                            "WHERE client_secret_encrypted IS NOT NULL ORDER BY id FOR UPDATE"):
        out.append(("oauth2_clients", r["id"], "client_secret_encrypted", bytes(r["client_secret_encrypted"])))
    for r in await tx.fetch("SELECT id, refresh_token_encrypted, access_token_encrypted FROM accounts "
                            "WHERE refresh_token_encrypted IS NOT NULL OR access_token_encrypted IS NOT NULL "
                            "ORDER BY id FOR UPDATE"):
        for column in ("refresh_token_encrypted", "access_token_encrypted"):
            if r[column] is not None:
                out.append(("accounts", r["id"], column, bytes(r[column])))
    return out


_ROTATABLE = {("oauth2_clients", "client_secret_encrypted"), ("accounts", "refresh_token_encrypted"),
              ("accounts", "access_token_encrypted")}


async def set_ciphertext(tx: Tx, table: str, row_id: int, column: str, token: bytes) -> None:
    """Store one re-encrypted secret (same plaintext) from `all_ciphertexts`."""
    if (table, column) not in _ROTATABLE:
        raise ValueError(f"not an OAuth2 secret column: {table}.{column}")
    await tx.execute(f"UPDATE {table} SET {column} = $2 WHERE id = $1", row_id, token)

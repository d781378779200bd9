"""Account operations shared by the command line and the API: validate, test, add, rotate.

Validation and the login test are the same wherever an account comes from; errors are
`InvalidInput` (with the bad fields) or the IMAP error types, never a traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mailbridge.aio.imap import ImapEndpoint, ImapSession
from mailbridge.config import Settings
from mailbridge.credentials import Bearer, Credential
from mailbridge.errors import AccountLimitReached, InvalidInput
from mailbridge.secrets import Cipher
from mailbridge.store import accounts as account_store
from mailbridge.store.accounts import Account, NewAccount
from mailbridge.store.db import Db

if TYPE_CHECKING:
    from mailbridge.store.oauth2 import OAuth2Client

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9._\-:\[\]]+$")
DEFAULT_PORTS = {"tls": 993, "starttls": 143, "none": 143}


def validate(fields: dict[str, Any]) -> NewAccount:
    """A `NewAccount` from raw fields, or InvalidInput naming every bad field."""
    problems: dict[str, str] = {}
    email = str(fields.get("email") or "").strip()
    if not _EMAIL.match(email):
        problems["email"] = "must look like name@example.com"
    host = str(fields.get("host") or "").strip()
    if not host or not _HOST.match(host):
        problems["host"] = "must be a host name or IP address"
    tls = str(fields.get("tls") or "tls").strip().lower()
    if tls not in DEFAULT_PORTS:
        problems["tls"] = "must be tls, starttls or none"
    port_raw = fields.get("port")
    port = DEFAULT_PORTS.get(tls, 993)
    if port_raw not in (None, ""):
        try:
            port = int(port_raw)
            if isinstance(port_raw, bool) or not 1 <= port <= 65535:
                raise ValueError
        except (TypeError, ValueError):
            problems["port"] = "must be a number from 1 to 65535"
    username = str(fields.get("username") or email).strip()
    if not username:
        problems["username"] = "must not be empty"
    verify = fields.get("verify_certificate", True)
    if not isinstance(verify, bool):
        problems["verify_certificate"] = "must be true or false"
    if problems:
        listing = "; ".join(f"{k}: {v}" for k, v in problems.items())
        raise InvalidInput(f"invalid account: {listing}", problems)
    return NewAccount(email=email, imap_host=host, imap_port=port, imap_tls=tls,
                      imap_username=username, verify_certificate=bool(verify))


def endpoint_of(account: NewAccount | Account) -> ImapEndpoint:
    """The IMAP endpoint of a NewAccount or Account."""
    return ImapEndpoint(host=account.imap_host, port=account.imap_port, tls=account.imap_tls,
                        username=account.imap_username,
                        verify_certificate=account.verify_certificate)


@dataclass(frozen=True, slots=True)
class LoginReport:
    """What a successful login test learned of the server."""

    capabilities: frozenset[str]


async def test_login(endpoint: ImapEndpoint, password: "str | Credential", settings: Settings) -> LoginReport:
    """Connect, log in (a password, or a Bearer: AUTHENTICATE), log out; raises the IMAP
    error types on failure."""
    async with ImapSession.open(endpoint, password, timeout=settings.imap_timeout,
                                connect_timeout=settings.connect_timeout) as session:
        return LoginReport(capabilities=session.capabilities)


async def add_account(db: Db, settings: Settings, new: NewAccount, password: str) -> int:
    """Test the login, then save the account with its password encrypted; returns the id."""
    if not password:
        raise InvalidInput("invalid account: password: must not be empty", {"password": "must not be empty"})
    await check_room(db, settings)
    await test_login(endpoint_of(new), password, settings)
    cipher = Cipher(settings.require_keys())
    return await account_store.insert(db, new, cipher.encrypt(password), limit=settings.max_accounts)


def _check_room(existing: int, settings: Settings) -> None:
    if existing >= settings.max_accounts:  # fail fast; `insert` re-checks under a lock
        raise AccountLimitReached(
            f"mailbridge already has {existing} accounts, the limit (MAILBRIDGE_MAX_ACCOUNTS="
            f"{settings.max_accounts}); remove one or raise the limit"
        )


async def check_room(db: Db, settings: Settings) -> None:
    """AccountLimitReached when no account can be added (before asking anything of anyone)."""
    _check_room(await account_store.count(db), settings)


@dataclass(frozen=True, slots=True)
class OAuth2Grant:
    """Tokens a token endpoint just gave for a client: the access token to test the
    sign-in with, and the refresh token to keep."""

    client: "OAuth2Client"
    access_token: str = field(repr=False)
    expires_at: datetime
    refresh_token: str = field(repr=False)


async def client_secret(db: Db, settings: Settings, client: "OAuth2Client") -> str | None:
    """The client's decrypted secret (None: a public client)."""
    from mailbridge.store import oauth2 as oauth2_store

    secret_ct = await oauth2_store.get_client_secret_encrypted(db, client.id)
    return Cipher(settings.require_keys()).decrypt(secret_ct) if secret_ct is not None else None


async def refresh_grant(db: Db, settings: Settings, client_name: str, refresh_token: str) -> OAuth2Grant:
    """Refresh once with the named client, proving the refresh token.  InvalidInput for an
    unknown client (field ``oauth2``) or an empty token (``refresh_token``); OAuth2Revoked
    when the token endpoint refuses the token; OAuth2Unavailable when it cannot be reached."""
    from mailbridge.oauth2.tokens import refresh
    from mailbridge.store import oauth2 as oauth2_store

    refresh_token = refresh_token.strip()
    if not refresh_token:
        raise InvalidInput("invalid account: refresh_token: must not be empty", {"refresh_token": "must not be empty"})
    client = await oauth2_store.get_client(db, client_name)
    grant = await refresh(client.token_url, client.client_id, await client_secret(db, settings, client),
                          refresh_token, scopes=client.scopes, timeout=settings.connect_timeout)
    return OAuth2Grant(client, grant.access_token, grant.expires_at, grant.refresh_token or refresh_token)


async def test_oauth2_login(settings: Settings, where: "NewAccount | Account", grant: OAuth2Grant) -> LoginReport:
    """AUTHENTICATE at the account's server with the grant's access token."""
    return await test_login(endpoint_of(where), Bearer(where.imap_username, grant.access_token), settings)


async def store_oauth2_tokens(db: Db, settings: Settings, account_id: int, grant: OAuth2Grant, *,
                              credentials_changed: bool = True) -> None:
    """Make the account sign in with the grant's client and tokens (encrypted).  With
    `credentials_changed` (a change of an existing account's credentials) the accounts
    trigger tells the supervisor, which replaces the actor (an auth_failed one included)."""
    from mailbridge.store import oauth2 as oauth2_store

    cipher = Cipher(settings.require_keys())
    await oauth2_store.set_account_oauth2(db, account_id, grant.client.id, cipher.encrypt(grant.refresh_token),
                                          cipher.encrypt(grant.access_token), grant.expires_at,
                                          credentials_changed=credentials_changed)


async def save_oauth2_account(db: Db, settings: Settings, new: NewAccount, grant: OAuth2Grant) -> int:
    """Test AUTHENTICATE with the grant's access token, then save the new account with its
    tokens encrypted; returns the id."""
    await test_oauth2_login(settings, new, grant)
    cipher = Cipher(settings.require_keys())
    async with db.transaction() as tx:
        # no password: an empty one, encrypted, keeps the column's promise (always decryptable)
        account_id = await account_store.insert(tx, new, cipher.encrypt(""), limit=settings.max_accounts)
        await store_oauth2_tokens(tx, settings, account_id, grant, credentials_changed=False)
    return account_id


async def add_oauth2_account(db: Db, settings: Settings, new: NewAccount, client_name: str,
                             refresh_token: str) -> int:
    """Refresh once with the client (proving the refresh token), test AUTHENTICATE with
    the access token, then save the account with its tokens encrypted; returns the id.
    InvalidInput for an unknown client or an empty token; OAuth2Revoked when the token
    endpoint refuses the refresh token."""
    if not refresh_token.strip():
        raise InvalidInput("invalid account: refresh_token: must not be empty", {"refresh_token": "must not be empty"})
    from mailbridge.store import oauth2 as oauth2_store

    await oauth2_store.get_client(db, client_name)  # an unknown client before the limit
    await check_room(db, settings)
    grant = await refresh_grant(db, settings, client_name, refresh_token)
    return await save_oauth2_account(db, settings, new, grant)


async def renew_oauth2_account(db: Db, settings: Settings, account: Account, grant: OAuth2Grant) -> None:
    """Give an existing account (OAuth2 or password) new OAuth2 credentials: test
    AUTHENTICATE at its server with the grant's access token, then store them; the actor
    is replaced (an auth_failed account signs in again)."""
    await test_oauth2_login(settings, account, grant)
    await store_oauth2_tokens(db, settings, account.id, grant)


async def update_oauth2_token(db: Db, settings: Settings, account_id: int, refresh_token: str,
                              client_name: str | None = None) -> Account:
    """A new refresh token for an account (through `client_name`, or the client it has):
    refreshed once, tested, stored; returns the account as it is now.  InvalidInput when
    the account has no client and none is named."""
    account = await account_store.get(db, account_id)
    name = client_name or account.oauth2_client
    if name is None:
        raise InvalidInput(f"account {account_id} signs in with a password: name the OAuth2 client to use "
                           "(--oauth2 NAME)", {"oauth2": "name the client"})
    grant = await refresh_grant(db, settings, name, refresh_token)
    await renew_oauth2_account(db, settings, account, grant)
    return await account_store.get(db, account_id)


async def rotate_keys(db: Db, settings: Settings) -> int:
    """Re-encrypt every stored secret (passwords, OAuth2 client secrets, refresh and
    access tokens, webhook secrets) under the newest key; returns how many accounts' passwords."""
    from mailbridge.store import oauth2 as oauth2_store
    from mailbridge.store import webhooks as webhook_store

    cipher = Cipher(settings.require_keys())
    async with db.transaction() as tx:
        rows = await account_store.all_ciphertexts(tx)
        for account_id, token in rows:
            await account_store.set_ciphertext(tx, account_id, cipher.rotate(token))
        for table, row_id, column, secret in await oauth2_store.all_ciphertexts(tx):
            await oauth2_store.set_ciphertext(tx, table, row_id, column, cipher.rotate(secret))
        for webhook_id, secret in await webhook_store.all_ciphertexts(tx):
            await webhook_store.set_ciphertext(tx, webhook_id, cipher.rotate(secret))
    return len(rows)

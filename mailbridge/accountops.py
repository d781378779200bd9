"""Account operations shared by the command line and the API: validate, test, add, rotate.

Validation and the login test are the same wherever an account comes from; errors are
`InvalidInput` (with the bad fields) or the IMAP error types, never a traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mailbridge.aio.imap import ImapEndpoint, ImapSession
from mailbridge.config import Settings
from mailbridge.errors import AccountLimitReached, InvalidInput
from mailbridge.secrets import Cipher
from mailbridge.store import accounts as account_store
from mailbridge.store.accounts import Account, NewAccount
from mailbridge.store.db import Db

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


async def test_login(endpoint: ImapEndpoint, password: str, settings: Settings) -> LoginReport:
    """Connect, log in, log out; raises the IMAP error types on failure."""
    async with ImapSession.open(endpoint, password, timeout=settings.imap_timeout,
                                connect_timeout=settings.connect_timeout) as session:
        return LoginReport(capabilities=session.capabilities)


async def add_account(db: Db, settings: Settings, new: NewAccount, password: str) -> int:
    """Test the login, then save the account with its password encrypted; returns the id."""
    if not password:
        raise InvalidInput("invalid account: password: must not be empty", {"password": "must not be empty"})
    existing = await account_store.count(db)
    if existing >= settings.max_accounts:  # fail fast; `insert` re-checks under a lock
        raise AccountLimitReached(
            f"mailbridge already has {existing} accounts, the limit (MAILBRIDGE_MAX_ACCOUNTS="
            f"{settings.max_accounts}); remove one or raise the limit"
        )
    await test_login(endpoint_of(new), password, settings)
    cipher = Cipher(settings.require_keys())
    return await account_store.insert(db, new, cipher.encrypt(password), limit=settings.max_accounts)


async def rotate_keys(db: Db, settings: Settings) -> int:
    """Re-encrypt every stored password under the newest key; returns how many."""
    cipher = Cipher(settings.require_keys())
    async with db.transaction() as tx:
        rows = await account_store.all_ciphertexts(tx)
        for account_id, token in rows:
            await account_store.set_ciphertext(tx, account_id, cipher.rotate(token))
    return len(rows)

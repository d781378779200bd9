"""Open an IMAP session for a stored account with whatever it signs in with: its
password (LOGIN) or an OAuth2 access token (AUTHENTICATE), refreshing the token when it
is about to expire and exactly once more when the server refuses it."""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, AsyncIterator

from mailbridge.accountops import endpoint_of
from mailbridge.aio.imap import ImapSession
from mailbridge.config import Settings
from mailbridge.credentials import Bearer, Credential, Password
from mailbridge.errors import ImapAuthError, OAuth2Error
from mailbridge.oauth2.tokens import TokenSource
from mailbridge.secrets import Cipher
from mailbridge.store import accounts as account_store
from mailbridge.store import oauth2 as oauth2_store
from mailbridge.store.accounts import Account
from mailbridge.store.db import Db


async def stored_credential(db: Db, settings: Settings, account: Account, *,
                            source: TokenSource | None = None) -> Credential:
    """The account's credential: its decrypted password, or a Bearer with an access token
    that has time left (refreshed and stored if needed).  SecretError when no key opens
    what is stored; OAuth2Revoked / OAuth2Error / OAuth2Unavailable from a refresh."""
    cipher = Cipher(settings.require_keys())
    if await oauth2_store.auth_kind(db, account.id) == "oauth2":
        source = source or TokenSource(db, cipher, account.id, account.imap_username,
                                       timeout=settings.connect_timeout)
        return await source.bearer()
    return Password(cipher.decrypt(await account_store.get_password_encrypted(db, account.id)))


@asynccontextmanager
async def signed_in(db: Db, settings: Settings, account: Account, *, credential: Credential | None = None,
                    **session: Any) -> AsyncIterator[ImapSession]:
    """`ImapSession.open` for the stored account (keyword arguments go to it; timeouts
    default to the settings').  An OAuth2 account whose access token the server refuses
    gets exactly one refresh and one more attempt; a second refusal (or a refused
    refresh) raises ImapAuthError (OAuth2Revoked for ``invalid_grant``).  `credential`:
    one already got from `stored_credential` (else it is got here)."""
    session.setdefault("timeout", settings.imap_timeout)
    session.setdefault("connect_timeout", settings.connect_timeout)
    cipher = Cipher(settings.require_keys())
    source = TokenSource(db, cipher, account.id, account.imap_username, timeout=settings.connect_timeout)
    if credential is None:
        credential = await stored_credential(db, settings, account, source=source)
    async with AsyncExitStack() as stack:
        try:
            opened = await stack.enter_async_context(ImapSession.open(endpoint_of(account), credential, **session))
        except ImapAuthError as exc:
            if not isinstance(credential, Bearer) or isinstance(exc, OAuth2Error) or credential.fresh:
                raise
            credential = await source.bearer(force=True)
            opened = await stack.enter_async_context(ImapSession.open(endpoint_of(account), credential, **session))
        del credential
        yield opened

"""OAuth2 access tokens for IMAP sign-in: refresh over HTTP (httpx under trio), kept
encrypted in the account's row.

Pure parts (`needs_refresh`, `parse_token_response`) are separate from the HTTP call
(`refresh`) and from the stored state (`TokenSource`).  No token or secret ever appears
in an error message or a log line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import trio

from mailbridge.credentials import Bearer
from mailbridge.errors import OAuth2Error, OAuth2Revoked, OAuth2Unavailable
from mailbridge.secrets import Cipher
from mailbridge.store import oauth2 as oauth2_store
from mailbridge.store.db import Db

log = logging.getLogger(__name__)

REFRESH_MARGIN = 60.0  # refresh an access token with less than this many seconds left
DEFAULT_LIFETIME = 3600  # when the token endpoint gives no expires_in


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """A token endpoint's answer: the access token, when it expires, and a rotated
    refresh token if the server sent one."""

    access_token: str = field(repr=False)
    expires_at: datetime
    refresh_token: str | None = field(default=None, repr=False)


def renewal_delay(expires_at: datetime, now: datetime, margin: float = REFRESH_MARGIN) -> float:
    """Seconds a session signed in with a token expiring at `expires_at` may last: until
    `margin` seconds before the expiry, or half the time left when that is shorter (a
    short-lived token); at least 1 s (a token said to expire at once does not make the
    session loop)."""
    left = (expires_at - now).total_seconds()
    return max(1.0, left - min(margin, left / 2))


def needs_refresh(expires_at: datetime | None, now: datetime, margin: float = REFRESH_MARGIN) -> bool:
    """True when there is no access token or it has less than `margin` seconds left.
    """
    if expires_at is None:
        return True
    return (expires_at - now).total_seconds() < margin


def _said(body: dict[str, Any], *secrets: str) -> str:
    text = " ".join(str(body.get(k, "")) for k in ("error", "error_description") if body.get(k))[:300]
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def parse_token_response(status: int, body: bytes, now: datetime, *, where: str = "the token endpoint",
                         secrets: tuple[str, ...] = (), grant: str = "refresh") -> TokenGrant:
    """The grant in a token endpoint's response (RFC 6749 §5.1), or: OAuth2Revoked for
    ``invalid_grant``, OAuth2Unavailable for a 5xx or unreadable answer, OAuth2Error for
    any other refusal.  `grant`: what was asked, for the messages ("refresh", or
    "authorization code")."""
    try:
        data = json.loads(body.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        data = None
    if status >= 500 or (data is None and status != 400):
        raise OAuth2Unavailable(f"{where} failed (HTTP {status}); mailbridge retries later")
    if data is None:
        raise OAuth2Error(f"{where} refused the {grant} (HTTP {status}) without saying why")
    if status != 200 or "error" in data:
        error = str(data.get("error") or "")
        said = _said(data, *secrets)
        if error == "invalid_grant" and grant != "refresh":
            raise OAuth2Revoked(f"{where} refused the {grant} ({said}): it expired or was used already, "
                                "or the PKCE verifier did not match; start again", error)
        if error == "invalid_grant":
            raise OAuth2Revoked(
                f"{where} refused the refresh token ({said}): it was revoked or expired; "
                "store a new one (accounts update, or accounts authorize)", error)
        raise OAuth2Error(f"{where} refused the {grant} (HTTP {status}: {said})", error or None)
    access = data.get("access_token")
    if not isinstance(access, str) or not access:
        raise OAuth2Error(f"{where} answered without an access_token")
    try:
        lifetime = int(data.get("expires_in", DEFAULT_LIFETIME))
    except (TypeError, ValueError):
        lifetime = DEFAULT_LIFETIME
    refresh = data.get("refresh_token")
    return TokenGrant(access, now + timedelta(seconds=lifetime),
                      refresh if isinstance(refresh, str) and refresh else None)


async def token_request(token_url: str, form: dict[str, str], client_id: str, client_secret: str | None,
                        *, timeout: float, secrets: tuple[str, ...] = (), grant: str = "refresh") -> TokenGrant:
    """POST a grant to the token endpoint (client_secret_post) and parse the answer.
    OAuth2Unavailable when it cannot be reached in `timeout` seconds.  Cancellation
    abandons the request (nothing is stored)."""
    body = {**form, "client_id": client_id}
    if client_secret:
        body["client_secret"] = client_secret
    where = f"the token endpoint {httpx.URL(token_url).copy_with(query=None)}"
    try:
        with trio.fail_after(timeout):
            async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
                response = await client.post(token_url, data=body, headers={"Accept": "application/json"})
                content = await response.aread()
    except trio.TooSlowError:
        raise OAuth2Unavailable(f"{where} did not answer within {timeout:g} s; mailbridge retries later") from None
    except httpx.HTTPError as exc:
        raise OAuth2Unavailable(f"{where} cannot be reached ({type(exc).__name__}); mailbridge retries later") from None
    now = datetime.now(timezone.utc)
    return parse_token_response(response.status_code, content, now, where=where,
                                secrets=(*secrets, *(s for s in (client_secret,) if s)), grant=grant)


async def refresh(token_url: str, client_id: str, client_secret: str | None, refresh_token: str, *,
                  scopes: str = "", timeout: float = 20.0) -> TokenGrant:
    """The refresh_token grant (RFC 6749 §6)."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if scopes:
        form["scope"] = scopes
    return await token_request(token_url, form, client_id, client_secret, timeout=timeout,
                               secrets=(refresh_token,))


class TokenSource:
    """One account's access tokens: the stored one while it lasts, else a refresh whose
    result (and a rotated refresh token) is stored encrypted before it is used.
    `refreshes` counts the refreshes this source made."""

    def __init__(self, db: Db, cipher: Cipher, account_id: int, user: str, *, timeout: float = 20.0,
                 margin: float = REFRESH_MARGIN) -> None:
        self.margin = margin
        self.db = db
        self.cipher = cipher
        self.account_id = account_id
        self.user = user
        self.timeout = timeout
        self.refreshes = 0

    async def bearer(self, *, force: bool = False) -> Bearer:
        """A Bearer credential with an access token that has time left (`force`: a new
        one, whatever the stored one's expiry).  Raises OAuth2Revoked / OAuth2Error /
        OAuth2Unavailable (see `parse_token_response`), SecretError when no key opens the
        stored tokens, OAuth2Error when the account no longer uses OAuth2."""
        stored = await oauth2_store.get_account_tokens(self.db, self.account_id)
        if stored is None:
            raise OAuth2Error(f"account {self.account_id} does not sign in with OAuth2 (any more)")
        now = datetime.now(timezone.utc)
        if not force and stored.access_token_encrypted is not None:
            if not needs_refresh(stored.access_token_expires_at, now, self.margin):
                return Bearer(self.user, self.cipher.decrypt(stored.access_token_encrypted),
                              expires_at=stored.access_token_expires_at)
        refresh_token = self.cipher.decrypt(stored.refresh_token_encrypted)
        secret = (self.cipher.decrypt(stored.client_secret_encrypted)
                  if stored.client_secret_encrypted is not None else None)
        self.refreshes += 1
        grant = await refresh(stored.client.token_url, stored.client.client_id, secret, refresh_token,
                              timeout=self.timeout)
        await oauth2_store.save_refreshed(
            self.db, self.account_id, self.cipher.encrypt(grant.access_token), grant.expires_at,
            self.cipher.encrypt(grant.refresh_token) if grant.refresh_token else None)
        log.info("account %d: refreshed its OAuth2 access token (valid until %s)",
                 self.account_id, grant.expires_at.isoformat(timespec="seconds"))
        return Bearer(self.user, grant.access_token, fresh=True, expires_at=grant.expires_at)

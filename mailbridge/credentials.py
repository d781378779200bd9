"""What `ImapSession.open` logs in with: a password (LOGIN) or an OAuth2 bearer token
(AUTHENTICATE OAUTHBEARER / XOAUTH2).  Neither type's repr shows its secret."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Password:
    """LOGIN with the endpoint's username and this password."""

    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Bearer:
    """SASL OAUTHBEARER (RFC 7628) or XOAUTH2 with an OAuth2 access token."""

    user: str
    token: str = field(repr=False)
    #: the token was refreshed just now (a refusal of it is final: no second refresh)
    fresh: bool = field(default=False, compare=False)
    #: when the access token expires (None: unknown); a session ends before then
    expires_at: datetime | None = field(default=None, compare=False)

    @property
    def secret(self) -> str:
        return self.token


Credential = Password | Bearer


def oauthbearer_response(user: str, token: str, host: str = "", port: int = 0) -> str:
    """The base64 OAUTHBEARER initial client response (RFC 7628 §3.1)."""
    gs2 = "n,a=" + user.replace("=", "=3D").replace(",", "=2C") + ","
    parts = [gs2]
    if host:
        parts.append(f"host={host}")
    if port:
        parts.append(f"port={port}")
    parts.append(f"auth=Bearer {token}")
    raw = "\x01".join(parts) + "\x01\x01"
    return base64.b64encode(raw.encode("utf-8")).decode("ascii")


def xoauth2_response(user: str, token: str) -> str:
    """The base64 XOAUTH2 initial client response (Google / Microsoft)."""
    raw = f"user={user}\x01auth=Bearer {token}\x01\x01"
    return base64.b64encode(raw.encode("utf-8")).decode("ascii")


def choose_mechanism(capabilities: frozenset[str] | set[str]) -> str | None:
    """OAUTHBEARER if offered, else XOAUTH2, else None."""
    if "AUTH=OAUTHBEARER" in capabilities:
        return "OAUTHBEARER"
    if "AUTH=XOAUTH2" in capabilities:
        return "XOAUTH2"
    return None

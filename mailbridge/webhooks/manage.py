"""Adding, showing and removing webhooks: the checks and steps the command line and the
API share (one validation, one 422/exit-1 message for both)."""

from __future__ import annotations

from typing import Any, Sequence
from urllib.parse import urlsplit

from mailbridge.config import Settings
from mailbridge.errors import InvalidInput
from mailbridge.secrets import Cipher
from mailbridge.store import webhooks as store
from mailbridge.store.db import Db
from mailbridge.webhooks.payloads import KNOWN_TYPES

MAX_URL = 2048
MAX_SECRET = 1024


def url_problem(url: Any) -> str | None:
    """Why `url` cannot be a webhook's URL (None: it can)."""
    if not isinstance(url, str) or not url.strip():
        return "is required: the receiver's http:// or https:// URL"
    if len(url) > MAX_URL:
        return f"is longer than {MAX_URL} characters"
    if url != url.strip() or any(c.isspace() or not c.isprintable() for c in url):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        return f"must be an http:// or https:// URL (got {parts.scheme + '://' if parts.scheme else 'no scheme'})"
    if not parts.hostname:
        return "has no host name"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password: the secret signs every delivery"
    if parts.fragment:
        return "must not have a #fragment"
    return None


def secret_problem(secret: Any) -> str | None:
    if not isinstance(secret, str) or not secret:
        return "is required: the receivers check each delivery's signature with it"
    if len(secret) > MAX_SECRET:
        return f"is longer than {MAX_SECRET} characters"
    if any(not c.isprintable() for c in secret):
        return "must not contain control characters"
    return None


# DESIGN.md's name for the type the events table records as `account_health`
ALIASES = {"account_health_changed": "account_health"}


def events_problem(events: Any) -> str | None:
    if events is None:
        return None
    if not isinstance(events, (list, tuple)) or not events:
        return "must be a non-empty list of event types (or left out: every type)"
    unknown = [e for e in events if not isinstance(e, str) or e not in KNOWN_TYPES]
    if unknown:
        shown = ", ".join(repr(e) for e in unknown[:5])
        return f"unknown event type(s) {shown}; known: {', '.join(KNOWN_TYPES)}"
    return None


def check(url: Any, secret: Any, events: Any) -> tuple[str, str, tuple[str, ...] | None]:
    """(url, secret, events without duplicates) or InvalidInput naming every bad field."""
    problems = {name: problem for name, problem in (
        ("url", url_problem(url)), ("secret", secret_problem(secret)), ("events", events_problem(events)))
        if problem is not None}
    if problems:
        raise InvalidInput("invalid webhook: " + "; ".join(f"{k} {v}" for k, v in problems.items()), problems)
    chosen = tuple(dict.fromkeys(ALIASES.get(e, e) for e in events)) if events is not None else None
    return url, secret, chosen


async def add(db: Db, settings: Settings, url: Any, secret: Any, events: Sequence[str] | None) -> int:
    """Check, encrypt the secret, store; returns the new webhook's id.  It receives the
    events committed from now on."""
    url, secret, chosen = check(url, secret, events)
    cipher = Cipher(settings.require_keys())
    return await store.create(db, url, cipher.encrypt(secret), chosen)


async def show(db: Db, webhook_id: int) -> dict[str, Any]:
    """The webhook's public state with its lag (events not yet delivered)."""
    hook = await store.get(db, webhook_id)
    return hook.to_json(lag=await store.lag(db, hook))


__all__ = ["add", "check", "events_problem", "secret_problem", "show", "url_problem"]

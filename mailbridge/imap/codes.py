"""What a server's status text says beyond OK/NO/BAD: RFC 5530 response codes, Office
365's throttle hint, "too many connections".  Pure; never raises on any input."""

from __future__ import annotations

import re

MAX_BACKOFF = 600.0  # seconds: the longest wait a server's hint can impose on us
THROTTLE_DEFAULT = 30.0  # seconds, when a server says it throttles without saying how long

# RFC 5530 codes that mean "not now" on LOGIN (try again later, same credentials)
LOGIN_TRANSIENT_CODES = frozenset({"UNAVAILABLE", "INUSE", "LIMIT", "SERVERBUG"})

_STATUS = r"(?:OK|NO|BAD|BYE|PREAUTH)"
# [* | tag] [status] "[" code ...: the code atom of a status response (RFC 3501 resp-text-code)
_CODE = re.compile(
    rf"^\s*(?:\*\s+|[^\s\[\]]+\s+(?={_STATUS}\b))?(?:{_STATUS}\s+)?\[([A-Za-z0-9][A-Za-z0-9._-]*)[\]\s]",
    re.IGNORECASE,
)
_THROTTLED = re.compile(r"\bthrottled\b", re.IGNORECASE)
_BACKOFF = re.compile(r"Backoff\s+Time\s*:\s*([0-9]{1,15})\s*(milliseconds|ms|seconds|s)\b", re.IGNORECASE)
_TOO_MANY = re.compile(
    r"too\s+many\s+(?:simultaneous\s+|concurrent\s+|open\s+|parallel\s+)?(?:connections|sessions|logins)"
    r"|maximum\s+number\s+of\s+(?:connections|sessions)"
    r"|connection\s+limit",
    re.IGNORECASE,
)


def _text(text: str | bytes | bytearray) -> str:
    if isinstance(text, (bytes, bytearray)):
        return bytes(text[:4096]).decode("utf-8", "replace")
    return text[:4096]


def response_code(text: str | bytes | bytearray) -> str | None:
    """The response code of a status response, upper-case (``"LIMIT"`` for
    ``NO [LIMIT] too many``, also with a leading ``*`` or tag), or None when it has none."""
    m = _CODE.match(_text(text))
    return m.group(1).upper() if m else None


def throttle_hint(text: str | bytes | bytearray) -> float | None:
    """Seconds to wait when the server says it throttles us (Office 365: ``Request is
    throttled. Suggested Backoff Time: N milliseconds``), at most MAX_BACKOFF;
    THROTTLE_DEFAULT when it gives no time; None when it does not say it throttles."""
    s = _text(text)
    if not _THROTTLED.search(s):
        return None
    m = _BACKOFF.search(s)
    if m is None:
        return THROTTLE_DEFAULT
    value = int(m.group(1))
    seconds = value / 1000.0 if m.group(2).lower() in ("milliseconds", "ms") else float(value)
    return min(seconds, MAX_BACKOFF)


def too_many_connections(text: str | bytes | bytearray) -> bool:
    """Whether the text says the server refuses us for having too many connections open
    (Gmail's "Too many simultaneous connections", Dovecot's "Maximum number of
    connections ... exceeded", ...)."""
    return _TOO_MANY.search(_text(text)) is not None

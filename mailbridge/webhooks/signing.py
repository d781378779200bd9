"""The `Mailbridge-Signature` header (pure).

`Mailbridge-Signature: t=UNIX_SECONDS,v1=HEX` where HEX is the lowercase hex
HMAC-SHA256, keyed with the webhook's secret, of ``f"{t}.{raw body}"`` (the bytes as
sent).  A receiver recomputes it over the raw body it got, compares in constant time, and
rejects a `t` older than five minutes (a replayed request).  `verify` does all of it.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "Mailbridge-Signature"
EVENT_ID_HEADER = "Mailbridge-Event-Id"
TOLERANCE = 300  # seconds a receiver accepts between `t` and its clock


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The lowercase hex HMAC-SHA256 of ``f"{timestamp}.".encode() + body``."""
    return hmac.new(secret.encode("utf-8"), f"{int(timestamp)}.".encode("ascii") + body,
                    hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header value: ``t=TIMESTAMP,v1=HEX``."""
    return f"t={int(timestamp)},v1={signature(secret, timestamp, body)}"


def parse(header: str) -> tuple[int, list[str]]:
    """(t, the v1 signatures) of a header value; ValueError when it has no t or no v1."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value.strip().lower())
    if timestamp is None or not signatures:
        raise ValueError("not a Mailbridge-Signature (expected t=UNIX_SECONDS,v1=HEX)")
    return timestamp, signatures


def verify(secret: str, header: str | None, body: bytes, now: float, tolerance: float = TOLERANCE) -> bool:
    """Whether `header` signs `body` with `secret` at a time within `tolerance` seconds
    of `now` (UNIX seconds).  Never raises: a missing or malformed header is False."""
    if not header:
        return False
    try:
        timestamp, given = parse(header)
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in given)


__all__ = ["EVENT_ID_HEADER", "HEADER", "TOLERANCE", "parse", "sign", "signature", "verify"]

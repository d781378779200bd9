"""The seam's one redaction: no password leaves it in a repr, a log line or an error.

`redact(text)` hides the password of LOGIN and the initial response of AUTHENTICATE
wherever a command's text ("<tag> LOGIN user password") appears (aioimaplib puts a command's repr into its exceptions), and every secret of an
open session (`holding`), raw or as an IMAP quoted string.
"""

from __future__ import annotations

import re
from collections import Counter
from contextlib import contextmanager
from typing import Iterator

MASK = "***"

_QUOTED = r'"(?:[^"\\]|\\.)*"?'
_ARG = rf'(?:{_QUOTED}|\{{[0-9]+\+?\}}|[^\s"]+)'
_TAG = r"\b[A-Za-z]{1,8}[0-9]+\s+(?:UID\s+)?"  # a command as sent: "<tag> LOGIN ..."
_LOGIN = re.compile(rf"({_TAG}LOGIN\s+{_ARG}\s+){_ARG}", re.IGNORECASE)
_AUTHENTICATE = re.compile(rf"({_TAG}AUTHENTICATE\s+[A-Za-z0-9_-]+)\s+\S+", re.IGNORECASE)
_MIN_SECRET = 3  # shorter values would blank out ordinary words

_live: Counter[str] = Counter()


def _forms(secret: str) -> set[str]:
    quoted = '"' + secret.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return {secret, quoted, repr(secret)[1:-1]}


def redact(text: str, *secrets: str) -> str:
    """`text` with LOGIN/AUTHENTICATE arguments and `secrets` (plus the secrets of every
    open session) replaced by ``***``."""
    text = _LOGIN.sub(rf"\g<1>{MASK}", text)
    text = _AUTHENTICATE.sub(rf"\g<1> {MASK}", text)
    values = {s for s in (*secrets, *_live) if s and len(s) >= _MIN_SECRET}
    for value in sorted(values, key=len, reverse=True):
        for form in sorted(_forms(value), key=len, reverse=True):
            text = text.replace(form, MASK)
    return text


@contextmanager
def holding(secret: str) -> Iterator[None]:
    """Redact `secret` everywhere (`redact`) while the block runs."""
    _live[secret] += 1
    try:
        yield
    finally:
        _live[secret] -= 1
        if _live[secret] <= 0:
            del _live[secret]

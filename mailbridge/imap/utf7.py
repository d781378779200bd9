"""IMAP modified UTF-7 mailbox names (RFC 3501 §5.1.3).

Printable ASCII stands for itself except ``&``, which is written ``&-``; any other run of
characters is UTF-16BE, base64 with ``,`` for ``/`` and no padding, between ``&`` and
``-``.  ``Reise &- Urlaub`` ↔ ``Reise & Urlaub``, ``&ZeVnLIqe-`` ↔ ``日本語``.
"""

from __future__ import annotations

import binascii
import re

_B64_CHUNK = re.compile(r"[A-Za-z0-9+,]+")


def _encode_run(run: str) -> str:
    data = run.encode("utf-16-be", "surrogatepass")
    return "&" + binascii.b2a_base64(data, newline=False).decode("ascii").rstrip("=").replace("/", ",") + "-"


def _decode_run(chunk: str) -> str | None:
    """The text of one shifted run (between ``&`` and ``-``), or None when malformed."""
    if _B64_CHUNK.fullmatch(chunk) is None or len(chunk) % 4 == 1:
        return None
    b64 = chunk.replace(",", "/") + "=" * (-len(chunk) % 4)
    try:
        data = binascii.a2b_base64(b64)
    except binascii.Error:
        return None
    if len(data) % 2:
        return None
    try:
        text = data.decode("utf-16-be")
    except UnicodeDecodeError:  # lone surrogate
        return None
    # canonical form only: leftover bits must be zero (re-encoding gives the same chunk)
    if _encode_run(text)[1:-1] != chunk:
        return None
    return text


def decode_mailbox_name(raw: str) -> str:
    """Decode a modified UTF-7 name; malformed input comes back unchanged (never raises).

    Names that are not 7-bit (servers with UTF8=ACCEPT send UTF-8) are returned as they are.
    """
    if "&" not in raw or not raw.isascii():
        return raw
    out: list[str] = []
    pos, end = 0, len(raw)
    while pos < end:
        amp = raw.find("&", pos)
        if amp < 0:
            out.append(raw[pos:])
            break
        out.append(raw[pos:amp])
        dash = raw.find("-", amp + 1)
        if dash < 0:
            return raw
        if dash == amp + 1:
            out.append("&")
        else:
            text = _decode_run(raw[amp + 1:dash])
            if text is None:
                return raw
            out.append(text)
        pos = dash + 1
    return "".join(out)


def encode_mailbox_name(name: str) -> str:
    """Encode a name as modified UTF-7 (what the server expects in commands)."""
    if name.isascii() and name.isprintable() and "&" not in name:
        return name
    out: list[str] = []
    run: list[str] = []
    for ch in name:
        if " " <= ch <= "~":
            if run:
                out.append(_encode_run("".join(run)))
                run.clear()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    if run:
        out.append(_encode_run("".join(run)))
    return "".join(out)


__all__ = ["decode_mailbox_name", "encode_mailbox_name"]

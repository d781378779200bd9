"""Turn raw server bytes into the `lines` the transport hands over (test helper).

Mirrors aioimaplib 2.0.3 as patched in `mailbridge.aio._imapproto`: untagged lines lose
their leading "* "; a line ending in {N} is followed by one bytearray of exactly N
bytes; the rest of that response line follows as bytes (dropped when empty).  The tagged
completion is left out, as `mailbridge.aio.imap.ImapResponse` keeps it apart.
"""

from __future__ import annotations

import re

_LITERAL = re.compile(rb"\{(\d+)\}$")


def lines_from_wire(wire: bytes, tag: bytes = b"A001", *, completion: bool = False) -> list[bytes | bytearray]:
    """With `completion`, the tagged line's text after "TAG OK " comes last, as callers
    append `ImapResponse.text` for parsers that read its response codes."""
    out: list[bytes | bytearray] = []
    pos = 0
    while pos < len(wire):
        eol = wire.index(b"\r\n", pos)
        line = wire[pos:eol]
        pos = eol + 2
        if line:
            if line.startswith(b"* "):
                out.append(line[2:])
            elif line.startswith(tag + b" "):
                if completion:
                    out.append((line.split(b" ", 2) + [b""])[2])
            else:
                out.append(line)
        m = _LITERAL.search(line)
        if m:
            size = int(m.group(1))
            out.append(bytearray(wire[pos:pos + size]))
            pos += size
    return out


def literal(data: bytes) -> bytes:
    """``{N}\\r\\n`` + data, for building wire text."""
    return b"{%d}\r\n" % len(data) + data

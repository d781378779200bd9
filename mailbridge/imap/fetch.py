"""Parsers for FETCH responses: message metadata, flag updates, UIDs and bodies.

Input is a completed command's `lines` (see `mailbridge.imap.lexer`).  The common shape
of a metadata response (Dovecot's item order) is read by one regular expression; any
other goes through the generic token reader, with identical results (the unit tests hold
the two together).  `parse_fetch` never lets one bad message stop the others: what cannot
be read becomes a `FetchDefect` carrying the UID when it can be made out.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Iterator

from mailbridge.errors import ImapProtocolError
from mailbridge.imap.headers import _extract
from mailbridge.imap.lexer import Lines, Part, Token, parse_tokens, split_responses, token_number, token_text
from mailbridge.imap.models import FetchDefect, FlagUpdate, MessageMeta

FETCH_HEAD = re.compile(rb"(\d+) FETCH ", re.I)
_SALVAGE_UID = re.compile(rb"\bUID (\d+)", re.I)

# --- FETCH -----------------------------------------------------------------------------

_FLAG_CACHE: dict[tuple, tuple[str, ...]] = {}


def _flags(value: Token) -> tuple[str, ...]:
    """A FLAGS list as str, \\Recent removed (cached: mailboxes reuse few combinations)."""
    if type(value) is not list:
        raise ImapProtocolError("FLAGS is not a list")
    key = tuple(value)
    try:
        return _FLAG_CACHE[key]
    except KeyError:
        pass
    except TypeError:
        raise ImapProtocolError("FLAGS holds a nested list") from None
    flags = tuple(
        token_text(f).replace("\x00", "") for f in value if f is not None and f.upper() != b"\\RECENT"
    )
    if len(_FLAG_CACHE) >= 4096:
        _FLAG_CACHE.clear()
    _FLAG_CACHE[key] = flags
    return flags


_IDATE = re.compile(rb" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{1,2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})")
_MONTHS = {
    m: i
    for i, m in enumerate(
        (b"JAN", b"FEB", b"MAR", b"APR", b"MAY", b"JUN", b"JUL", b"AUG", b"SEP", b"OCT", b"NOV", b"DEC"), 1
    )
}
_IDATE_ZONES: dict[bytes, timezone] = {}


def parse_internaldate(value: bytes) -> datetime | None:
    """``17-Jul-1996 02:44:25 -0700`` as a tz-aware datetime; None when malformed."""
    m = _IDATE.fullmatch(value)
    if m is None:
        return None
    day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
    month = _MONTHS.get(mon.upper())
    if month is None:
        return None
    zone_key = sign + zh + zm
    zone = _IDATE_ZONES.get(zone_key)
    if zone is None:
        seconds = int(zh) * 3600 + int(zm) * 60
        try:
            zone = timezone(timedelta(seconds=-seconds if sign == b"-" else seconds))
        except ValueError:
            return None
        if seconds == 0:
            zone = timezone.utc
        if len(_IDATE_ZONES) < 1024:
            _IDATE_ZONES[zone_key] = zone
    try:
        return datetime(int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=zone)
    except ValueError:
        return None


_ABSENT = object()
_NO_HEADERS = (None, None, None, None, (), (), None, None, (), ())


# The common FETCH items, uppercase, one at a time.  Groups: 1 UID, 2 FLAGS, 3 INTERNALDATE,
# 4 RFC822.SIZE, 5 MODSEQ, 6 header section literal size, 7 header section NIL.
_ITEM = re.compile(
    rb" ?(?:UID (\d+)"
    rb'|FLAGS \(([^()"{}\[\]]*)\)'
    rb'|INTERNALDATE "([^"\\]*)"'
    rb"|RFC822\.SIZE (\d+)"
    rb"|MODSEQ \((\d+)\)"
    rb"|BODY\[HEADER(?:\.FIELDS \([A-Z0-9 \-]*\))?\] (?:\{(\d+)\}\Z|(NIL)))"
)
_RAW_FLAGS: dict[bytes, tuple[str, ...]] = {}


def _raw_flags(raw: bytes) -> tuple[str, ...]:
    flags = _RAW_FLAGS.get(raw)
    if flags is None:
        flags = _flags(raw.split())  # type: ignore[arg-type]
        if len(_RAW_FLAGS) >= 4096:
            _RAW_FLAGS.clear()
        _RAW_FLAGS[raw] = flags
    return flags


# The whole first line of the most common metadata FETCH response (Dovecot's item order,
# with or without MODSEQ), its header section literal following.  Anything else goes
# through `_fetch_fields`.  Groups: 1 UID, 2 FLAGS, 3 INTERNALDATE, 4 RFC822.SIZE,
# 5 MODSEQ.
_COMMON = re.compile(
    rb"\d+ FETCH \(UID (\d+) FLAGS \(([^()\"{}\[\]]*)\) INTERNALDATE \"([^\"\\]*)\" RFC822\.SIZE (\d+)"
    rb"(?: MODSEQ \((\d+)\))? BODY\[HEADER(?:\.FIELDS \([A-Z0-9 \-]*\))?\] \{\d+\}\Z"
)


# ... and of a flags-only response (a flag scan, CHANGEDSINCE): 1 UID, 2 FLAGS, 3 MODSEQ.
_COMMON_FLAGS = re.compile(rb"\d+ FETCH \(UID (\d+) FLAGS \(([^()\"{}\[\]]*)\)(?: MODSEQ \((\d+)\))?\)\Z")


def _fetch_fields_fast(resp: list[Part], start: int) -> tuple | None:
    """`_fetch_fields` for the usual shape of a metadata FETCH; None for anything else."""
    line = resp[0]
    if line[start:start + 1] != b"(":
        return None
    pos = start + 1
    last = len(resp) - 1
    idx = 0
    uid = flags = internal = size = modseq = None
    header: object = _ABSENT
    has_meta = False
    defects: list[str] = []
    match = _ITEM.match
    while True:
        m = match(line, pos)  # type: ignore[arg-type]
        if m is None:
            if idx == last and line[pos:] == b")":
                return uid, flags, internal, size, modseq, header, has_meta, defects
            return None
        pos = m.end()
        g = m.lastindex
        if g == 1:
            uid = int(m.group(1))
        elif g == 2:
            flags = _raw_flags(m.group(2))
        elif g == 3:
            has_meta = True
            internal = parse_internaldate(m.group(3))
            if internal is None:
                defects.append(f"unparseable INTERNALDATE {m.group(3)!r}"[:80])
        elif g == 4:
            has_meta = True
            size = int(m.group(4))
        elif g == 5:
            modseq = int(m.group(5))
        elif g == 6:
            has_meta = True
            if idx + 2 > last:
                return None
            literal = resp[idx + 1]
            line = resp[idx + 2]
            if type(literal) is bytes or type(line) is not bytes:
                return None
            header = bytes(literal)
            idx += 2
            pos = 0
        else:
            has_meta = True
            header = None


def _fetch_fields_generic(resp: list[Part], start: int) -> tuple:
    """`_fetch_fields` for any FETCH response, through the tokenizer."""
    parts = list(resp)
    parts[0] = resp[0][start:]  # type: ignore[index]
    tokens = parse_tokens(parts)
    if len(tokens) != 1 or type(tokens[0]) is not list:
        raise ImapProtocolError("FETCH data is not one parenthesised list")
    items = tokens[0]
    n = len(items)
    if n % 2:
        raise ImapProtocolError("FETCH data has an item without a value")
    uid = flags = internal = size = modseq = None
    header: object = _ABSENT
    has_meta = False
    defects: list[str] = []
    for i in range(0, n, 2):
        name = items[i]
        value = items[i + 1]
        if type(name) is not bytes:
            raise ImapProtocolError("FETCH item name is not an atom")
        key = name.upper()
        if key == b"UID":
            uid = token_number(value, "UID")
        elif key == b"FLAGS":
            flags = _flags(value)
        elif key == b"INTERNALDATE":
            has_meta = True
            if type(value) is bytes:
                internal = parse_internaldate(value)
            if internal is None:
                defects.append(f"unparseable INTERNALDATE {value!r}"[:80])
        elif key == b"RFC822.SIZE":
            has_meta = True
            size = token_number(value, "RFC822.SIZE")
        elif key == b"MODSEQ":
            if type(value) is list and len(value) == 1:
                modseq = token_number(value[0], "MODSEQ")
            else:
                raise ImapProtocolError("MODSEQ is not a one-number list")
        elif key.startswith(b"BODY[HEADER") or key.startswith(b"RFC822.HEADER") or key.startswith(
            b"BINARY[HEADER"
        ):
            has_meta = True
            if value is None or type(value) is bytes:
                header = value
            else:
                header = None
                defects.append("header section is not a string")
    return uid, flags, internal, size, modseq, header, has_meta, defects


def _fetch_fields(resp: list[Part], start: int) -> tuple:
    """(uid, flags, internal_date, size, modseq, header, has_meta, defects) of one FETCH
    response whose first line's item list starts at `start`; `ImapProtocolError` if it
    cannot be read.  header is _ABSENT when not sent; has_meta is True when INTERNALDATE,
    RFC822.SIZE or a header section was sent."""
    fields = _fetch_fields_fast(resp, start)
    if fields is None:
        fields = _fetch_fields_generic(resp, start)
    return fields


def fetch_flags(resp: list[Part], start: int) -> tuple[int | None, tuple[str, ...] | None, int | None]:
    """(UID, FLAGS, MODSEQ) of one FETCH response whose items begin at `start` (None where
    absent), for the flag updates SELECT and unsolicited responses carry; raises
    `ImapProtocolError` when it cannot be read."""
    uid, flags, _, _, modseq, _, _, _ = _fetch_fields(resp, start)
    return uid, flags, modseq


def _salvage_uid(resp: list[Part]) -> int | None:
    first = resp[0]
    if type(first) is bytes:
        m = _SALVAGE_UID.search(first)
        if m is not None:
            return int(m.group(1))
    return None


def parse_fetch(lines: Lines) -> Iterator[MessageMeta | FlagUpdate | FetchDefect]:
    """The messages of a metadata FETCH, in the order sent.

    A response with INTERNALDATE, RFC822.SIZE or a header section gives a `MessageMeta`;
    one with only UID and FLAGS (and MODSEQ) a `FlagUpdate`; one without UID (an
    unsolicited flag change) nothing; one that cannot be parsed a `FetchDefect` (with the
    UID when it can be made out).  Other responses are skipped.
    """
    common = _COMMON.match
    common_flags = _COMMON_FLAGS.match
    for resp in split_responses(lines):
        first = resp[0]
        if type(first) is not bytes:
            yield FetchDefect(None, "literal data outside any response")
            continue
        if len(resp) == 1:
            c = common_flags(first)
            if c is not None:
                uid_b, flags_b, modseq_b = c.groups()
                yield FlagUpdate(int(uid_b), _raw_flags(flags_b), int(modseq_b) if modseq_b is not None else None)
                continue
        if len(resp) == 3 and resp[2] == b")" and type(resp[1]) is bytearray:
            c = common(first)
            if c is not None:
                # the usual shape: exactly what _fetch_fields would read from it
                uid_b, flags_b, idate, size_b, modseq_b = c.groups()
                internal = parse_internaldate(idate)
                defects = [] if internal is not None else [f"unparseable INTERNALDATE {idate!r}"[:80]]
                header = resp[1]
                hf = _extract(header) if header else _NO_HEADERS  # type: ignore[arg-type]
                if hf[9]:
                    defects = [*hf[9], *defects]
                yield MessageMeta(
                    int(uid_b), _raw_flags(flags_b), internal, int(size_b),
                    hf[0], hf[1], hf[2], hf[3], hf[4], hf[5], hf[6], hf[7], hf[8],
                    int(modseq_b) if modseq_b is not None else None, tuple(defects),
                )
                continue
        m = FETCH_HEAD.match(first)
        if m is None:
            continue
        try:
            uid, flags, internal, size, modseq, header, has_meta, defects = _fetch_fields(resp, m.end())
        except ImapProtocolError as exc:
            yield FetchDefect(_salvage_uid(resp), str(exc))
            continue
        if uid is None:
            continue
        if not has_meta:
            if flags is not None:
                yield FlagUpdate(uid, flags, modseq)
            continue
        if header is _ABSENT or not header:
            if header is None:
                defects.append("header section is NIL")
            hf = _NO_HEADERS
        else:
            hf = _extract(header)  # type: ignore[arg-type]
        if hf[9]:
            defects = [*hf[9], *defects]
        yield MessageMeta(
            uid,
            flags if flags is not None else (),
            internal,
            size,
            hf[0],
            hf[1],
            hf[2],
            hf[3],
            hf[4],
            hf[5],
            hf[6],
            hf[7],
            hf[8],
            modseq,
            tuple(defects),
        )


def parse_fetch_uids(lines: Lines) -> list[int]:
    """The UIDs of a ``UID FETCH <set> (UID)`` response (or any FETCH carrying UID), in order.

    Raises `ImapProtocolError` on a FETCH response it cannot read: a missing UID here
    would look like a deleted message.
    """
    uids: list[int] = []
    for resp in split_responses(lines):
        first = resp[0]
        if type(first) is not bytes:
            continue
        m = FETCH_HEAD.match(first)
        if m is None:
            continue
        uid = _fetch_fields(resp, m.end())[0]
        if uid is not None:
            uids.append(uid)
    return uids


def parse_body_fetch(lines: Lines) -> tuple[int | None, bytes | None]:
    """(uid, raw message bytes) of a ``UID FETCH n (UID BODY.PEEK[])`` response.

    The bytes are exactly the literal the server sent; (None, None) when no FETCH carried
    a body (the message is gone).  Other FETCH responses (flag pushes) are ignored.
    """
    for resp in split_responses(lines):
        first = resp[0]
        if type(first) is not bytes:
            continue
        m = FETCH_HEAD.match(first)
        if m is None or not (b"BODY[]" in first.upper() or b"RFC822" in first.upper()):
            continue
        parts = list(resp)
        parts[0] = first[m.end():]
        tokens = parse_tokens(parts)
        if len(tokens) != 1 or type(tokens[0]) is not list or len(tokens[0]) % 2:
            raise ImapProtocolError("FETCH data is not a list of items")
        items = tokens[0]
        uid: int | None = None
        body: object = _ABSENT
        for i in range(0, len(items), 2):
            name = items[i]
            if type(name) is not bytes:
                raise ImapProtocolError("FETCH item name is not an atom")
            key = name.upper()
            if key == b"UID":
                uid = token_number(items[i + 1], "UID")
            elif key.startswith(b"BODY[]") or key.startswith(b"BINARY[]") or key == b"RFC822":
                body = items[i + 1]
        if body is _ABSENT:
            continue
        if body is not None and type(body) is not bytes:
            raise ImapProtocolError("message body is not a string")
        return uid, body  # type: ignore[return-value]
    return None, None


__all__ = ["FETCH_HEAD", "fetch_flags", "parse_body_fetch", "parse_fetch", "parse_fetch_uids", "parse_internaldate"]

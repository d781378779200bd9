"""Parsers for FETCH responses: message metadata, flag updates, UIDs and bodies.

Input is a completed command's `lines` (see `mailbridge.imap.lexer`).  The common shape
of a metadata response (Dovecot's item order) is read by one regular expression; any
other goes through the generic token reader, with identical results (the unit tests hold
the two together).  `parse_fetch` never lets one bad message stop the others: what cannot
be read becomes a `FetchDefect` carrying the UID when it can be made out.

Every number read is within `MAX_NUMBER` (Postgres' bigint): a UID or size beyond it makes
the response a `FetchDefect`, a MODSEQ beyond it is dropped with a defect noted (the
message is still worth mirroring); an INTERNALDATE is only kept when it converts to UTC.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Iterator

from mailbridge.errors import ImapProtocolError
from mailbridge.imap.headers import extract_header_fields
from mailbridge.imap.lexer import Lines, Part, Token, brief, parse_tokens, split_responses, token_number, token_text
from mailbridge.imap.utf7 import decode_mailbox_name
from mailbridge.imap.models import FetchDefect, FetchItems, FlagUpdate, MessageMeta

FETCH_HEAD = re.compile(rb"(\d+) FETCH ", re.I)
_SALVAGE_UID = re.compile(rb"\bUID (\d{1,18})\b", re.I)

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
        when = datetime(int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=zone)
    except ValueError:
        return None
    if year == b"0001" or year == b"9999":  # its UTC time may lie outside what a datetime holds
        try:
            when.astimezone(timezone.utc)
        except OverflowError:
            return None
    return when


def _modseq(digits: bytes, defects: list[str] | None = None) -> int | None:
    """A MODSEQ's digits as a number; None, with a defect noted, when out of range."""
    if len(digits) < 19:
        return int(digits)
    try:
        return token_number(digits, "MODSEQ")
    except ImapProtocolError as exc:
        if defects is not None:
            defects.append(f"{exc}"[:70] + "; ignored")
        return None


_ABSENT = object()


# The common FETCH items, uppercase, one at a time.  Groups: 1 UID, 2 FLAGS, 3 INTERNALDATE,
# 4 RFC822.SIZE, 5 MODSEQ, 6 header section literal size, 7 header section NIL.  A UID or
# size of 19 digits or more is left to the generic reader (which checks its range).
_ITEM = re.compile(
    rb" ?(?:UID (\d{1,18})"
    rb'|FLAGS \(([^()"{}\[\]]*)\)'
    rb'|INTERNALDATE "([^"\\]*)"'
    rb"|RFC822\.SIZE (\d{1,18})"
    rb"|MODSEQ \((\d+)\)"
    rb"|BODY\[HEADER(?:\.FIELDS \([A-Z0-9 \-]*\))?\] (?:\{(\d+)\}\Z|(NIL)))"
)
_RAW_FLAGS: dict[bytes, tuple[str, ...]] = {}


def _raw_flags(raw: bytes) -> tuple[str, ...]:
    flags = _RAW_FLAGS.get(raw)
    if flags is None:
        flags = _flags(raw.split())
        if len(_RAW_FLAGS) >= 4096:
            _RAW_FLAGS.clear()
        _RAW_FLAGS[raw] = flags
    return flags


# The whole first line of the most common metadata FETCH response (Dovecot's item order,
# with or without MODSEQ), its header section literal following.  Anything else goes
# through `fetch_items`.  Groups: 1 UID, 2 FLAGS, 3 INTERNALDATE, 4 RFC822.SIZE,
# 5 MODSEQ.
_COMMON = re.compile(
    rb"\d+ FETCH \(UID (\d{1,18}) FLAGS \(([^()\"{}\[\]]*)\) INTERNALDATE \"([^\"\\]*)\" RFC822\.SIZE (\d{1,18})"
    rb"(?: MODSEQ \((\d+)\))? BODY\[HEADER(?:\.FIELDS \([A-Z0-9 \-]*\))?\] \{\d+\}\Z"
)


# ... and of a flags-only response (a flag scan, CHANGEDSINCE): 1 UID, 2 FLAGS, 3 MODSEQ.
_COMMON_FLAGS = re.compile(rb"\d+ FETCH \(UID (\d{1,18}) FLAGS \(([^()\"{}\[\]]*)\)(?: MODSEQ \((\d+)\))?\)\Z")


def _fetch_fields_fast(resp: list[Part], start: int) -> FetchItems | None:
    """`fetch_items` for the usual shape of a metadata FETCH; None for anything else."""
    line = resp[0]
    if line[start:start + 1] != b"(":
        return None
    pos = start + 1
    last = len(resp) - 1
    idx = 0
    uid: int | None = None
    flags: tuple[str, ...] | None = None
    internal: datetime | None = None
    size: int | None = None
    modseq: int | None = None
    header: bytes | None = b""
    has_meta = False
    defects: list[str] = []
    match = _ITEM.match
    while True:
        m = match(line, pos)
        if m is None:
            if idx == last and line[pos:] == b")":
                return FetchItems(uid, flags, internal, size, modseq, header, has_meta, tuple(defects))
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
            modseq = _modseq(m.group(5), defects)
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


def _fetch_fields_generic(resp: list[Part], start: int) -> FetchItems:
    """`fetch_items` for any FETCH response, through the tokenizer."""
    parts = list(resp)
    parts[0] = resp[0][start:]
    tokens = parse_tokens(parts)
    if len(tokens) != 1 or type(tokens[0]) is not list:
        raise ImapProtocolError("FETCH data is not one parenthesised list")
    items = tokens[0]
    n = len(items)
    if n % 2:
        raise ImapProtocolError("FETCH data has an item without a value")
    uid: int | None = None
    flags: tuple[str, ...] | None = None
    internal: datetime | None = None
    size: int | None = None
    modseq: int | None = None
    header: bytes | None = b""
    has_meta = False
    defects: list[str] = []
    object_ids: dict[bytes, str] = {}
    labels: tuple[str, ...] | None = None
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
                defects.append(f"unparseable INTERNALDATE {brief(value) if type(value) is list else repr(value)}"[:80])
        elif key == b"RFC822.SIZE":
            has_meta = True
            size = token_number(value, "RFC822.SIZE")
        elif key == b"MODSEQ":
            if type(value) is list and len(value) == 1:
                digits = value[0]
                if type(digits) is bytes and digits.isdigit():
                    modseq = _modseq(digits, defects)
                else:
                    modseq = token_number(digits, "MODSEQ")
            else:
                raise ImapProtocolError("MODSEQ is not a one-number list")
        elif key in _OBJECT_ITEMS:
            ident = _object_id(value)
            if ident is not None:
                object_ids[_OBJECT_ITEMS[key]] = ident
        elif key == b"X-GM-LABELS":
            labels = _gm_labels(value)
        elif key.startswith(b"BODY[HEADER") or key.startswith(b"RFC822.HEADER") or key.startswith(
            b"BINARY[HEADER"
        ):
            has_meta = True
            if value is None or type(value) is bytes:
                header = value
            else:
                header = None
                defects.append("header section is not a string")
    return FetchItems(uid, flags, internal, size, modseq, header, has_meta, tuple(defects),
                      object_ids.get(b"EMAILID"), object_ids.get(b"THREADID"), labels)


# RFC 8474 object ids and Gmail's, by the id they give
_OBJECT_ITEMS = {b"EMAILID": b"EMAILID", b"X-GM-MSGID": b"EMAILID", b"THREADID": b"THREADID",
                 b"X-GM-THRID": b"THREADID"}


def _object_id(value: Token) -> str | None:
    """``(M6d99...)`` (RFC 8474) or a bare number (Gmail) as text; None for NIL."""
    if type(value) is list and len(value) == 1:
        value = value[0]
    if type(value) is not bytes or not value or len(value) > 255:
        if value is None:
            return None
        raise ImapProtocolError("object id is not an atom")
    return token_text(value)


def _gm_labels(value: Token) -> tuple[str, ...]:
    """X-GM-LABELS as text: system labels as sent (``\\Inbox``), others decoded from
    modified UTF-7 like folder names."""
    if type(value) is not list:
        raise ImapProtocolError("X-GM-LABELS is not a list")
    labels = []
    for label in value:
        if type(label) is not bytes:
            continue
        text = token_text(label)
        labels.append(text if text.startswith("\\") else decode_mailbox_name(text))
    return tuple(labels)


def fetch_items(resp: list[Part], start: int) -> FetchItems:
    """The items of one FETCH response whose first line's item list starts at `start`
    (after ``n FETCH ``); raises `ImapProtocolError` when it cannot be read."""
    items = _fetch_fields_fast(resp, start)
    if items is None:
        items = _fetch_fields_generic(resp, start)
    return items


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
                modseq = None if modseq_b is None else int(modseq_b) if len(modseq_b) < 19 else _modseq(modseq_b)
                yield FlagUpdate(int(uid_b), _raw_flags(flags_b), modseq)
                continue
        if len(resp) == 3 and resp[2] == b")" and type(resp[1]) is bytearray:
            c = common(first)
            if c is not None:
                # the usual shape: exactly what fetch_items would read from it
                uid_b, flags_b, idate, size_b, modseq_b = c.groups()
                internal = parse_internaldate(idate)
                noted: tuple[str, ...] = () if internal is not None else (f"unparseable INTERNALDATE {idate!r}"[:80],)
                if modseq_b is None:
                    modseq = None
                elif len(modseq_b) < 19:
                    modseq = int(modseq_b)
                else:
                    wide: list[str] = list(noted)
                    modseq = _modseq(modseq_b, wide)
                    noted = tuple(wide)
                yield _message_meta(
                    int(uid_b), _raw_flags(flags_b), internal, int(size_b), modseq, resp[1], noted,
                )
                continue
        m = FETCH_HEAD.match(first)
        if m is None:
            continue
        try:
            items = fetch_items(resp, m.end())
        except ImapProtocolError as exc:
            yield FetchDefect(_salvage_uid(resp), str(exc))
            continue
        if items.uid is None:
            continue
        if not items.has_meta:
            if items.flags is not None:
                yield FlagUpdate(items.uid, items.flags, items.modseq, items.labels)
            continue
        meta = _message_meta(
            items.uid, items.flags if items.flags is not None else (), items.internal_date, items.size_bytes,
            items.modseq, items.header,
            items.defects if items.header is not None else (*items.defects, "header section is NIL"),
        )
        if items.email_id is not None or items.thread_id is not None or items.labels is not None:
            meta = replace(meta, email_id=items.email_id, thread_id=items.thread_id, labels=items.labels)
        yield meta


def _message_meta(uid: int, flags: tuple[str, ...], internal_date: datetime | None, size_bytes: int | None,
                  modseq: int | None, header: bytes | bytearray | None, defects: tuple[str, ...]) -> MessageMeta:
    """A message's metadata: the FETCH items given and the fields of its header section;
    the header's defects come before `defects`."""
    h = extract_header_fields(header)
    return MessageMeta(
        uid, flags, internal_date, size_bytes,
        h.message_id, h.subject, h.from_name, h.from_email, h.to_emails, h.cc_emails, h.sent_at,
        h.in_reply_to, h.references,
        modseq, (*h.defects, *defects) if h.defects else defects,
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
        uid = fetch_items(resp, m.end()).uid
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
        return uid, body
    return None, None


__all__ = ["FETCH_HEAD", "fetch_items", "parse_body_fetch", "parse_fetch", "parse_fetch_uids", "parse_internaldate"]

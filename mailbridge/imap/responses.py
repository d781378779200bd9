"""Parsers for the responses mailbridge's IMAP commands get back.

Each takes a completed command's `lines` exactly as the transport hands them over (see
`mailbridge.imap.lexer` for the shape: untagged responses without ``"* "``, literals as
`bytearray` elements; the tagged completion's text only where a caller appends it, as
SELECT's ``[READ-ONLY]`` lives there).  Untagged responses a parser
does not care about (``EXISTS``, ``EXPUNGE``, ``OK [...]`` ... interleaved anywhere) are
skipped.  `parse_fetch` never lets one bad message stop the others; the others raise
`ImapProtocolError` only where going on would be wrong (a LIST entry we cannot read
must not look like a deleted folder).
"""

from __future__ import annotations

import re
from array import array
from datetime import datetime, timedelta, timezone
from typing import Iterable, Iterator

from mailbridge.errors import ImapProtocolError
from mailbridge.imap.headers import _extract
from mailbridge.imap.lexer import Part, Token, parse_tokens, split_responses
from mailbridge.imap.models import (
    FetchDefect,
    FlagUpdate,
    ListEntry,
    MessageMeta,
    SelectInfo,
    ServerPush,
    StatusInfo,
)
from mailbridge.imap.uidset import parse_uid_set, uid_set_spans
from mailbridge.imap.utf7 import decode_mailbox_name

Lines = Iterable[Part]

_FETCH_HEAD = re.compile(rb"(\d+) FETCH ", re.I)
_NUMBERED = re.compile(rb"(\d+) ([A-Za-z]+)")
_SALVAGE_UID = re.compile(rb"\bUID (\d+)", re.I)
# "OK [CODE args] text" untagged, or "[CODE args] text" as the tagged completion's text
_CODE = re.compile(rb"(?:(?:OK|NO|BAD|BYE|PREAUTH) )?\[([A-Za-z0-9.\-]+)(?: ([^\]]*))?\]", re.I)


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _number(value: Token, what: str) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ImapProtocolError(f"{what} is not a number: {value!r}"[:120]) from None


def _codes(first: bytes) -> tuple[bytes, bytes] | None:
    m = _CODE.match(first)
    if m is None:
        return None
    return m.group(1).upper(), m.group(2) or b""


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
        _text(f).replace("\x00", "") for f in value if f is not None and f.upper() != b"\\RECENT"
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
            uid = _number(value, "UID")
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
            size = _number(value, "RFC822.SIZE")
        elif key == b"MODSEQ":
            if type(value) is list and len(value) == 1:
                modseq = _number(value[0], "MODSEQ")
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
        m = _FETCH_HEAD.match(first)
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
        m = _FETCH_HEAD.match(first)
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
        m = _FETCH_HEAD.match(first)
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
                uid = _number(items[i + 1], "UID")
            elif key.startswith(b"BODY[]") or key.startswith(b"BINARY[]") or key == b"RFC822":
                body = items[i + 1]
        if body is _ABSENT:
            continue
        if body is not None and type(body) is not bytes:
            raise ImapProtocolError("message body is not a string")
        return uid, body  # type: ignore[return-value]
    return None, None


# --- mailbox state ---------------------------------------------------------------------


def _flag_tuple(value: Token) -> tuple[str, ...]:
    if type(value) is not list:
        raise ImapProtocolError("flag list is not a list")
    return tuple(_text(f) for f in value if type(f) is bytes)


def parse_select(lines: Lines) -> SelectInfo:
    """What a SELECT / EXAMINE response says about the mailbox.

    Reads EXISTS, FLAGS, the OK [UIDVALIDITY/UIDNEXT/PERMANENTFLAGS/HIGHESTMODSEQ/NOMODSEQ]
    codes, [READ-ONLY]/[READ-WRITE] (untagged or in the tagged text), and with QRESYNC the
    VANISHED (EARLIER) UIDs and FETCH flag changes.  Anything before an ``OK [CLOSED]``
    belongs to the previously selected mailbox and is dropped.
    """
    state: dict = {}
    vanished: list[int] = []
    updates: list[FlagUpdate] = []
    for resp in split_responses(lines):
        first = resp[0]
        if type(first) is not bytes:
            continue
        m = _NUMBERED.match(first)
        if m is not None:
            kind = m.group(2).upper()
            if kind == b"EXISTS":
                state["exists"] = int(m.group(1))
            elif kind == b"FETCH":
                fm = _FETCH_HEAD.match(first)
                if fm is not None:
                    try:
                        uid, flags, _, _, modseq, _, _, _ = _fetch_fields(resp, fm.end())
                    except ImapProtocolError:
                        continue
                    if uid is not None and flags is not None:
                        updates.append(FlagUpdate(uid, flags, modseq))
            continue
        upper = first[:9].upper()
        if upper.startswith(b"FLAGS "):
            tokens = parse_tokens(resp)
            state["flags"] = _flag_tuple(tokens[1] if len(tokens) > 1 else None)
            continue
        if upper.startswith(b"VANISHED "):
            vanished.extend(_vanished_uids(resp))
            continue
        code = _codes(first)
        if code is None:
            continue
        name, args = code
        if name in (b"UIDVALIDITY", b"UIDNEXT", b"HIGHESTMODSEQ"):
            state[name.decode().lower()] = _number(args.strip(), name.decode())
        elif name == b"NOMODSEQ":
            state["nomodseq"] = True
        elif name == b"PERMANENTFLAGS":
            tokens = parse_tokens([args])
            state["permanent_flags"] = _flag_tuple(tokens[0] if tokens else None)
        elif name == b"READ-ONLY":
            state["read_only"] = True
        elif name == b"READ-WRITE":
            state["read_only"] = False
        elif name == b"CLOSED":
            state.clear()
            vanished.clear()
            updates.clear()
    return SelectInfo(
        exists=state.get("exists", 0),
        uidvalidity=state.get("uidvalidity"),
        uidnext=state.get("uidnext"),
        highestmodseq=state.get("highestmodseq"),
        nomodseq=state.get("nomodseq", False),
        flags=state.get("flags", ()),
        permanent_flags=state.get("permanent_flags", ()),
        vanished=tuple(sorted(set(vanished))),
        read_only=state.get("read_only", False),
        flag_updates=tuple(updates),
    )


def parse_status(lines: Lines) -> StatusInfo:
    """The counters of the (first) STATUS response; `ImapProtocolError` if there is none."""
    for resp in split_responses(lines):
        first = resp[0]
        if type(first) is not bytes or first[:7].upper() != b"STATUS ":
            continue
        tokens = parse_tokens(resp)
        if len(tokens) < 3 or type(tokens[-1]) is not list or len(tokens[-1]) % 2:
            raise ImapProtocolError("malformed STATUS response")
        items = tokens[-1]
        values: dict[bytes, int] = {}
        for i in range(0, len(items), 2):
            name = items[i]
            if type(name) is bytes:
                values[name.upper()] = _number(items[i + 1], name.decode("ascii", "replace"))
        return StatusInfo(
            messages=values.get(b"MESSAGES"),
            uidnext=values.get(b"UIDNEXT"),
            uidvalidity=values.get(b"UIDVALIDITY"),
            unseen=values.get(b"UNSEEN"),
            highestmodseq=values.get(b"HIGHESTMODSEQ"),
        )
    raise ImapProtocolError("no STATUS response")


_MODSEQ_SUFFIX = re.compile(rb" ?\(MODSEQ [0-9]+\) ?\Z", re.I)
_NUMBERS_CHUNK = 1 << 16


def _search_numbers(first: bytes, out: array) -> bool:
    """Append the numbers of a ``SEARCH n n n [(MODSEQ m)]`` line to `out`, a slice at a
    time (no list of every number); False, appending nothing, when the line holds
    anything else."""
    end = len(first)
    if first.endswith(b")"):
        m = _MODSEQ_SUFFIX.search(first, max(6, end - 40))
        if m is None:
            return False
        end = m.start()
    if first[6:end].translate(None, b"0123456789 "):
        return False
    pos = 6
    while pos < end:
        stop = min(end, pos + _NUMBERS_CHUNK)
        if stop < end:
            space = first.find(b" ", stop, end)
            stop = end if space < 0 else space
        out.extend(map(int, first[pos:stop].split()))
        pos = stop
    return True


def parse_search(lines: Lines) -> array:
    """The numbers of SEARCH responses (in order, ``(MODSEQ n)`` skipped), or the ALL set
    of ESEARCH responses (ascending), as an ``array('q')``: 8 bytes a UID, with no list of
    a million ints or tokens on the way for a big mailbox."""
    out = array("q")
    for resp in split_responses(lines):
        first = resp[0]
        if type(first) is not bytes:
            continue
        head = first[:8].upper()
        if head.startswith(b"SEARCH"):
            if len(first) > 6 and first[6] != 32:
                continue
            if len(resp) == 1 and _search_numbers(first, out):
                continue
            for tok in parse_tokens(resp)[1:]:
                if type(tok) is bytes:
                    out.append(_number(tok, "SEARCH result"))
        elif head.startswith(b"ESEARCH"):
            tokens = parse_tokens(resp)
            for i in range(1, len(tokens) - 1):
                tok = tokens[i]
                if type(tok) is bytes and tok.upper() == b"ALL" and type(tokens[i + 1]) is bytes:
                    for lo, hi in uid_set_spans(tokens[i + 1].decode("ascii", "replace")):
                        out.extend(range(lo, hi + 1))
                    break
    return out


def _vanished_uids(resp: list[Part]) -> list[int]:
    tokens = parse_tokens(resp)
    sets = [t for t in tokens[1:] if type(t) is bytes]
    if len(sets) != 1:
        raise ImapProtocolError("malformed VANISHED response")
    return parse_uid_set(sets[0].decode("ascii", "replace"))


def parse_vanished(lines: Lines) -> list[int]:
    """The UIDs of all VANISHED responses (with or without EARLIER), ascending, unique."""
    uids: set[int] = set()
    for resp in split_responses(lines):
        first = resp[0]
        if type(first) is bytes and first[:9].upper() == b"VANISHED ":
            uids.update(_vanished_uids(resp))
    return sorted(uids)


def parse_capabilities(lines: Lines) -> frozenset[str]:
    """Capability names, uppercased, from CAPABILITY responses and [CAPABILITY ...] codes
    (in the greeting, untagged OK, or the tagged completion's text)."""
    caps: set[str] = set()
    for line in lines:
        if type(line) is not bytes:
            continue
        if line[:2] == b"* ":
            line = line[2:]
        if line[:11].upper() == b"CAPABILITY ":
            words = line[11:]
        else:
            code = _codes(line)
            if code is None or code[0] != b"CAPABILITY":
                continue
            words = code[1]
        caps.update(w.decode("ascii", "replace").upper() for w in words.split())
    return frozenset(caps)


# --- LIST ------------------------------------------------------------------------------

SPECIAL_USE = ("\\Sent", "\\Trash", "\\Junk", "\\Drafts", "\\Archive", "\\All", "\\Flagged")
_SPECIAL_BY_UPPER = {s.upper(): s for s in SPECIAL_USE}
_UNSELECTABLE = {"\\NOSELECT", "\\NONEXISTENT"}


def _list_entry(tokens: list[Token]) -> ListEntry:
    if len(tokens) < 4 or type(tokens[1]) is not list or type(tokens[3]) is not bytes:
        raise ImapProtocolError("malformed LIST response")
    flags = tuple(_text(f) for f in tokens[1] if type(f) is bytes)
    delim = tokens[2]
    if delim is not None and type(delim) is not bytes:
        raise ImapProtocolError("malformed LIST delimiter")
    raw_name = _text(tokens[3])
    name = decode_mailbox_name(raw_name)
    if name.upper() == "INBOX":
        name = "INBOX"
    special_use = None
    selectable = True
    for flag in flags:
        upper = flag.upper()
        if special_use is None and upper in _SPECIAL_BY_UPPER:
            special_use = _SPECIAL_BY_UPPER[upper]
        elif upper in _UNSELECTABLE:
            selectable = False
    return ListEntry(
        flags=flags,
        delimiter=_text(delim) if delim else None,
        raw_name=raw_name,
        name=name,
        special_use=special_use,
        selectable=selectable,
    )


def parse_list(lines: Lines) -> list[ListEntry]:
    """The LIST (or LSUB) entries, in order.  Names may be atoms, quoted strings or
    literals; the delimiter may be NIL; ``name`` is decoded from modified UTF-7 (and any
    spelling of INBOX is ``INBOX``).  `ImapProtocolError` on an entry it cannot read."""
    entries = []
    for resp in split_responses(lines):
        first = resp[0]
        if type(first) is not bytes or first[:5].upper() not in (b"LIST ", b"LSUB "):
            continue
        entries.append(_list_entry(parse_tokens(resp)))
    return entries


# --- unsolicited news ------------------------------------------------------------------


def parse_exists_expunge(lines: Lines) -> ServerPush:
    """What untagged responses (an IDLE push, a NOOP) say changed; never raises.

    A FETCH without UID, or one that cannot be read, lands in fetch_seqs_without_uid so
    the caller can look that message up by sequence number.
    """
    exists: int | None = None
    expunged: list[int] = []
    vanished: list[int] = []
    updates: list[FlagUpdate] = []
    no_uid: list[int] = []
    for resp in split_responses(lines):
        first = resp[0]
        if type(first) is not bytes:
            continue
        m = _NUMBERED.match(first)
        if m is not None:
            kind = m.group(2).upper()
            if kind == b"EXISTS":
                exists = int(m.group(1))
            elif kind == b"EXPUNGE":
                expunged.append(int(m.group(1)))
            elif kind == b"FETCH":
                fm = _FETCH_HEAD.match(first)
                if fm is None:
                    continue
                try:
                    uid, flags, _, _, modseq, _, _, _ = _fetch_fields(resp, fm.end())
                except ImapProtocolError:
                    uid = flags = None
                if uid is not None and flags is not None:
                    updates.append(FlagUpdate(uid, flags, modseq))
                elif uid is None:
                    no_uid.append(int(m.group(1)))
        elif first[:9].upper() == b"VANISHED ":
            try:
                vanished.extend(_vanished_uids(resp))
            except ImapProtocolError:
                continue
    return ServerPush(
        exists=exists,
        expunged_seqs=tuple(expunged),
        vanished_uids=tuple(sorted(set(vanished))),
        flag_updates=tuple(updates),
        fetch_seqs_without_uid=tuple(no_uid),
    )


__all__ = [
    "FetchDefect",
    "FlagUpdate",
    "MessageMeta",
    "SPECIAL_USE",
    "ServerPush",
    "parse_body_fetch",
    "parse_capabilities",
    "parse_exists_expunge",
    "parse_fetch",
    "parse_fetch_uids",
    "parse_internaldate",
    "parse_list",
    "parse_search",
    "parse_select",
    "parse_status",
    "parse_vanished",
]

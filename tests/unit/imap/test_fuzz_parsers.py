"""Every IMAP response parser, fed anything a server could send: a value or
`ImapProtocolError`, nothing else, in time linear in the input.

Inputs come shaped as the transport hands them over (`lines`: untagged responses
without ``"* "``, literals as `bytearray` elements; see `mailbridge.imap.lexer`), built
four ways: near-valid responses from IMAP's tokens (atoms, numbers out of range, quoted
strings with escapes, literals ``{N}`` of right and wrong sizes, nested parentheses, NUL
and 8-bit bytes); mutations of real responses (the unit tests' examples); wire bytes cut
into lines; and lines of random bytes.  Each value a parser returns must be storable
(numbers within Postgres ``bigint``, text without NUL, dates that convert to UTC).

This file runs a short fixed-seed pass; ``bench/fuzz.py`` runs the same properties for as
long as asked.  The strategies and `check` here are what it imports.
"""

from __future__ import annotations

import re
import time
from array import array
from datetime import datetime, timezone
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailbridge.errors import ImapProtocolError
from mailbridge.imap import fetch
from mailbridge.imap.fetch import parse_body_fetch, parse_fetch, parse_fetch_uids
from mailbridge.imap.lexer import parse_tokens, split_responses
from mailbridge.imap.models import FetchDefect, FlagUpdate, ListEntry, MessageMeta, SelectInfo, ServerPush, StatusInfo
from mailbridge.imap.responses import (
    parse_capabilities,
    parse_exists_expunge,
    parse_list,
    parse_search,
    parse_select,
    parse_status,
    parse_vanished,
)

Lines = list[bytes | bytearray]
BIGINT = 2**63 - 1

# --- the parsers, and what they may return ------------------------------------------------


def _tokens(lines: Lines) -> list:
    return [parse_tokens(resp) for resp in split_responses(lines)]


PARSERS: dict[str, Callable[[Lines], object]] = {
    "fetch": lambda lines: list(parse_fetch(lines)),
    "fetch_uids": parse_fetch_uids,
    "body_fetch": parse_body_fetch,
    "list": parse_list,
    "status": lambda lines: parse_status(lines, ("INBOX", "Reise & Urlaub")),
    "select": parse_select,
    "search": parse_search,
    "vanished": parse_vanished,
    "pushes": parse_exists_expunge,
    "capabilities": parse_capabilities,
    "tokens": _tokens,
}
# Parsers whose contract is to never raise at all (a bad response becomes a defect or is skipped).
NEVER_RAISE = {"fetch", "pushes", "capabilities"}


def _number(value: object) -> bool:
    return value is None or (type(value) is int and 0 <= value <= BIGINT)  # type: ignore[operator]


def _text(value: object) -> bool:
    return value is None or (type(value) is str and "\x00" not in value)


def _date(value: object) -> bool:
    if value is None:
        return True
    if type(value) is not datetime or value.tzinfo is None:
        return False
    value.astimezone(timezone.utc)  # OverflowError here is what Postgres' driver would hit
    return True


def _storable(value: object) -> None:
    """Assert that a parser's result holds only what the mirror can store."""
    if isinstance(value, (list, tuple)) and not isinstance(value, (MessageMeta, FlagUpdate)):
        for item in value:
            _storable(item)
    elif isinstance(value, array):
        assert value.typecode == "q"
    elif isinstance(value, MessageMeta):
        assert _number(value.uid) and _number(value.size_bytes) and _number(value.modseq), value
        assert all(_text(f) for f in value.flags), value.flags
        assert _date(value.internal_date), value.internal_date
    elif isinstance(value, FlagUpdate):
        assert _number(value.uid) and _number(value.modseq) and all(_text(f) for f in value.flags), value
    elif isinstance(value, FetchDefect):
        assert _number(value.uid) and type(value.reason) is str and value.reason
    elif isinstance(value, SelectInfo):
        for n in (value.exists, value.uidvalidity, value.uidnext, value.highestmodseq):
            assert _number(n), value
        _storable(value.flag_updates)
        assert all(_number(u) for u in value.vanished)
    elif isinstance(value, StatusInfo):
        for n in (value.messages, value.uidnext, value.uidvalidity, value.unseen, value.highestmodseq):
            assert _number(n), value
    elif isinstance(value, ServerPush):
        assert _number(value.exists) and all(_number(n) for n in value.expunged_seqs), value
        assert all(_number(n) for n in (*value.vanished_uids, *value.fetch_seqs_without_uid)), value
        _storable(value.flag_updates)
    elif isinstance(value, ListEntry):
        assert type(value.name) is str and type(value.raw_name) is str
    elif isinstance(value, int):
        assert _number(value)


def check(name: str, lines: Lines) -> float:
    """Run parser `name` on `lines`: it returns a storable value or raises
    `ImapProtocolError` (never, for the parsers in NEVER_RAISE).  Returns the seconds it took."""
    start = time.perf_counter()
    try:
        result = PARSERS[name](lines)
    except ImapProtocolError as exc:
        elapsed = time.perf_counter() - start
        assert name not in NEVER_RAISE, f"{name} raised {exc!r}"
        assert str(exc), "an ImapProtocolError says what was wrong"
        return elapsed
    elapsed = time.perf_counter() - start
    if name != "tokens":
        _storable(result)
    return elapsed


# --- from wire bytes to lines -------------------------------------------------------------

_LITERAL_AT_END = re.compile(rb"\{(\d{1,7})\+?\}$")


def wire_to_lines(wire: bytes, tag: bytes = b"A001") -> Lines:
    """Cut server bytes into lines as the transport does (leading ``"* "`` removed, the
    tagged completion left out, ``{N}`` followed by N bytes as one bytearray), without
    ever failing: a missing final CRLF ends the last line, a short literal takes what is
    left, a literal size too large to read is read as an ordinary line end."""
    out: Lines = []
    pos, end = 0, len(wire)
    while pos < end:
        eol = wire.find(b"\r\n", pos)
        if eol < 0:
            eol = end
        line = wire[pos:eol]
        pos = eol + 2
        if line.startswith(b"* "):
            out.append(line[2:])
        elif not line.startswith(tag + b" ") and line:
            out.append(line)
        m = _LITERAL_AT_END.search(line)
        if m is not None and pos <= end:
            size = int(m.group(1))
            out.append(bytearray(wire[pos:pos + size]))
            pos += size
    return out


# --- strategies: the pieces of IMAP responses ----------------------------------------------

_BIG_DIGITS = st.integers(19, 40).map(lambda n: b"9" * n) | st.just(b"1" * 5000)
numbers = st.one_of(
    st.integers(0, 2**32).map(b"%d".__mod__),
    st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**32, BIGINT, BIGINT + 1, 2**64, 10**19, 10**30]).map(b"%d".__mod__),
    _BIG_DIGITS,
    st.sampled_from([b"-1", b"-0", b"+5", b"1_000", b"0x10", b"00000000000000000000000042", b"\xef\xbc\x91\xef\xbc\x92",
                     b"1e3", b"5.0", b" 7", b"\xd9\xa3"]),
)
_KEYWORDS = [
    b"UID", b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"MODSEQ", b"BODY[HEADER]", b"BODY[HEADER.FIELDS (SUBJECT FROM)]",
    b"BODY[]", b"BODY[]<0>", b"BINARY[]", b"RFC822", b"RFC822.HEADER", b"BINARY[HEADER]", b"X-GM-THRID", b"X-GM-LABELS",
    b"NIL", b"nil", b"EARLIER", b"ALL", b"MIN", b"MAX", b"COUNT", b"MESSAGES", b"UIDNEXT", b"UIDVALIDITY", b"UNSEEN",
    b"HIGHESTMODSEQ", b"TAG", b"\\Seen", b"\\Recent", b"\\Noselect", b"\\NonExistent", b"\\Sent", b"\\*", b"$Forwarded",
    b"[Gmail]/Sent", b"INBOX", b"inbox", b"&", b"&-", b"&ZeVnLIqe-", b"&Ze!-", b"&AAA-", b"&2D3eAA-", b"*", b"1:*", b"1:5,7",
    b"9:7", b"0", b"1:4294967295", b"1:99999999999999999999", b"4:1,2,,3", b"[", b"]", b"[UIDVALIDITY", b"{", b"}", b"\\",
    b"\x00", b"\xff\xfe", b"\xc3", b"caf\xc3\xa9", b"\r", b"\n", b"\t",
]
atoms = st.one_of(
    st.sampled_from(_KEYWORDS),
    numbers,
    st.binary(min_size=1, max_size=12).map(lambda b: b.translate(None, b" ()\"{}\r\n") or b"x"),
)
_DATES = [b"17-Jul-1996 02:44:25 -0700", b" 1-Jan-0001 00:00:00 +0100", b"31-Dec-9999 23:59:59 -2359",
          b"31-Dec-9999 23:59:59 +0000", b"01-Jan-0001 00:00:00 -0000", b"31-Feb-2024 00:00:00 +0000",
          b"17-Jul-1996 99:99:99 +9999", b"00-Jan-0000 00:00:00 +0000", b"garbage", b""]


@st.composite
def quoted(draw: st.DrawFn) -> bytes:
    """A quoted string: escapes right or wrong, sometimes unterminated."""
    if draw(st.integers(0, 3)) == 0:
        return b'"' + draw(st.sampled_from(_DATES)) + b'"'
    raw = draw(st.binary(max_size=24) | st.sampled_from([b"\\", b'"', b'\\"', b"\\\\", b"a\\", b"\x00", b"\xff"]))
    if draw(st.booleans()):
        raw = raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    else:
        raw = raw.replace(b"\r\n", b"")
    return b'"' + raw + (b"" if draw(st.integers(0, 9)) == 0 else b'"')


@st.composite
def literal(draw: st.DrawFn) -> bytes:
    """``{N}`` CRLF and data: N right, off by a little, or absurd."""
    data = draw(st.binary(max_size=40) | st.sampled_from([b"Subject: x\r\n\r\n", b"INBOX", b"(\r\n", b"{3}\r\nabc"]))
    size = draw(st.sampled_from([len(data)] * 6 + [len(data) + 1, max(0, len(data) - 1), 0, 10**6, 10**20]))
    plus = b"+" if draw(st.integers(0, 5)) == 0 else b""
    return b"{%d%s}\r\n" % (size, plus) + data


token = st.one_of(atoms, atoms, quoted(), literal(), st.just(b"NIL"))
# Parentheses as tokens of their own: drawn among the others they nest, balance or not.
piece = st.one_of(token, st.sampled_from([b"(", b"(", b")", b")", b"()", b"((", b"))"]))

_HEADS = [
    b"* %s FETCH ", b"* %s FETCH (UID %s ", b"* %s fetch ", b"* LIST ", b"* LSUB ", b"* LIST (\\HasNoChildren) \"/\" ",
    b"* STATUS ", b"* STATUS INBOX ", b"* SEARCH ", b"* SEARCH", b"* ESEARCH (TAG \"A1\") UID ", b"* ESEARCH ",
    b"* VANISHED ", b"* VANISHED (EARLIER) ", b"* %s EXISTS", b"* %s EXPUNGE", b"* %s RECENT", b"* FLAGS ",
    b"* OK [UIDVALIDITY %s] ", b"* OK [UIDNEXT %s] ", b"* OK [HIGHESTMODSEQ %s] ", b"* OK [PERMANENTFLAGS ",
    b"* OK [CLOSED] ", b"* OK [NOMODSEQ] ", b"* OK [READ-ONLY] ", b"* OK [CAPABILITY ", b"* CAPABILITY ", b"* BYE ",
    b"* NO ", b"* OK ", b"A001 OK ", b"+ ", b"", b"* ", b"*",
]


@st.composite
def response(draw: st.DrawFn) -> bytes:
    """One near-valid untagged response (without its CRLF)."""
    head = draw(st.sampled_from(_HEADS))
    while b"%s" in head:
        head = head.replace(b"%s", draw(numbers), 1)
    body = draw(st.lists(piece, max_size=12))
    sep = draw(st.sampled_from([b" ", b" ", b" ", b"", b"  "]))
    return head + sep.join(body)


@st.composite
def wire(draw: st.DrawFn) -> bytes:
    """Server bytes: responses, CRLF-separated (now and then a bare LF, CR or none at the end)."""
    responses = draw(st.lists(response(), min_size=1, max_size=4))
    end = draw(st.sampled_from([b"\r\n"] * 8 + [b"\n", b"\r", b" "]))
    data = end.join(responses) + draw(st.sampled_from([end, b"\r\n", b""]))
    if draw(st.booleans()):
        data += b"A001 OK " + draw(st.sampled_from([b"[READ-ONLY] done", b"[CAPABILITY IMAP4rev1] x", b"done"])) + b"\r\n"
    return data


# --- strategies: real responses and their mutations -----------------------------------------

FIELDS = b"BODY[HEADER.FIELDS (MESSAGE-ID SUBJECT FROM TO CC DATE IN-REPLY-TO REFERENCES)]"
_HDR = (b"Message-ID: <m1@example.com>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= aus Berlin\r\n"
        b"From: \"M\xc3\xbcller, J\xc3\xb6rg\" <Joerg@Example.DE>\r\nTo: a@example.com, B <B@Example.com>\r\n"
        b"Date: Wed, 17 Jul 2024 11:44:25 +0200\r\nReferences: <r@example.com>\r\n <p@example.com>\r\n\r\n")


def _lit(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


# Real responses (Dovecot, Gmail, Exchange), as in test_imap_fetch.py and test_imap_responses.py.
CORPUS: list[bytes] = [
    b"* 1 FETCH (UID 40 FLAGS (\\Seen \\Recent $Forwarded Junk) INTERNALDATE \"17-Jul-2024 02:44:25 -0700\" "
    b"RFC822.SIZE 4286 MODSEQ (7) " + FIELDS + b" " + _lit(_HDR) + b")\r\nA001 OK Fetch completed.\r\n",
    b"* 12 FETCH (X-GM-THRID 1801234567890123456 X-GM-MSGID 1801234567890123457 X-GM-LABELS (\"\\\\Important\" "
    b"\"\\\\Sent\" Work) UID 512 FLAGS (\\Seen) INTERNALDATE \"01-Feb-2024 08:00:00 +0000\" RFC822.SIZE 12001 "
    + FIELDS + b" " + _lit(b"Subject: hello\r\nFrom: a@gmail.com\r\n\r\n") + b")\r\nA001 OK Success\r\n",
    b"* 3 FETCH (FLAGS (\\Flagged) " + FIELDS + b" " + _lit(b"Subject: later\r\n\r\n")
    + b" MODSEQ (12) UID 42 RFC822.SIZE 10 INTERNALDATE \"01-Jan-2024 00:00:00 +0100\")\r\nA001 OK done\r\n",
    b"* 1 FETCH (UID 10 FLAGS (\\Seen \\Recent) MODSEQ (100))\r\n* 2 FETCH (FLAGS (\\Deleted) UID 11)\r\n"
    b"* 3 FETCH (UID 12 FLAGS ())\r\n* 4 FETCH (UID 13 MODSEQ (5))\r\n* 5 FETCH (UID 4)\r\nA001 OK\r\n",
    b"* 12 FETCH (UID 40 BODY[] " + _lit(b"From: a@b.c\r\n\r\nline with ) and ( and {5}\r\n\x00\xff\r\n")
    + b")\r\n* 12 FETCH (BODY[] NIL UID 41 FLAGS (\\Seen))\r\nA001 OK\r\n",
    b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded Junk)\r\n"
    b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded Junk \\*)] Flags permitted.\r\n"
    b"* 172 EXISTS\r\n* 1 RECENT\r\n* OK [UNSEEN 12] First unseen.\r\n* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"
    b"* OK [UIDNEXT 4392] Predicted next UID\r\n* OK [HIGHESTMODSEQ 715194045007] Highest\r\n"
    b"* OK [NOMODSEQ] x\r\nA001 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).\r\n",
    b"* 3 EXPUNGE\r\n* OK [CLOSED] Previous mailbox closed.\r\n* 314 EXISTS\r\n* OK [UIDVALIDITY 67890007] U\r\n"
    b"* VANISHED (EARLIER) 41,43:116,118,120:211,214:540\r\n"
    b"* 49 FETCH (UID 117 FLAGS (\\Seen \\Answered) MODSEQ (90060115194045001))\r\nA001 OK [READ-ONLY] selected\r\n",
    b'* LIST (\\HasNoChildren) "." INBOX\r\n* LIST (\\HasChildren \\Noselect) "/" "[Gmail]"\r\n'
    b'* LIST (\\All \\HasNoChildren) "/" "[Gmail]/All Mail"\r\n* LIST (\\HasNoChildren) "." "Reise &- Urlaub.&ZeVnLIqe-"\r\n'
    b"* LIST () \"/\" " + _lit(b"Reise \"Urlaub\" 2024") + b"\r\n* LIST (\\NonExistent) NIL " + _lit(b"Odd\\Name")
    + b"\r\n* LIST (\\HasNoChildren) \"\\\\\" \"Back\\\\slash \\\"q\\\"\"\r\n"
    b"* LIST (\\Subscribed) \"/\" \"Archive/2024\" (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n* LSUB () \".\" Sent\r\n"
    b'* LIST () "/" "Gr\xc3\xbc\xc3\x9fe"\r\n* LIST () "/" "Broken &Ze!-"\r\nA001 OK done\r\n',
    b'* STATUS "INBOX" (MESSAGES 231 UIDNEXT 44292 UIDVALIDITY 1 UNSEEN 0 HIGHESTMODSEQ 7)\r\n'
    b"* STATUS " + _lit(b"Reise Urlaub") + b" (MESSAGES 3 UIDNEXT 4)\r\nA001 OK\r\n",
    b"* SEARCH 2 84 882\r\n* SEARCH 1 5 (MODSEQ 917162500)\r\n* ESEARCH (TAG \"A282\") UID MIN 2 COUNT 6 ALL 1:5,7\r\n"
    b"* ESEARCH (TAG \"A283\") UID ALL 9:7,1,3:4,8\r\nA001 OK\r\n",
    b"* VANISHED (EARLIER) 41,43:46\r\n* 3 EXISTS\r\n* VANISHED 50\r\nA001 OK\r\n",
    b"* 4 EXPUNGE\r\n* 23 EXISTS\r\n* 5 FETCH (FLAGS (\\Seen \\Recent) UID 77 MODSEQ (12))\r\n* 6 FETCH (FLAGS (\\Flagged))\r\n"
    b"* VANISHED 9:10,12\r\n* STATUS Archive (MESSAGES 2 UIDNEXT 3 UNSEEN 2 HIGHESTMODSEQ 2)\r\n"
    b"* LIST () \"/\" New\r\n* OK Still here\r\n",
    b"* OK [CAPABILITY IMAP4rev1 SASL-IR ID ENABLE IDLE LITERAL+ AUTH=PLAIN] Dovecot ready.\r\n"
    b"* CAPABILITY IMAP4rev1 condstore QRESYNC UIDPLUS MOVE\r\nA001 OK [CAPABILITY IMAP4rev1 SPECIAL-USE] in\r\n",
]


@st.composite
def mutated(draw: st.DrawFn, corpus: list[bytes] = CORPUS) -> bytes:
    """A real response with one to four edits: bytes cut, replaced, inserted or repeated,
    numbers swapped for absurd ones, the end cut off."""
    data = bytearray(draw(st.sampled_from(corpus)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        op = draw(st.integers(0, 6))
        i = draw(st.integers(0, len(data) - 1))
        j = draw(st.integers(i, min(len(data), i + 16)))
        if op == 0:
            del data[i:j]
        elif op == 1:
            data[i:j] = draw(st.binary(min_size=1, max_size=6))
        elif op == 2:
            data[i:i] = draw(piece)
        elif op == 3:
            data[i:i] = data[i:j] * draw(st.integers(2, 5))
        elif op == 4:  # a number becomes another one
            m = re.compile(rb"\d+").search(data, i)
            if m is not None:
                data[m.start():m.end()] = draw(numbers)
        elif op == 5:
            del data[i:]
        else:
            data[i:i] = draw(st.sampled_from([b"(", b")", b'"', b"\\", b"[", b"]", b"{", b"}", b"\r\n", b"\x00", b" "]))
    return bytes(data)


_line = st.binary(max_size=48)
raw_lines = st.lists(st.one_of(_line, _line, _line.map(bytearray)), max_size=8)


@st.composite
def shuffled_lines(draw: st.DrawFn) -> Lines:
    """Lines from a real or generated response with their pairing broken: literals
    turned into lines and back, dropped, repeated, or moved."""
    lines = wire_to_lines(draw(st.sampled_from(CORPUS) | wire()))
    for _ in range(draw(st.integers(1, 3))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.integers(0, 3))
        if op == 0:
            item = lines[i]
            lines[i] = bytes(item) if type(item) is bytearray else bytearray(item)
        elif op == 1:
            del lines[i]
        elif op == 2:
            lines.insert(i, lines[i])
        else:
            lines.insert(draw(st.integers(0, len(lines))), lines.pop(i))
    return lines


inputs: st.SearchStrategy[Lines] = st.one_of(
    wire().map(wire_to_lines),
    mutated().map(wire_to_lines),
    st.binary(max_size=200).map(wire_to_lines),
    raw_lines,
    shuffled_lines(),
)

# --- long inputs, built to find super-linear work -----------------------------------------


def long_bodies(n: int) -> dict[str, bytes]:
    """About `n` bytes each of what a scanner might treat specially: runs of one
    character, deep nesting, huge numbers, escapes."""
    return {
        "[": b"[" * n, "[a": b"[a" * (n // 2), '"\\': b'"\\' * (n // 2), '"': b'"' * n, "\\": b"\\" * n,
        "(": b"(" * n, ")": b")" * n, "()": b"(" * (n // 2) + b")" * (n // 2), "(a)": b"(a) " * (n // 4),
        "{": b"{" * n, "{1}": b"{1}" * (n // 3), "digits": b"9" * n, "numbers": b"1 " * (n // 2),
        "NIL": b"NIL " * (n // 4), "&": b"&" * n, "&A": b"&A" * (n // 2), "NUL": b"\x00" * n, "8bit": b"\xff" * n,
        "spaces": b" " * n, "quoted": b'"' + b"a" * n + b'"', "quoted escapes": b'"' + b'\\"' * (n // 2) + b'"',
        "UID": b"UID " * (n // 4), "range": b"1:2," * (n // 4), "star": b"*" * n, "colon": b":" * n,
        "brackets": b"[]" * (n // 2), "BODY[": b"BODY[" * (n // 5), "open bracket": b"BODY[HEADER " + b"x " * (n // 2),
    }


# The first lines that reach each parser's scanners (a body from `long_bodies` follows).
HEADS: dict[str, list[bytes]] = {
    "fetch": [b"1 FETCH (", b"1 FETCH (UID 1 FLAGS (", b"1 FETCH (UID 1 INTERNALDATE ", b"1 FETCH (UID "],
    "fetch_uids": [b"1 FETCH (", b"1 FETCH (UID "],
    "body_fetch": [b"1 FETCH (UID 1 BODY[] ", b"1 FETCH (BODY[] "],
    "list": [b"LIST (", b'LIST () "/" '],
    "status": [b"STATUS INBOX (", b"STATUS "],
    "select": [b"FLAGS (", b"OK [PERMANENTFLAGS (", b"OK [UIDVALIDITY ", b"VANISHED (EARLIER) ", b"1 FETCH ("],
    "search": [b"SEARCH ", b"ESEARCH UID ALL "],
    "vanished": [b"VANISHED "],
    "pushes": [b"1 FETCH (", b"VANISHED ", b"STATUS ", b"1 EXISTS "],
    "capabilities": [b"CAPABILITY ", b"OK [CAPABILITY "],
    "tokens": [b""],
}


def long_inputs(name: str, n: int, every_head: bool = False) -> list[tuple[str, Lines]]:
    """(description, lines) of about `n` bytes for parser `name`: each of its heads (or,
    with `every_head`, every parser's) followed by each long body, and a few made of many
    small responses."""
    heads = sorted({h for hs in HEADS.values() for h in hs}) if every_head else HEADS[name]
    cases: list[tuple[str, Lines]] = [
        (f"{head.decode()!r} + {what}", [head + body, b"done"]) for head in heads for what, body in long_bodies(n).items()]
    cases += [
        ("many FETCH", [b"%d FETCH (UID %d FLAGS (\\Seen))" % (i, i) for i in range(1, n // 30)]),
        ("many STATUS", [b"STATUS f%d (MESSAGES 1)" % i for i in range(n // 24)]),
        ("many EXISTS", [b"%d EXISTS" % i for i in range(n // 10)]),
        ("many literals", [b"1 FETCH (UID 1 BODY[] {1}", bytearray(b"x"), b" X {1}"] * (n // 24)),
        ("one literal", [b"1 FETCH (UID 1 BODY[] {%d}" % n, bytearray(n), b")"]),
        ("many VANISHED", [b"VANISHED %d:%d" % (i, i + 9) for i in range(1, n // 2, 10)]),
        ("many ESEARCH", [b"ESEARCH UID ALL %d:%d" % (i, i + 9) for i in range(1, n // 2, 10)]),
        ("many lines", [b"x"] * (n // 2)),
    ]
    return cases


# --- the short, fixed-seed run ------------------------------------------------------------

FIXED = settings(derandomize=True, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(FIXED, max_examples=300)
@given(lines=inputs)
def test_any_input_gives_a_value_or_a_protocol_error(lines: Lines) -> None:
    for name in PARSERS:
        check(name, lines)


@settings(FIXED, max_examples=60)
@given(st.lists(st.one_of(st.integers(0, 2**70), st.sampled_from([0, 2**32, BIGINT, BIGINT + 1, 10**19])),
                min_size=1, max_size=4),
       st.sampled_from(_DATES))
def test_numbers_and_dates_out_of_range(values: list[int], idate: bytes) -> None:
    """Every number field the parsers read, at any value, and INTERNALDATEs at the ends
    of time: within bigint and convertible to UTC, or refused."""
    template = (b"* # FETCH (UID # FLAGS () INTERNALDATE \"%s\" RFC822.SIZE # MODSEQ (#) BODY[HEADER] {0}\r\n)\r\n"
                b"* # FETCH (UID # FLAGS () MODSEQ (#))\r\n* # FETCH (UID #)\r\n* # EXISTS\r\n* # EXPUNGE\r\n"
                b"* OK [UIDVALIDITY #] x\r\n* OK [UIDNEXT #] x\r\n* OK [HIGHESTMODSEQ #] x\r\n"
                b"* STATUS INBOX (MESSAGES # UIDNEXT # HIGHESTMODSEQ #)\r\n* SEARCH # #\r\n"
                b"* ESEARCH (TAG \"A\") UID ALL #\r\n* VANISHED #\r\nA001 OK\r\n") % idate
    pieces = template.split(b"#")
    wire = pieces[0] + b"".join(b"%d" % values[i % len(values)] + piece for i, piece in enumerate(pieces[1:]))
    for name in PARSERS:
        check(name, wire_to_lines(wire))


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_long_inputs_take_linear_time(name: str) -> None:
    """32 KB of what would make a scanner quadratic: each parse in a few ms here, where
    quadratic work (a "[" or '"\\' rescanning the rest of the line) took 1.6 and 6 s.
    bench/fuzz.py runs them at 1 MB."""
    slow = []
    for what, lines in long_inputs(name, 32 * 1024):
        elapsed = check(name, lines)
        if elapsed > 0.5:
            slow.append(f"{what}: {elapsed:.2f} s")
    assert not slow, slow


def fast_path_agrees(lines: Lines) -> None:
    """Where the FETCH item scanner's fast path reads a response at all, the tokenizer
    reads the same from it (so a malformed response cannot slip through the fast one)."""
    for resp in split_responses(lines):
        first = resp[0]
        m = fetch.FETCH_HEAD.match(first) if type(first) is bytes else None
        if m is None:
            continue
        fast = fetch._fetch_fields_fast(resp, m.end())
        if fast is not None:
            assert fast == fetch._fetch_fields_generic(resp, m.end())


@settings(FIXED, max_examples=200)
@given(mutated(CORPUS[:4]).map(wire_to_lines))
def test_fast_fetch_path_agrees_with_the_tokenizer_on_mutated_responses(lines: Lines) -> None:
    fast_path_agrees(lines)

"""Parsers for the responses mailbridge's IMAP commands get back.

Each takes a completed command's `lines` exactly as the transport hands them over (see
`mailbridge.imap.lexer` for the shape: untagged responses without ``"* "``, literals as
`bytearray` elements; the tagged completion's text only where a caller appends it, as
SELECT's ``[READ-ONLY]`` lives there).  Untagged responses a parser
does not care about (``EXISTS``, ``EXPUNGE``, ``OK [...]`` ... interleaved anywhere) are
skipped.  They raise `ImapProtocolError` only where going on would be wrong (a LIST
entry we cannot read must not look like a deleted folder), and nothing else on any input.
Numbers are within `MAX_NUMBER` (Postgres' bigint); the UID sets of all VANISHED or all
ESEARCH responses of one command expand to at most `MAX_PARSED_UIDS` UIDs together.
FETCH responses have their own module, `mailbridge.imap.fetch`.
"""

from __future__ import annotations

import re
from array import array

from mailbridge.errors import ImapProtocolError
from mailbridge.imap.fetch import FETCH_HEAD, fetch_items
from mailbridge.imap.lexer import Lines, Part, Token, brief, parse_tokens, split_responses, token_number, token_text
from mailbridge.imap.models import FetchItems, FlagUpdate, ListEntry, SelectInfo, ServerPush, StatusInfo
from mailbridge.imap.uidset import MAX_PARSED_UIDS, uid_set_spans
from mailbridge.imap.utf7 import decode_mailbox_name

_NUMBERED = re.compile(rb"(\d+) ([A-Za-z]+)")
# "OK [CODE args] text" untagged, or "[CODE args] text" as the tagged completion's text
_CODE = re.compile(rb"(?:(?:OK|NO|BAD|BYE|PREAUTH) )?\[([A-Za-z0-9.\-]+)(?: ([^\]]*))?\]", re.I)
# 19 digits in a row: more than any UID or message number has (they fit in 10).
_LONG_DIGITS = re.compile(rb"\d{19}")


def _codes(first: bytes) -> tuple[bytes, bytes] | None:
    m = _CODE.match(first)
    if m is None:
        return None
    return m.group(1).upper(), m.group(2) or b""


# --- mailbox state ---------------------------------------------------------------------


def _flag_tuple(value: Token) -> tuple[str, ...]:
    if type(value) is not list:
        raise ImapProtocolError("flag list is not a list")
    return tuple(token_text(f) for f in value if type(f) is bytes)


def parse_select(lines: Lines) -> SelectInfo:
    """What a SELECT / EXAMINE response says about the mailbox.

    Reads EXISTS, FLAGS, the OK [UIDVALIDITY/UIDNEXT/PERMANENTFLAGS/HIGHESTMODSEQ/NOMODSEQ]
    codes, [READ-ONLY]/[READ-WRITE] (untagged or in the tagged text), and with QRESYNC the
    VANISHED (EARLIER) UIDs and FETCH flag changes.  Anything before an ``OK [CLOSED]``
    belongs to the previously selected mailbox and is dropped.
    """
    state: dict = {}
    vanished: list[int] = []
    expanded = 0  # UIDs read from VANISHED, [CLOSED] or not
    updates: list[FlagUpdate] = []
    for resp in split_responses(lines):
        first = resp[0]
        if type(first) is not bytes:
            continue
        m = _NUMBERED.match(first)
        if m is not None:
            kind = m.group(2).upper()
            if kind == b"EXISTS":
                state["exists"] = token_number(m.group(1), "EXISTS")
            elif kind == b"FETCH":
                fm = FETCH_HEAD.match(first)
                if fm is not None:
                    try:
                        items = fetch_items(resp, fm.end())
                    except ImapProtocolError:
                        continue
                    if items.uid is not None and items.flags is not None:
                        updates.append(FlagUpdate(items.uid, items.flags, items.modseq, items.labels))
            continue
        upper = first[:9].upper()
        if upper.startswith(b"FLAGS "):
            tokens = parse_tokens(resp)
            state["flags"] = _flag_tuple(tokens[1] if len(tokens) > 1 else None)
            continue
        if upper.startswith(b"VANISHED "):
            uids = _vanished_uids(resp, MAX_PARSED_UIDS - expanded)
            expanded += len(uids)
            vanished.extend(uids)
            continue
        code = _codes(first)
        if code is None:
            continue
        name, args = code
        if name in (b"UIDVALIDITY", b"UIDNEXT", b"HIGHESTMODSEQ"):
            state[name.decode().lower()] = token_number(args.strip(), name.decode())
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


def parse_status(lines: Lines, mailbox: tuple[str, ...] = ()) -> StatusInfo:
    """The counters of the STATUS response about `mailbox` (any of these spellings: a
    server may echo the name encoded or decoded), else of the first one: under NOTIFY,
    STATUS responses about other mailboxes may come along.  `ImapProtocolError` if there
    is none, or it is malformed."""
    chosen: list[Token] | None = None
    for resp in split_responses(lines):
        first = resp[0]
        if type(first) is not bytes or first[:7].upper() != b"STATUS ":
            continue
        tokens = parse_tokens(resp)
        if chosen is None:
            chosen = tokens
        if mailbox and len(tokens) >= 2 and type(tokens[1]) is bytes and token_text(tokens[1]) in mailbox:
            chosen = tokens
            break
    if chosen is None:
        raise ImapProtocolError("no STATUS response")
    return _status_info(chosen)


def _status_info(tokens: list[Token]) -> StatusInfo:
    if len(tokens) < 3 or type(tokens[-1]) is not list or len(tokens[-1]) % 2:
        raise ImapProtocolError("malformed STATUS response")
    items = tokens[-1]
    values: dict[bytes, int] = {}
    for i in range(0, len(items), 2):
        name = items[i]
        if type(name) is bytes:
            values[name.upper()] = token_number(items[i + 1], name.decode("ascii", "replace"))
    return StatusInfo(
        messages=values.get(b"MESSAGES"),
        uidnext=values.get(b"UIDNEXT"),
        uidvalidity=values.get(b"UIDVALIDITY"),
        unseen=values.get(b"UNSEEN"),
        highestmodseq=values.get(b"HIGHESTMODSEQ"),
    )


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
    if first[6:end].translate(None, b"0123456789 ") or _LONG_DIGITS.search(first, 6, end) is not None:
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
    expanded = 0  # UIDs read from ESEARCH ALL sets
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
                    out.append(token_number(tok, "SEARCH result"))
        elif head.startswith(b"ESEARCH"):
            tokens = parse_tokens(resp)
            for i in range(1, len(tokens) - 1):
                tok, following = tokens[i], tokens[i + 1]
                if type(tok) is bytes and tok.upper() == b"ALL" and type(following) is bytes:
                    for lo, hi in _uid_spans(following, MAX_PARSED_UIDS - expanded, "ESEARCH"):
                        out.extend(range(lo, hi + 1))
                        expanded += hi - lo + 1
                    break
    return out


def _uid_spans(text: bytes, limit: int, what: str) -> list[tuple[int, int]]:
    """The (first, last) spans of a UID set as a response wrote it.  ImapProtocolError when
    it is malformed, holds a number of 19 digits or more (UIDs have 32 bits), or more
    than `limit` UIDs."""
    if _LONG_DIGITS.search(text) is not None:
        raise ImapProtocolError(f"{what} UID set holds a number out of range: {brief(text)}")
    return uid_set_spans(text.decode("ascii", "replace"), limit=limit)


def _vanished_uids(resp: list[Part], limit: int = MAX_PARSED_UIDS) -> list[int]:
    """The UIDs of one VANISHED response (at most `limit`, else ImapProtocolError)."""
    tokens = parse_tokens(resp)
    sets = [t for t in tokens[1:] if type(t) is bytes]
    if len(sets) != 1:
        raise ImapProtocolError("malformed VANISHED response")
    uids: list[int] = []
    for lo, hi in _uid_spans(sets[0], limit, "VANISHED"):
        uids.extend(range(lo, hi + 1))
    return uids


def parse_vanished(lines: Lines) -> list[int]:
    """The UIDs of all VANISHED responses (with or without EARLIER), ascending, unique."""
    uids: set[int] = set()
    expanded = 0
    for resp in split_responses(lines):
        first = resp[0]
        if type(first) is bytes and first[:9].upper() == b"VANISHED ":
            found = _vanished_uids(resp, MAX_PARSED_UIDS - expanded)
            expanded += len(found)
            uids.update(found)
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
    flags = tuple(token_text(f) for f in tokens[1] if type(f) is bytes)
    delim = tokens[2]
    if delim is not None and type(delim) is not bytes:
        raise ImapProtocolError("malformed LIST delimiter")
    raw_name = token_text(tokens[3])
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
        delimiter=token_text(delim) if delim else None,
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


_PUSHED = (b"EXISTS", b"EXPUNGE", b"FETCH")


def parse_exists_expunge(lines: Lines) -> ServerPush:
    """What untagged responses (an IDLE push, a NOOP) say changed; never raises.

    A FETCH without UID, or one that cannot be read, lands in fetch_seqs_without_uid so
    the caller can look that message up by sequence number.  A STATUS (sent under
    NOTIFY for another mailbox) adds that mailbox's name, as the server wrote it, to
    `elsewhere`; a LIST (NOTIFY's MailboxName event) sets `mailboxes_changed`.
    """
    listed = False
    elsewhere: dict[str, None] = {}  # in the order first named
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
            if kind not in _PUSHED:
                continue
            try:
                number = token_number(m.group(1), kind.decode())
            except ImapProtocolError:
                continue  # no mailbox holds that many messages: nothing to act on
            if kind == b"EXISTS":
                exists = number
            elif kind == b"EXPUNGE":
                expunged.append(number)
            else:
                fm = FETCH_HEAD.match(first)
                if fm is None:
                    continue
                try:
                    items: FetchItems | None = fetch_items(resp, fm.end())
                except ImapProtocolError:
                    items = None  # unreadable: as if it carried no UID
                if items is None or items.uid is None:
                    no_uid.append(number)
                elif items.flags is not None:
                    updates.append(FlagUpdate(items.uid, items.flags, items.modseq, items.labels))
        elif first[:9].upper() == b"VANISHED ":
            try:
                vanished.extend(_vanished_uids(resp, MAX_PARSED_UIDS - len(vanished)))
            except ImapProtocolError:
                continue
        elif first[:7].upper() == b"STATUS ":
            try:
                tokens = parse_tokens(resp)
            except ImapProtocolError:
                continue
            if len(tokens) >= 2 and type(tokens[1]) is bytes:
                elsewhere.setdefault(token_text(tokens[1]))
        elif first[:5].upper() == b"LIST ":
            listed = True
    return ServerPush(
        exists=exists,
        expunged_seqs=tuple(expunged),
        vanished_uids=tuple(sorted(set(vanished))),
        flag_updates=tuple(updates),
        fetch_seqs_without_uid=tuple(no_uid),
        elsewhere=tuple(elsewhere),
        mailboxes_changed=listed,
    )


__all__ = [
    "SPECIAL_USE",
    "ServerPush",
    "parse_capabilities",
    "parse_exists_expunge",
    "parse_list",
    "parse_search",
    "parse_select",
    "parse_status",
    "parse_vanished",
]

"""Value types the IMAP parsers produce.  Immutable, slotted, no behaviour.

The two made once per message inside the parsers (`FetchItems`, `HeaderFields`) are
NamedTuples: on the initial sync's hot path a frozen dataclass costs about 1 µs more per
message (some 6 % of parsing).  Read them by name all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class MessageMeta:
    """One message's metadata, as a metadata FETCH response describes it."""

    uid: int
    flags: tuple[str, ...]  # as the server names them, '\\Recent' removed, order as sent
    internal_date: datetime | None  # tz-aware
    size_bytes: int | None
    message_id: str | None  # without angle brackets; None when absent (never invented)
    subject: str | None  # RFC 2047 decoded, unfolded; '' when empty, None when absent
    from_name: str | None
    from_email: str | None  # lowercased
    to_emails: tuple[str, ...]  # lowercased addresses
    cc_emails: tuple[str, ...]
    sent_at: datetime | None  # Date: header, tz-aware, None if missing/unparseable
    in_reply_to: str | None  # first msg-id, without brackets
    references: tuple[str, ...]  # msg-ids without brackets, in order
    modseq: int | None  # MODSEQ (n) when present
    defects: tuple[str, ...] = ()  # short descriptions of what could not be parsed
    email_id: str | None = None  # RFC 8474 EMAILID, or Gmail's X-GM-MSGID (decimal)
    thread_id: str | None = None  # RFC 8474 THREADID, or Gmail's X-GM-THRID (decimal)
    labels: tuple[str, ...] | None = None  # X-GM-LABELS, decoded; None when not sent


class FetchItems(NamedTuple):
    """The items one FETCH response carried, as read, before they make a `MessageMeta` or a
    `FlagUpdate`; None where an item was not sent."""

    uid: int | None
    flags: tuple[str, ...] | None  # '\\Recent' removed, order as sent
    internal_date: datetime | None  # also None when sent but unparseable (a defect says so)
    size_bytes: int | None
    modseq: int | None
    header: bytes | None  # the header section: b"" when not sent or empty, None when NIL or no string
    has_meta: bool  # INTERNALDATE, RFC822.SIZE or a header section was sent
    defects: tuple[str, ...] = ()
    email_id: str | None = None  # EMAILID / X-GM-MSGID
    thread_id: str | None = None  # THREADID / X-GM-THRID
    labels: tuple[str, ...] | None = None  # X-GM-LABELS


@dataclass(frozen=True, slots=True)
class FlagUpdate:
    """A FETCH response that carries only flags (flag scan, CHANGEDSINCE, IDLE push)."""

    uid: int
    flags: tuple[str, ...]  # '\\Recent' removed, order as sent
    modseq: int | None = None
    labels: tuple[str, ...] | None = None  # X-GM-LABELS when the response carried them (None: unknown)


@dataclass(frozen=True, slots=True)
class FetchDefect:
    """A FETCH response that could not be parsed at all; the others still are."""

    uid: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class SelectInfo:
    """What SELECT / EXAMINE told us about a mailbox."""

    exists: int = 0
    uidvalidity: int | None = None
    uidnext: int | None = None
    highestmodseq: int | None = None
    nomodseq: bool = False
    flags: tuple[str, ...] = ()
    permanent_flags: tuple[str, ...] = ()
    vanished: tuple[int, ...] = ()  # UIDs from VANISHED (EARLIER) in a QRESYNC select
    read_only: bool = False
    # Extension: the FETCH (UID FLAGS MODSEQ) responses a QRESYNC select carries.
    flag_updates: tuple[FlagUpdate, ...] = ()


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One LIST (or LSUB) response."""

    flags: tuple[str, ...]
    delimiter: str | None
    raw_name: str  # exactly as on the wire (modified UTF-7), unquoted
    name: str  # decoded
    special_use: str | None  # '\\Sent', '\\Trash', ... when one is in flags
    selectable: bool  # False for \\Noselect / \\NonExistent


@dataclass(frozen=True, slots=True)
class StatusInfo:
    """A STATUS response's counters (None when not asked for / not sent)."""

    messages: int | None = None
    uidnext: int | None = None
    uidvalidity: int | None = None
    unseen: int | None = None
    highestmodseq: int | None = None


@dataclass(frozen=True, slots=True)
class ServerPush:
    """Untagged news from the server (IDLE, NOOP): what changed in the selected mailbox."""

    exists: int | None = None
    expunged_seqs: tuple[int, ...] = ()  # in the order sent (each shifts later ones)
    vanished_uids: tuple[int, ...] = ()
    flag_updates: tuple[FlagUpdate, ...] = ()
    fetch_seqs_without_uid: tuple[int, ...] = ()
    elsewhere: tuple[str, ...] = ()  # mailboxes a NOTIFY STATUS says changed, as the server named them
    mailboxes_changed: bool = False  # a NOTIFY LIST: a mailbox was created, renamed or deleted

    @property
    def changed(self) -> bool:
        """Whether it says the selected mailbox changed (not just a keep-alive "still here")."""
        return bool(self.exists is not None or self.expunged_seqs or self.vanished_uids or self.flag_updates
                    or self.fetch_seqs_without_uid)


class HeaderFields(NamedTuple):
    """The fields `headers.extract_header_fields` takes from a raw header block."""

    message_id: str | None = None
    subject: str | None = None
    from_name: str | None = None
    from_email: str | None = None
    to_emails: tuple[str, ...] = ()
    cc_emails: tuple[str, ...] = ()
    sent_at: datetime | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    defects: tuple[str, ...] = ()


__all__ = [
    "FetchDefect",
    "FetchItems",
    "FlagUpdate",
    "HeaderFields",
    "ListEntry",
    "MessageMeta",
    "SelectInfo",
    "ServerPush",
    "StatusInfo",
]

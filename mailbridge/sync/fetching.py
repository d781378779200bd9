"""Reading one selected folder from the server: UID searches and the metadata FETCH,
parsed.  The folder sync (`mailbridge.sync.folder`) and its reconcile
(`mailbridge.sync.reconcile`) read through the same `FolderReader`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from itertools import islice
from typing import Callable, Sequence

import trio

from mailbridge.aio.imap import ImapSession
from mailbridge.imap.fetch import parse_fetch
from mailbridge.imap.models import FetchDefect, MessageMeta
from mailbridge.imap.responses import parse_search
from mailbridge.imap.uidset import split_for_command

log = logging.getLogger(__name__)

HEADER_FIELDS = "MESSAGE-ID SUBJECT FROM TO CC DATE IN-REPLY-TO REFERENCES"
META_ITEMS = f"(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS ({HEADER_FIELDS})])"
META_ITEMS_MODSEQ = f"(UID FLAGS INTERNALDATE RFC822.SIZE MODSEQ BODY.PEEK[HEADER.FIELDS ({HEADER_FIELDS})])"
# FETCH responses parsed between checkpoints: about a millisecond, so the fetch and the
# write beside the parse are sent and read promptly (at 100, a 2,000-row write spent more
# time waiting for its parameters to be sent than in Postgres)
PARSE_SLICE = 10
GMAIL_ITEMS = "X-GM-MSGID X-GM-THRID X-GM-LABELS"  # where the server offers X-GM-EXT-1
OBJECT_ITEMS = "EMAILID THREADID"  # where it offers RFC 8474 OBJECTID
FLAG_ITEMS = "(UID FLAGS)"
FLAG_ITEMS_GMAIL = "(UID FLAGS X-GM-LABELS)"  # a label change bumps MODSEQ: CHANGEDSINCE finds it

RawFetch = list[bytes | bytearray]  # one metadata UID FETCH command's untagged lines


def since_criterion(retention_days: int | None, now: datetime) -> str:
    """The SEARCH criterion (`` SINCE d-Mon-yyyy``, with its leading space) of a retention
    window of `retention_days` ending `now`; empty without a window."""
    if not retention_days:
        return ""
    day = (now - timedelta(days=retention_days)).date()
    return f" SINCE {day.day}-{day.strftime('%b')}-{day.year}"


def meta_items(session: ImapSession) -> str:
    """The metadata FETCH items for `session`'s server: META_ITEMS (with MODSEQ under
    CONDSTORE), plus Gmail's ids and labels (X-GM-EXT-1) and RFC 8474's ids (OBJECTID)
    where offered."""
    extra = [items for cap, items in (("X-GM-EXT-1", GMAIL_ITEMS), ("OBJECTID", OBJECT_ITEMS))
             if session.has(cap)]
    items = META_ITEMS_MODSEQ if session.condstore else META_ITEMS
    if not extra:
        return items
    head, _, body = items.partition(" BODY.PEEK[")
    return f"{head} {' '.join(extra)} BODY.PEEK[{body}"


def flag_items(session: ImapSession) -> str:
    """The items of a flags-only FETCH (flag scan, CHANGEDSINCE): with X-GM-LABELS on
    Gmail, so a label change reaches the mirror as a flag change does."""
    return FLAG_ITEMS_GMAIL if session.has("X-GM-EXT-1") else FLAG_ITEMS


class FolderReader:
    """UID searches and metadata fetches in the folder `session` has selected."""

    def __init__(self, session: ImapSession, folder_name: str, *, retention_days: int | None = None,
                 now: Callable[[], datetime]) -> None:
        self.session = session
        self.folder_name = folder_name  # for log lines
        self.retention_days = retention_days
        self.now = now

    def retention_criterion(self) -> str:
        """`since_criterion` of the retention window as of now (empty without one)."""
        return since_criterion(self.retention_days, self.now())

    async def search(self, criteria: str) -> Sequence[int]:
        """The UIDs ``UID SEARCH criteria`` finds, ascending and unique (a compact array
        when the server sent them so, as servers do: no copy for a big folder)."""
        response = await self.session.uid_search(criteria)
        uids = parse_search(response.lines)
        if all(a < b for a, b in zip(uids, islice(uids, 1, None))):
            return uids  # already ascending and unique (as servers send them)
        return sorted(set(uids))

    async def fetch_raw(self, uids: list[int]) -> list[RawFetch]:
        """The unparsed metadata FETCH responses (one `lines` per command) of `uids`."""
        items = meta_items(self.session)
        responses = []
        for uid_set in split_for_command(uids):
            response = await self.session.uid_fetch(uid_set, items)
            responses.append(response.lines)
            del response
        return responses

    async def parse_meta(self, uids: list[int], responses: list[RawFetch]) -> tuple[list[MessageMeta], int]:
        """The messages of `uids` in `responses` (emptied as it goes), ascending, and the
        number of defects; a response that cannot be read gives a placeholder row (see
        `placeholder`).  It yields to other tasks every PARSE_SLICE messages, so a
        concurrent fetch and database write make progress."""
        wanted = set(uids)
        metas: dict[int, MessageMeta] = {}
        defects = 0
        responses.reverse()
        while responses:
            lines = responses.pop()
            n = 0
            for item in parse_fetch(lines):
                n += 1
                if n % PARSE_SLICE == 0:
                    await trio.sleep(0)
                if isinstance(item, MessageMeta):
                    if item.uid in wanted:
                        metas[item.uid] = item
                        defects += bool(item.defects)
                elif isinstance(item, FetchDefect):
                    defects += 1
                    log.warning("folder %r: unparseable FETCH response for UID %s: %s",
                                self.folder_name, item.uid, item.reason)
                    if item.uid in wanted and item.uid not in metas:
                        metas[item.uid] = placeholder(item.uid, item.reason)
            del lines
        return [metas[u] for u in sorted(metas)], defects

    async def fetch_meta(self, uids: list[int]) -> tuple[list[MessageMeta], int]:
        """`parse_meta` of `fetch_raw`: the messages of `uids`, ascending, and the defects."""
        return await self.parse_meta(uids, await self.fetch_raw(uids))


def placeholder(uid: int, reason: str, *, defect: str = "unparseable FETCH response") -> MessageMeta:
    """A row for a message whose FETCH response could not be parsed (or whose values
    could not be stored): the UID is real, nothing else is claimed.  Being without a
    size, it is fetched again by the folder's repair."""
    return MessageMeta(uid=uid, flags=(), internal_date=None, size_bytes=None, message_id=None,
                       subject=None, from_name=None, from_email=None, to_emails=(), cc_emails=(),
                       sent_at=None, in_reply_to=None, references=(), modseq=None,
                       defects=(f"{defect}: {reason}",))

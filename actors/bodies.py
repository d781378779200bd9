"""Answering a FetchBody request: one message's raw source from the owning session."""

from __future__ import annotations

from actors.messages import FetchBody
from mailbridge.aio.imap import ImapSession
from mailbridge.errors import MessageGone, MessageTooLarge
from mailbridge.imap.fetch import parse_body_fetch, parse_fetch
from mailbridge.imap.models import MessageMeta
from mailbridge.imap.responses import parse_select
from mailbridge.store import folders as folder_store
from mailbridge.store.db import Db


def _too_large(size: int, limit: int) -> MessageTooLarge:
    return MessageTooLarge(f"the message is {size} bytes, over the limit of {limit} (MAILBRIDGE_BODY_MAX_BYTES)",
                           size, limit)


async def fetch_body(session: ImapSession, db: Db, req: FetchBody) -> bytes:
    """The message's raw source (``BODY.PEEK[]``: never sets \\Seen).

    One command when its folder is the session's selected mailbox already and its size
    is known from the mirror; EXAMINE (read-only) first otherwise (`session.selected`
    then names it, so the actor knows to select its own folder again).  Raises
    MessageGone (expunged, or the folder's UIDVALIDITY changed) or MessageTooLarge.
    """
    if session.selected == req.folder_raw_name:
        current = await folder_store.get_uidvalidity(db, req.folder_id)
    else:
        response = await session.select(req.folder_raw_name, readonly=True)
        current = parse_select(response.lines_and_text).uidvalidity
    if req.uidvalidity is not None and current != req.uidvalidity:
        raise MessageGone(f"the folder was reset on the server (UIDVALIDITY changed); UID {req.uid} is gone")
    size = req.size
    if size is None:
        sized = await session.uid_fetch(str(req.uid), "(UID RFC822.SIZE)")
        size = next((m.size_bytes for m in parse_fetch(sized.lines)
                     if isinstance(m, MessageMeta) and m.uid == req.uid and m.size_bytes is not None), None)
        if size is None:
            raise MessageGone(f"message UID {req.uid} is no longer on the server")
    if size > req.max_bytes:
        raise _too_large(size, req.max_bytes)
    # a server whose literal outgrows the size it stated is cut off before it is read
    response = await session.uid_fetch(str(req.uid), "(UID BODY.PEEK[])", max_literal=req.max_bytes)
    _, body = parse_body_fetch(response.lines)
    if body is None:
        raise MessageGone(f"message UID {req.uid} is no longer on the server")
    if len(body) > req.max_bytes:
        raise _too_large(len(body), req.max_bytes)
    return body

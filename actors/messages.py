"""Requests an AccountActor answers, each carrying its own reply channel.

The API (or any caller) builds a request with `Request.new(...)`, sends it into the
owning actor's mailbox and awaits the single reply on the request's receive side.  The
actor answers between batches, so a request waits at most one sync step.  A reply is a
`Reply`: either `value` or `error` (one of `mailbridge.errors`, never a library type).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to one request."""

    value: Any = None
    error: BaseException | None = None

    def unwrap(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


@dataclass(frozen=True, slots=True)
class FetchBody:
    """Fetch one message's full raw source (``BODY.PEEK[]``): never sets \\Seen."""

    folder_id: int
    folder_raw_name: str
    uidvalidity: int | None
    uid: int
    max_bytes: int
    size: int | None = None  # RFC822.SIZE as mirrored (a UID's size never changes); None: ask


@dataclass(frozen=True, slots=True)
class Target:
    """Messages of one folder a write names, by UID (as mirrored)."""

    folder_id: int
    folder_raw_name: str
    uidvalidity: int | None
    uids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class StoreFlags:
    """Add and remove flags (system flags and keywords, checked by the caller)."""

    account_id: int
    targets: tuple[Target, ...]
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MoveMessages:
    """Move messages to another folder of the account (UID MOVE, or COPY + \\Deleted + UID EXPUNGE)."""

    account_id: int
    targets: tuple[Target, ...]
    dest_folder_id: int
    dest_raw_name: str
    dest_name: str
    dest_mirrored: bool  # False: excluded (e.g. Trash): the rows leave the mirror


@dataclass(frozen=True, slots=True)
class ExpungeMessages:
    """Delete messages for good: STORE \\Deleted + UID EXPUNGE of exactly these UIDs."""

    account_id: int
    targets: tuple[Target, ...]


@dataclass(frozen=True, slots=True)
class SyncNow:
    """Start a cycle at once instead of at the next tick (answered when it is scheduled)."""


Write = StoreFlags | MoveMessages | ExpungeMessages
Payload = FetchBody | SyncNow | StoreFlags | MoveMessages | ExpungeMessages


@dataclass(frozen=True, slots=True)
class Request:
    """A payload plus the channel its reply goes to (buffer of one: the actor never blocks)."""

    payload: Payload
    reply_to: trio.MemorySendChannel = field(repr=False)

    @classmethod
    def new(cls, payload: Payload) -> tuple["Request", trio.MemoryReceiveChannel]:
        send, receive = trio.open_memory_channel[Reply](1)
        return cls(payload, send), receive

    def answer(self, reply: Reply) -> None:
        """Deliver the reply; a caller that gave up (closed its side) is ignored."""
        try:
            self.reply_to.send_nowait(reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock):
            pass
        finally:
            self.reply_to.close()


__all__ = ["ExpungeMessages", "FetchBody", "MoveMessages", "Payload", "Reply", "Request", "StoreFlags", "SyncNow",
           "Target", "Write"]

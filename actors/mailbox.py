"""An actor's request mailbox: what callers sent it, and how much of it to answer when.

The mailbox is a bounded trio channel the registry sends into (`Registry.request` never
blocks on it).  The actor answers requests only between its own steps, so a request
waits at most one step, and the throttle decides how many at a time:

- with commands to spare, every request waiting at the start of the turn is answered
  (not those arriving meanwhile: a steady stream of requests must not stop the sync);
- when the throttle lacks the commands for all of them and the next sync step, one is
  answered a turn, and the registry lets at most `WAITING_WHEN_THROTTLED` wait (refusing
  the rest at once), so requests beyond the throttle's rate neither stall the mirror nor
  wait near their caller's timeout.
"""

from __future__ import annotations

import trio

from actors.bodies import fetch_body
from actors.messages import ExpungeMessages, FetchBody, MoveMessages, Reply, Request, StoreFlags
from actors.writeback import perform
from actors.registry import MAILBOX_SIZE, ActorUnavailable, Registry
from mailbridge.aio.imap import ImapSession
from mailbridge.errors import ImapConnectionLost, ImapError, MailbridgeError
from mailbridge.imap.throttle import Throttle
from mailbridge.store.db import Db

# commands a body request may take: EXAMINE of its folder, the FETCH, SELECT back
REQUEST_COMMANDS = 3
# requests let wait between sync steps while the throttle is short (one is answered a step)
WAITING_WHEN_THROTTLED = 4


class RequestMailbox:
    """One actor's mailbox; attached to the registry only while the actor can answer."""

    def __init__(self, account_id: int, registry: Registry, throttle: Throttle) -> None:
        self.account_id = account_id
        self.registry = registry
        self.throttle = throttle
        self._send, self._receive = trio.open_memory_channel[Request](MAILBOX_SIZE)

    @property
    def depth(self) -> int:
        """Requests waiting now."""
        return self._send.statistics().current_buffer_used

    def attach(self) -> None:
        """Let callers reach the actor (it is logged in)."""
        self.registry.attach_mailbox(self.account_id, self._send)

    def detach(self) -> None:
        """Callers get ActorUnavailable (with the actor's status) from now on."""
        self.registry.attach_mailbox(self.account_id, None)

    def admit_all(self) -> None:
        """Between cycles there is no sync step to share the throttle with."""
        self.registry.limit_waiting(self.account_id, MAILBOX_SIZE)

    async def receive(self) -> Request:
        """The next request (waits; cancellable, losing nothing)."""
        return await self._receive.receive()

    def waiting(self) -> list[Request]:
        """Every request queued now (between cycles: one IDLE's end serves them all); never blocks."""
        taken: list[Request] = []
        while True:
            try:
                taken.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return taken

    def turn(self) -> list[Request]:
        """The requests to answer now, between two steps (see the module doc); never blocks."""
        waiting = self.depth
        short = waiting > 0 and self.throttle.available < REQUEST_COMMANDS * waiting + 1
        self.registry.limit_waiting(self.account_id, WAITING_WHEN_THROTTLED if short else MAILBOX_SIZE)
        taken: list[Request] = []
        for _ in range(1 if short else waiting):
            try:
                taken.append(self._receive.receive_nowait())
            except trio.WouldBlock:
                break
        return taken

    def fail(self, requests: list[Request]) -> None:
        """Tell the callers of `requests`, taken but not answered, that the actor stopped."""
        for request in requests:
            request.answer(Reply(error=ActorUnavailable(
                f"account {self.account_id}'s actor stopped; try again shortly", 5.0)))

    def close(self) -> None:
        """Detach and answer whatever is still queued (callers must not wait for a dead actor)."""
        self.detach()
        self._send.close()
        while True:
            try:
                request = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            request.answer(Reply(error=ActorUnavailable(
                f"account {self.account_id}'s actor stopped; try again shortly", 5.0)))
        self._receive.close()


async def answer(session: ImapSession, db: Db, request: Request) -> None:
    """Answer one data request (a FetchBody, or a write: `actors.writeback`) over
    `session`; the caller always gets a reply.

    Our errors go back to the caller; a lost connection is re-raised too (the actor must
    restart).  Cancelled or crashed meanwhile: the caller is told the actor stopped, and
    the exception propagates.
    """
    payload = request.payload
    assert isinstance(payload, (FetchBody, StoreFlags, MoveMessages, ExpungeMessages)), \
        "SyncNow is the actor's own to answer"
    try:
        value: object
        if isinstance(payload, FetchBody):
            value = await fetch_body(session, db, payload)
        else:
            value = await perform(session, db, payload)
    except (MailbridgeError, ImapError) as exc:
        request.answer(Reply(error=exc))
        if isinstance(exc, ImapConnectionLost):
            raise
    except BaseException:
        request.answer(Reply(error=ActorUnavailable("the actor stopped while answering", 5.0)))
        raise
    else:
        request.answer(Reply(value=value))


__all__ = ["REQUEST_COMMANDS", "RequestMailbox", "WAITING_WHEN_THROTTLED", "answer"]

"""Account id → the actor's mailbox and its latest status snapshot.

Readers (`/actors`, the dashboard, tests) get snapshots without waiting on any actor.
Callers reach an actor only through `request()`, which never blocks on a full mailbox:
it says so instead (`ActorBusy`), and waits for the reply within a deadline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone

import trio

from actors.messages import Payload, Reply, Request
from actors.status import ActorStatus
from mailbridge.errors import MailbridgeError

MAILBOX_SIZE = 16


class ActorUnavailable(MailbridgeError):
    """No running actor owns the account here (standby, parked, stopped, unknown)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ActorBusy(ActorUnavailable):
    """The actor's mailbox is full; try again shortly."""


class ActorTimeout(MailbridgeError):
    """The actor did not answer within the deadline."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Entry:
    status: ActorStatus
    mailbox: trio.MemorySendChannel | None = None
    admit: int = MAILBOX_SIZE  # requests let wait at once (the actor lowers it when throttled)


class Registry:
    """Live view of this process's actors.  Used from one trio run only."""

    def __init__(self) -> None:
        self._entries: dict[int, _Entry] = {}
        self.changed = trio.Event()  # set (and replaced) on every publish, for live views

    # --- writers (the supervisor and the actors) ----------------------------------------

    def publish(self, status: ActorStatus) -> None:
        entry = self._entries.get(status.account_id)
        if entry is None:
            self._entries[status.account_id] = _Entry(status)
        else:
            entry.status = status
        self._notify()

    def attach_mailbox(self, account_id: int, mailbox: trio.MemorySendChannel | None) -> None:
        entry = self._entries.get(account_id)
        if entry is not None:
            entry.mailbox = mailbox

    def limit_waiting(self, account_id: int, limit: int) -> None:
        """Let at most `limit` (1..MAILBOX_SIZE) requests wait for the account's actor; more
        are refused at once (ActorBusy) instead of queueing for a long wait."""
        entry = self._entries.get(account_id)
        if entry is not None:
            entry.admit = max(1, min(limit, MAILBOX_SIZE))

    def remove(self, account_id: int) -> None:
        if self._entries.pop(account_id, None) is not None:
            self._notify()

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    # --- readers -----------------------------------------------------------------------

    def status(self, account_id: int) -> ActorStatus | None:
        entry = self._entries.get(account_id)
        return entry.status if entry else None

    def snapshots(self) -> list[ActorStatus]:
        return [self._entries[k].status for k in sorted(self._entries)]

    def mailbox_depth(self, account_id: int) -> int:
        entry = self._entries.get(account_id)
        if entry is None or entry.mailbox is None:
            return 0
        return entry.mailbox.statistics().current_buffer_used

    # --- requests ----------------------------------------------------------------------

    async def request(self, account_id: int, payload: Payload, *, timeout: float) -> object:
        """Send `payload` to the account's actor and return its reply's value.

        Raises ActorUnavailable (not running here, with the reason), ActorBusy (mailbox
        full), ActorTimeout (no answer within `timeout`), or the error the actor replied
        with.  Cancelling the caller abandons the request; the actor's answer is dropped.
        """
        entry = self._entries.get(account_id)
        if entry is None:
            raise ActorUnavailable(f"account {account_id} has no actor in this process")
        if entry.mailbox is None:
            status = entry.status
            why = status.health_reason or status.last_error or status.step or status.state
            retry = None
            if status.retry_at is not None:
                retry = max(1.0, (status.retry_at - datetime.now(timezone.utc)).total_seconds())
            raise ActorUnavailable(f"account {account_id} is {status.state}: {why}", retry)
        waiting = entry.mailbox.statistics().current_buffer_used
        if waiting >= entry.admit:
            raise ActorBusy(f"account {account_id}'s actor has {waiting} requests waiting and its IMAP "
                            "throttle allows no more now", 2.0)
        request, replies = Request.new(payload)
        try:
            entry.mailbox.send_nowait(request)
        except trio.WouldBlock:
            raise ActorBusy(f"account {account_id}'s actor has {MAILBOX_SIZE} requests waiting", 2.0) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ActorUnavailable(f"account {account_id}'s actor is restarting", 5.0) from None
        with replies:
            with trio.move_on_after(timeout) as scope:
                reply: Reply = await replies.receive()
            if scope.cancelled_caught:
                raise ActorTimeout(f"account {account_id}'s actor did not answer within {timeout:g} s",
                                   max(1.0, math.ceil(timeout / 2)))
        return reply.unwrap()


__all__ = ["ActorBusy", "ActorTimeout", "ActorUnavailable", "MAILBOX_SIZE", "Registry"]

"""An actor's logged-in life under `serve`: cycles on the tick, watching in between.

A full cycle every tick; half way between, a light one (LIST and STATUS of the folders
the full cycle did not visit), so a change in any folder shows within about half a tick
plus the time to fetch it.  In between, `actors.watch` says what happened (a push, a
request, the deadline) and this does it: visits what was pushed, answers the request,
starts a cycle at once for a `SyncNow`.  Returns only by raising (or being cancelled).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Callable

import trio

from actors import status as st
from actors.mailbox import RequestMailbox, answer
from actors.messages import Reply, SyncNow
from actors.visits import Visits, inbox_of, now_utc
from actors.watch import Arrived, Due, Push, Watch
from mailbridge.aio.imap import ImapSession
from mailbridge.store.db import Db

log = logging.getLogger(__name__)


class Serving:
    """One session's serving loop (see the module doc)."""

    def __init__(self, session: ImapSession, visits: Visits, watch: Watch, mailbox: RequestMailbox, db: Db, *,
                 poll_seconds: float, publish: Callable[..., Any], on_cycle: Callable[[], None]) -> None:
        self.session = session
        self.visits = visits
        self.watch = watch
        self.mailbox = mailbox
        self.db = db
        self.poll_seconds = poll_seconds
        self.publish = publish
        self.on_cycle = on_cycle  # a full cycle completed

    async def run(self) -> None:
        poll = self.poll_seconds
        while True:
            started = trio.current_time()
            await self._cycle()
            for light, deadline in ((True, started + poll / 2), (False, started + poll)):
                self.publish(state=st.IDLE, folder=None, step="waiting for the next cycle",
                             next_cycle_at=now_utc() + timedelta(seconds=max(0.0, deadline - trio.current_time())))
                if await self._wait(deadline):
                    break  # SyncNow: a full cycle at once
                if light:
                    await self._cycle(light=True)

    async def _cycle(self, *, light: bool = False) -> None:
        outcome = await self.visits.cycle(light=light)
        self.watch.inbox = inbox_of(outcome.folders)
        if not light:
            self.on_cycle()

    async def _wait(self, deadline: float) -> bool:
        """Until `deadline` (False) or a SyncNow (True): answer requests and visit what
        the watch reports."""
        self.mailbox.admit_all()  # no sync steps to share the throttle with
        while True:
            event = await self.watch.next_event(self.session, deadline)
            if isinstance(event, Due):
                return False
            if isinstance(event, Arrived):
                if isinstance(event.request.payload, SyncNow):
                    event.request.answer(Reply(value="scheduled"))
                    return True
                await answer(self.session, self.db, event.request)
                self.publish()
                continue
            await self._visit_pushed(event)

    async def _visit_pushed(self, push: Push) -> None:
        """Visit what a push names: INBOX first, then the other folders (after a light
        cycle when it names one not known yet)."""
        watch = self.watch
        if push.inbox and watch.inbox is not None:
            log.debug("account %d: syncing INBOX (%s)", watch.account_id, push.why)
            if await self.visits.visit_pushed([watch.inbox]):
                watch.inbox_visited(scanned=True, recheck=push.recheck)
            else:
                watch.inbox = None
        if None in push.folders:
            await self._cycle(light=True)
        for folder in await self.visits.visit_pushed(push.folders):
            if push.recheck:
                watch.visited(folder)


__all__ = ["Serving"]

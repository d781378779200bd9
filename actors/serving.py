"""An actor's logged-in life under `serve`: cycles on the tick, watching in between.

What runs when (`Schedule`) depends on what the server's pushes cover (`Watch.coverage`):

- **nothing** (no NOTIFY; IDLE alone covers nothing): a full cycle every tick; half way
  between, a light one (LIST and STATUS of the folders the full cycle did not visit),
  so a change in any folder shows within about half a tick plus the time to fetch it;
- **every folder but INBOX** (NOTIFY set): each tick a tick cycle: LIST, INBOX, and the
  covered folders' work on its own clock (initial syncs, due reconciles, overdue flag
  scans), no STATUS of them and no light cycle; every `MAILBRIDGE_SAFETY_CYCLE_MINUTES`
  the tick's cycle is a full one instead, as a safety net.

Losing NOTIFY (refused, or NOTIFICATIONOVERFLOW) brings a full cycle at once and the
schedule without coverage from then on.  In between, `actors.watch` says what happened
(a push, a request, the deadline) and this does it: visits what was pushed, answers the
request, starts a full cycle at once for a `SyncNow`.  The covered folders a cycle
visited are compared with the server by STATUS once before the next IDLE
(`Watch.visited`), so a change made during their visit is not lost.  Returns only by
raising (or being cancelled).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Sequence

import trio

from actors import status as st
from actors.mailbox import RequestMailbox, answer
from actors.messages import Reply, SyncNow
from actors.visits import Visits, inbox_of, now_utc
from actors.watch import Arrived, Due, Push, Watch
from mailbridge.aio.imap import ImapSession
from mailbridge.store.db import Db
from mailbridge.store.folders import Folder
from mailbridge.sync.planner import NO_COVERAGE, Coverage

log = logging.getLogger(__name__)

FULL = "full"    # LIST, then every folder as the planner says, covered or not
TICK = "tick"    # LIST, INBOX and the folders not covered, the covered ones' due work
LIGHT = "light"  # LIST, STATUS of the folders not covered, initial syncs (no NOTIFY only)
KINDS = (FULL, TICK, LIGHT)


@dataclass
class Schedule:
    """When the next cycle is due and of which kind (trio times; no I/O).  `next` may be
    asked any number of times; `done` records a cycle that ran."""

    poll: float                          # seconds per tick
    safety: float                        # seconds between full cycles under NOTIFY
    last_tick: float = -math.inf         # start of the last tick's cycle (full or tick)
    last_full: float = -math.inf
    light_pending: bool = False          # the half-tick light cycle is still to run
    _full_now: bool = True
    _notified: bool = False              # NOTIFY covered the folders at the last look

    def full_now(self) -> None:
        """A full cycle at once (a SyncNow; NOTIFY lost)."""
        self._full_now = True

    def next(self, coverage: Coverage) -> tuple[float, str]:
        """(when, kind) of the next cycle under `coverage`."""
        if coverage.everything:
            self._notified = True
        elif self._notified:  # NOTIFY lost: what it would have announced may be missed
            self._notified = False
            self._full_now = True
        if self._full_now:
            return -math.inf, FULL
        tick_at = self.last_tick + self.poll
        if coverage.everything:
            return tick_at, FULL if self.last_full + self.safety <= tick_at else TICK
        if self.light_pending:
            return self.last_tick + self.poll / 2, LIGHT
        return tick_at, FULL

    def done(self, kind: str, started: float) -> None:
        """A cycle of `kind` that started at `started` ran."""
        if kind == LIGHT:
            self.light_pending = False
            return
        self.last_tick = started
        self.light_pending = kind == FULL  # only without NOTIFY does `next` run it
        if kind == FULL:
            self.last_full = started
            self._full_now = False


class Serving:
    """One session's serving loop (see the module doc)."""

    def __init__(self, session: ImapSession, visits: Visits, watch: Watch, mailbox: RequestMailbox, db: Db, *,
                 poll_seconds: float, publish: Callable[..., Any], on_cycle: Callable[[], None],
                 safety_seconds: float | None = None) -> None:
        self.session = session
        self.visits = visits
        self.watch = watch
        self.mailbox = mailbox
        self.db = db
        self.poll_seconds = poll_seconds
        self.publish = publish
        self.on_cycle = on_cycle  # a tick's cycle (full or tick) completed
        safety = visits.settings.safety_cycle_minutes * 60 if safety_seconds is None else safety_seconds
        self.schedule = Schedule(poll_seconds, safety)

    def _next(self) -> tuple[float, str]:
        return self.schedule.next(self.watch.coverage(self.session))

    async def run(self) -> None:
        while True:
            deadline, kind = self._next()
            if self.visits.settle_at <= trio.current_time() < deadline:
                await self._settle_moves()  # a NOTIFY grace for a held move side ended
                continue
            if deadline > trio.current_time():
                self.publish(state=st.IDLE, folder=None, step="waiting for the next cycle",
                             next_cycle_at=now_utc() + timedelta(seconds=self._seconds_until(deadline)))
                if await self._wait(lambda: min(self._next()[0], self.visits.settle_at)):
                    self.schedule.full_now()  # SyncNow: a full cycle at once
                continue  # what is due may have changed while waiting
            await self._cycle(kind)

    @staticmethod
    def _seconds_until(deadline: float) -> float:
        return min(max(0.0, deadline - trio.current_time()), 10 * 365 * 86400.0)

    async def _cycle(self, kind: str) -> None:
        started = trio.current_time()
        watching = self.watch.coverage(self.session)
        outcome = await self.visits.cycle(light=kind == LIGHT, coverage=NO_COVERAGE if kind == FULL else watching)
        self.watch.inbox = inbox_of(outcome.folders)
        self._recheck_covered(watching, outcome.visited)
        await self._settle_moves()
        self.schedule.done(kind, started)
        if kind != LIGHT:
            self.on_cycle()

    def _recheck_covered(self, coverage: Coverage, visited: Sequence[Folder]) -> None:
        """Have the covered folders among `visited` compared by STATUS before the next
        IDLE: a change made while a visit ran came inside its replies, unread."""
        covered = coverage.of(visited)
        for folder in visited:
            if folder.id in covered:
                self.watch.visited(folder)

    async def _wait(self, deadline: Callable[[], float]) -> bool:
        """Until `deadline()` (False) or a SyncNow (True): answer requests and visit what
        the watch reports."""
        self.mailbox.admit_all()  # no sync steps to share the throttle with
        while True:
            event = await self.watch.next_event(self.session, deadline)
            if isinstance(event, Due):
                return False
            if isinstance(event, Arrived):
                # the others queued meanwhile too: one end of IDLE (and NOOP, IDLE again)
                # for all of them, not one each, so a burst of writes costs the throttle less
                sync_now = False
                pending = [event.request, *self.mailbox.waiting()]
                try:
                    while pending:
                        request = pending.pop(0)
                        if isinstance(request.payload, SyncNow):
                            request.answer(Reply(value="scheduled"))
                            sync_now = True
                            continue
                        await answer(self.session, self.db, request)
                        self.publish()
                finally:
                    self.mailbox.fail(pending)  # the actor stops (`answer` re-raised): callers must not wait
                if sync_now:
                    return True
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
            coverage = watch.coverage(self.session)
            outcome = await self.visits.cycle(light=True, coverage=coverage)
            watch.inbox = inbox_of(outcome.folders)
            self._recheck_covered(coverage, outcome.visited)
        for folder in await self.visits.visit_pushed(push.folders):
            if push.recheck:
                watch.visited(folder)
        await self._settle_moves()

    async def _settle_moves(self) -> None:
        """Look for the other side of what the visits held as a possible move at once
        (`Visits.settle_moves`); the covered folders that search visited are compared
        once more before the next IDLE, as a cycle's are."""
        coverage = self.watch.coverage(self.session)
        self._recheck_covered(coverage, await self.visits.settle_moves(coverage))


__all__ = ["FULL", "KINDS", "LIGHT", "TICK", "Schedule", "Serving"]

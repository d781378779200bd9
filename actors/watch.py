"""Watching an account between cycles: IMAP IDLE on INBOX, NOTIFY for the other folders,
and the request mailbox, until something needs the actor.  No syncing happens here:
`Watch.next_event` returns what to do as a typed event, and the actor does it.

=================  ===========================================================
event              when
=================  ===========================================================
`Push`             the server announced (IDLE, NOTIFY) or a check found a change:
                   INBOX and/or other folders to visit
`Arrived`          a request reached the mailbox
`Due`              the deadline (the next cycle) came
=================  ===========================================================

Before each IDLE, INBOX is made current.  Still selected: a NOOP collects what the
server queued since (flag changes included; none right after a quiet IDLE on a server
that reports only when polled: what it queued came with DONE), and news that came with
another reply (`ImapSession.take_selected_news`: a STATUS's, a LIST's, a stray one in a
visit's FETCH or SEARCH, IDLE's DONE) is visited too.  Otherwise SELECT and compare
UIDNEXT, EXISTS and HIGHESTMODSEQ with what the last visit stored; without CONDSTORE
that cannot show flag changes made since INBOX was left, so it is scanned first (at most
every `INBOX_RESCAN` seconds: when one ran less than that before, the next is owed and
runs once that has passed, the IDLE ending then).  Where the server offers NOTIFY it is
set once per session, so a change in any other included folder ends the IDLE too;
NOTIFY's STATUS pushes that came inside other commands' responses are returned first,
then the other folders a visit left while news about them had come inside its replies
(`ImapSession.left_news`).  News sent while a push visit ran came inside that visit's
responses, where nothing may read it: so after a push visit, the visited folders are
compared with the server once more, once: INBOX by SELECT with CONDSTORE
(HIGHESTMODSEQ), by NOOP without it while still selected (a re-SELECT would drop the
`FETCH (FLAGS)` a server that reports only when polled, Courier, still holds), the
others by STATUS.

What the watch covers (`coverage`) tells the actor which folders need no periodic
checks: with NOTIFY set, every folder but INBOX; without it none.  INBOX, the folder IDLE
watches, is never covered (news about the selected mailbox inside other commands'
replies is applied only where it can be told from their answers), so the cycles keep
visiting it.  When NOTIFY is first set, every
covered folder is compared by STATUS once (what changed before NOTIFY was never pushed);
after a cycle visited covered folders, those (`visited`).  A server that refuses NOTIFY,
or announces NOTIFICATIONOVERFLOW (it stopped notifying), covers nothing from then on,
for the rest of the session.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable, Sequence

import trio

from actors.mailbox import RequestMailbox
from actors.messages import Request
from actors.pushes import NOTIFY_EVENTS, NotifyPushes, Pushed
from mailbridge.aio.imap import ImapSession
from mailbridge.errors import ImapCommandError
from mailbridge.imap.quirks import POLL_REISSUE_SECONDS, polled
from mailbridge.imap.responses import parse_exists_expunge, parse_select
from mailbridge.store import folders as folder_store
from mailbridge.store.db import Db
from mailbridge.store.folders import Folder
from mailbridge.sync.planner import NO_COVERAGE, Coverage

log = logging.getLogger(__name__)

INBOX_RESCAN = 5.0  # least seconds between INBOX flag scans before IDLE (servers without CONDSTORE)
OVERFLOW = b"[NOTIFICATIONOVERFLOW]"  # RFC 5465: the server stopped notifying


@dataclass(frozen=True, slots=True)
class Push:
    """Folders to visit now.  `folders` holds None for a mailbox no folder row knows yet
    (a light cycle's LIST finds it); `recheck`: compare them with the server once more
    after the visit."""

    inbox: bool
    folders: tuple[Pushed, ...] = ()
    why: str = "server push"
    recheck: bool = True


@dataclass(frozen=True, slots=True)
class Arrived:
    """A request to answer."""

    request: Request


@dataclass(frozen=True, slots=True)
class Due:
    """The deadline passed."""


WatchEvent = Push | Arrived | Due
StatusCheck = Callable[[Sequence[Folder]], Awaitable[list[Folder]]]
Deadline = Callable[[], float]  # the trio time of the next cycle, asked afresh before each IDLE


class Watch:
    """One session's watching state (see the module doc).  The actor tells it what each
    cycle found (`inbox`) and what each push visit did (`inbox_visited`, `visited`)."""

    def __init__(self, db: Db, account_id: int, mailbox: RequestMailbox, pushes: NotifyPushes, *,
                 idle_seconds: float, check_status: StatusCheck, on_idle: Callable[[str], None]) -> None:
        self.db = db
        self.account_id = account_id
        self.mailbox = mailbox
        self.pushes = pushes
        self.idle_seconds = idle_seconds
        self.check_status = check_status  # the folders among these whose STATUS changed
        self.on_idle = on_idle  # told what it idles on, for the status
        self.inbox: Folder | None = None  # the folder to IDLE on (INBOX, when included)
        self._idle_refused = False
        self._notify_refused = False
        self._inbox_recheck = False
        self._recheck: list[Folder] = []
        self._inbox_scanned_at = float("-inf")  # trio time of INBOX's last flag scan
        self._polled = False  # seen to report news only when IDLE ends (DONE)
        # INBOX was re-entered without a flag scan (one ran less than INBOX_RESCAN before):
        # one is due when that has passed (servers without CONDSTORE)
        self._scan_owed = False
        # the last command was a quiet IDLE's DONE on a server that reports only when
        # polled: what it queued came with DONE, so no NOOP before the next IDLE
        self._told_by_done = False

    # --- what the actor reports ----------------------------------------------------------

    def inbox_visited(self, *, scanned: bool, recheck: bool) -> None:
        """INBOX was visited (`scanned`: its flags too); `recheck` it before the next IDLE."""
        if scanned:
            self._inbox_scanned_at = trio.current_time()
            self._scan_owed = False
        self._inbox_recheck = recheck

    def visited(self, folder: Folder) -> None:
        """A folder was visited (a push named it, or a cycle visited it though covered):
        compare its STATUS once before the next IDLE."""
        if all(f.id != folder.id for f in self._recheck):
            self._recheck.append(folder)

    def coverage(self, session: ImapSession) -> Coverage:
        """The folders whose changes the server pushes while the actor watches: every
        folder but INBOX under NOTIFY (once set, while IDLE works), else none."""
        if self.inbox is None or not session.has("IDLE") or self._idle_refused or not self.pushes.active:
            return NO_COVERAGE
        return Coverage(everything=True, inbox=self.inbox.id)

    def _idle_seconds_for(self, session: ImapSession) -> float:
        """How long one IDLE lasts: short where the server reports news only when
        polled (its quirks, or seen so), else the setting (at most a quirk's limit)."""
        quirks = session.quirks
        if self._polled:
            quirks = polled(quirks)
        if quirks.idle_reissue_seconds is None:
            return self.idle_seconds
        return min(self.idle_seconds, quirks.idle_reissue_seconds)

    def _check_overflow(self, lines: Iterable[bytes | bytearray]) -> bool:
        """True (and NOTIFY given up) when `lines` say the server stopped notifying."""
        if self.pushes.active and any(OVERFLOW in bytes(line).upper() for line in lines):
            log.warning("account %d: the server stopped NOTIFY (NOTIFICATIONOVERFLOW); folders other than "
                        "INBOX are checked every cycle instead", self.account_id)
            self.pushes.active = False
            self._notify_refused = True
            return True
        return False

    # --- the watch -----------------------------------------------------------------------

    async def next_event(self, session: ImapSession, deadline: Deadline) -> WatchEvent:
        """Wait for the next event, at the latest `deadline()` (then `Due`; asked again
        after every step, since what the watch covers moves it).  Cancellable: an IDLE in
        progress is ended by the session."""
        while trio.current_time() < deadline():
            if self.inbox is None or not session.has("IDLE") or self._idle_refused:
                with trio.move_on_at(deadline()):
                    return Arrived(await self.mailbox.receive())
                break
            event = await self._before_idle(session)
            if event is None and self.inbox is None:
                continue  # INBOX vanished: wait for requests until the next cycle
            if event is None:
                until = min(deadline(), trio.current_time() + self._idle_seconds_for(session))
                if self._scan_owed:
                    until = min(until, self._inbox_scanned_at + INBOX_RESCAN + 0.05)
                self.on_idle("idling on INBOX (IMAP IDLE"
                             + (", NOTIFY for the other folders)" if self.pushes.active else ")"))
                event = await self._idle_until(session, until)
                if event is None and session.has_selected_news and not self._polled:
                    # nothing was pushed during IDLE, yet DONE brought news: this server
                    # reports only when polled, so IDLE is re-issued often from now on
                    log.info("account %d: the server reports news only when IDLE ends; re-issuing "
                             "IDLE every %g s", self.account_id, POLL_REISSUE_SECONDS)
                    self._polled = True
                self._told_by_done = event is None and (self._polled or session.quirks.reports_only_on_poll)
            if event is not None:
                return event
        self._told_by_done = False  # a cycle runs first
        return Due()

    async def _before_idle(self, session: ImapSession) -> WatchEvent | None:
        """A Push when something is to visit before IDLE; None to IDLE now."""
        quiet_done, self._told_by_done = self._told_by_done, False
        if await self._ensure_notify(session):
            self.pushes.note(session.take_pushes())
        pending = self.pushes.take()
        if pending:
            return Push(False, pending, why="NOTIFY")
        inbox = self.inbox
        assert inbox is not None
        left = await self._left_with_news(session, inbox)
        if left:
            return Push(False, left, why="news left behind by a SELECT", recheck=False)
        # still selected: a NOOP collects what the server queued.  Without CONDSTORE also
        # for the recheck after a visit: a re-SELECT would not show a flag change, and
        # drops the FETCH (FLAGS) a server that reports only when polled still holds
        if session.selected == inbox.raw_name and (not self._inbox_recheck or not session.condstore):
            self._inbox_recheck = False
            lines = [] if quiet_done else (await session.noop()).lines
            self._check_overflow(lines)
            # news that came with another reply (a STATUS, a LIST, a visit's FETCH, IDLE's
            # DONE): the server told once, so the NOOP does not tell again
            if (parse_exists_expunge(lines).changed or session.take_selected_news()
                    or session.take_left_news(inbox.raw_name)):
                return Push(True, why="news before IDLE")
            if self._scan_owed and trio.current_time() - self._inbox_scanned_at > INBOX_RESCAN:
                return Push(True, why="flag scan before IDLE (owed)")
            event = await self._recheck_visited()
            if event is None and session.take_selected_news():
                return Push(True, why="news with a STATUS reply")
            return event
        if session.take_left_news(inbox.raw_name):
            return Push(True, why="news left behind by a SELECT")  # flags scanned without CONDSTORE
        if not session.condstore:
            # INBOX was left: what changed in its flags since is not told again
            if trio.current_time() - self._inbox_scanned_at > INBOX_RESCAN:
                return Push(True, why="flag scan before IDLE")
            self._scan_owed = True  # scanned just now: once INBOX_RESCAN has passed
        self._inbox_recheck = False
        info = parse_select((await session.select(inbox.raw_name, condstore=True)).lines_and_text)
        stored = await folder_store.get_idle_state(self.db, inbox.id)
        if stored is None:
            self.inbox = None  # gone: the next cycle's LIST says what became of it
            return None
        if (session.take_left_news(inbox.raw_name)  # news a re-SELECT swallowed (FETCH FLAGS)
                or info.uidnext != stored.uidnext or info.exists != stored.server_message_count
                or (info.highestmodseq is not None and info.highestmodseq != stored.highestmodseq)):
            return Push(True, why="changed while not idling", recheck=False)
        return await self._recheck_visited()

    async def _left_with_news(self, session: ImapSession, inbox: Folder) -> tuple[Folder, ...]:
        """The folders but INBOX that a visit left (SELECTing another) while news about
        them had come inside its replies, unread: visited again (flags scanned without
        CONDSTORE), so no news is dropped."""
        names = session.left_news - {inbox.raw_name}
        if not names:
            return ()
        found = []
        for folder in await folder_store.load_folders(self.db, self.account_id):
            if folder.raw_name in names and session.take_left_news(folder.raw_name) and not folder.excluded \
                    and not folder.parked and folder.initial_sync_complete:
                found.append(folder)
        for name in names:
            session.take_left_news(name)  # a mailbox no folder row knows: the next LIST tells
        return tuple(found)

    async def _recheck_visited(self) -> Push | None:
        """A Push of the folders to recheck (`visited`) whose STATUS changed; None when
        none did (or none was to recheck)."""
        if not self._recheck:
            return None
        folders, self._recheck = self._recheck, []
        fresh = [f for f in [await folder_store.load_folder(self.db, f.id) for f in folders]
                 if f is not None and not f.excluded and not f.parked]
        changed = await self.check_status(fresh)
        if changed:
            return Push(False, tuple(changed), why="changed during a visit", recheck=False)
        return None

    async def _ensure_notify(self, session: ImapSession) -> bool:
        """NOTIFY set for the session (once) where the server offers and accepts it, and
        `pushes` watching the account's current folders; False without NOTIFY."""
        if self._notify_refused or not session.has("NOTIFY"):
            return False
        folders = await folder_store.load_folders(self.db, self.account_id)
        if not session.notifying:
            if not await session.notify(NOTIFY_EVENTS):
                # Dovecot without mailbox list indexes answers NO [NOTIFICATIONOVERFLOW]
                log.info("account %d: the server refused NOTIFY; folders other than INBOX are checked "
                         "every cycle instead", self.account_id)
                self._notify_refused = True
                return False
            # what changed before NOTIFY was set was never pushed: compare once
            for folder in folders:
                if folder.name != "INBOX" and folder.initial_sync_complete and not folder.excluded \
                        and not folder.parked:
                    self.visited(folder)
        self.pushes.watch(folders)
        return True

    async def _idle_until(self, session: ImapSession, until: float) -> WatchEvent | None:
        """IDLE until a push that matters (Push), a request (Arrived) or `until` (None).
        A server refusing IDLE is remembered: the watch polls instead from then on."""
        result: WatchEvent | None = None
        try:
            async with session.idle() as stream, trio.open_nursery() as nursery:
                nursery.cancel_scope.deadline = until

                async def pushes() -> None:
                    nonlocal result
                    while True:
                        lines = await stream.next_push()
                        if self._check_overflow(lines):
                            nursery.cancel_scope.cancel()  # what is covered changed: ask the deadline again
                            return
                        push = parse_exists_expunge(lines)
                        elsewhere = self.pushes.folders_in(push)
                        if push.changed or elsewhere:
                            result = Push(push.changed, elsewhere)
                            nursery.cancel_scope.cancel()
                            return

                async def requests() -> None:
                    nonlocal result
                    result = Arrived(await self.mailbox.receive())
                    nursery.cancel_scope.cancel()

                nursery.start_soon(pushes)
                nursery.start_soon(requests)
        except ImapCommandError as exc:
            if exc.command != "IDLE":
                raise
            log.warning("account %d: IDLE refused (%s); polling instead", self.account_id, exc)
            self._idle_refused = True
        return result


__all__ = ["Arrived", "Deadline", "Due", "INBOX_RESCAN", "Push", "Watch", "WatchEvent"]

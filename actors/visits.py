"""What an actor does with its logged-in session: cycles of folder visits, STATUS checks,
the retention window, and the requests it answers between steps.

A cycle follows a plan of `mailbridge.sync.planner`: a tick's (full, or leaving out
the folders the server's pushes cover but for their work on its own clock), a light one
between, and a complete one for `sync --once` (the same visits, run to the end).  Every
visit is cut into steps (one batch each); between two steps the mailbox gets its turn
(`RequestMailbox.turn`), so a request waits at most one step.  One folder's refusal
(NO/BAD) is that folder's problem, reported in the account's health; the others go on.
A lost connection raises (the actor restarts).

Cancellation: a step in progress is abandoned; what it wrote commits or rolls back
whole (the cursor moves with its rows), so the next visit resumes exactly.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator, Protocol, Sequence

import trio

from actors import status as st
from actors.mailbox import RequestMailbox, answer
from actors.messages import Reply, SyncNow
from actors.pushes import NotifyPushes, Pushed
from mailbridge import metrics
from mailbridge.aio.imap import ImapSession
from mailbridge.config import Settings
from mailbridge.errors import ImapCommandError
from mailbridge.imap.responses import parse_select, parse_status
from mailbridge.store import folders as folder_store
from mailbridge.store import moves as move_store
from mailbridge.store import retention as retention_store
from mailbridge.store.accounts import Account
from mailbridge.store.db import Db
from mailbridge.store.folders import Folder
from mailbridge.sync import health as hs
from mailbridge.sync.account import SyncTotals, sync_folder_steps
from mailbridge.sync.discover import discover_folders, skipped_problem
from mailbridge.sync.folder import Step, parked_problem
from mailbridge.sync.moves import NOTIFY_GRACE, plan_search
from mailbridge.sync.planner import (
    FLAG_SCAN_BUDGET,
    NO_COVERAGE,
    NO_SCAN_BUDGET,
    Coverage,
    CyclePlan,
    FolderWork,
    plan_complete,
    plan_cycle,
    plan_light,
    status_changed,
)

log = logging.getLogger(__name__)
EXPIRY_INTERVAL = 24 * 3600.0  # seconds between retention runs


class Reporter(Protocol):
    """Where visits report: the actor's status snapshot, progress and health."""

    def publish(self, **changes: Any) -> None: ...

    def progress(self, step: Step) -> None: ...

    async def health(self, event: hs.Event) -> None: ...


@dataclass(frozen=True, slots=True)
class CycleOutcome:
    """What a cycle saw and did."""

    folders: list[Folder]  # the account's folders as the cycle found them
    totals: SyncTotals
    visited: tuple[Folder, ...] = ()  # the folders it visited, as they were before


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def watched_folder(folders: Sequence[Folder]) -> Folder | None:
    """The folder to IDLE on, when included and not parked: INBOX, or on Gmail (where
    INBOX is a label view, see `mailbridge.sync.discover`) All Mail, where every label
    change and new message shows."""
    gmail = any(f.gmail_view is not None for f in folders)
    return next((f for f in folders if (f.special_use == "\\All" if gmail else f.name == "INBOX")
                 and not f.excluded and not f.parked), None)


inbox_of = watched_folder  # the name the watch and serving use


class Visits:
    """One session's visits (see the module doc); the rotations outlive a cycle."""

    def __init__(self, account: Account, db: Db, settings: Settings, session: ImapSession,
                 mailbox: RequestMailbox, pushes: NotifyPushes, report: Reporter, *,
                 rediscover: float = 0.0) -> None:
        self.account = account
        self.db = db
        self.settings = settings
        self.session = session
        self.mailbox = mailbox
        self.pushes = pushes
        self.report = report
        self.rediscover = rediscover  # least seconds between LISTs (0: every cycle)
        self._rr_offset = 0
        self._status_offset = 0
        self._last_discovery: float | None = None
        self._skipped: tuple[str, ...] = ()  # folder names the last LIST listed but we cannot use
        self._last_expiry: float | None = None
        self._settled_mark = 0  # the newest held move side `settle_moves` searched for
        self.settle_at = math.inf  # trio time `settle_moves` wants to run again (a NOTIFY grace ends)

    # --- cycles --------------------------------------------------------------------------

    async def cycle(self, *, light: bool = False, coverage: Coverage = NO_COVERAGE) -> CycleOutcome:
        """A tick's cycle, or a light one: only folders that are new or whose STATUS
        changed and, without CONDSTORE, the tick's flag scans of the other folders again
        (`plan_light`); no reconciles, no retention.  Either starts with LIST; the
        folders `coverage` covers get only their work on its own clock (no visit or STATUS
        otherwise)."""
        s = self.settings
        t0 = trio.current_time()
        folders = await self._folders(discover_now=self._last_discovery is None
                                      or t0 - self._last_discovery >= self.rediscover)
        covered = coverage.of(folders)
        condstore = self.session.condstore
        # without CONDSTORE nothing cheap shows a flag change: the small folders are all
        # scanned each tick and each light cycle (`FLAG_SCAN_BUDGET`), the others take turns
        sizes = {} if condstore else await folder_store.server_counts(self.db, self.account.id)
        plan = plan_cycle(
            folders, now=now_utc(), offset=self._rr_offset, status_offset=self._status_offset,
            folders_per_tick=s.folders_per_tick, status_per_tick=s.status_checks_per_tick,
            scans_per_tick=s.flag_scans_per_tick, condstore=condstore,
            reconcile_every=timedelta(hours=s.reconcile_hours),
            reconcile_jitter=timedelta(minutes=s.reconcile_jitter_minutes),
            tick=timedelta(seconds=s.poll_seconds), flag_scan_every=timedelta(hours=s.flag_scan_hours),
            covered=covered, scan_budget=NO_SCAN_BUDGET if condstore else FLAG_SCAN_BUDGET, sizes=sizes)
        if light:
            plan = plan_light(plan, folders, status_per_tick=s.status_checks_per_tick, covered=covered,
                              scans=not condstore)
        else:
            self._rr_offset, self._status_offset = plan.next_offset, plan.next_status_offset
        totals, visited = await self._run(plan, folders, expire=not light)
        kind = "light" if light else "tick" if covered else "full"
        if not light:
            metrics.CYCLE_SECONDS.observe(trio.current_time() - t0)
        log.info("account %d: %s cycle: %d folder(s) visited, %d checked, +%d ~%d -%d in %.1f s",
                 self.account.id, kind, totals.folders, len(plan.status_checks),
                 totals.added, totals.changed, totals.removed, trio.current_time() - t0)
        return CycleOutcome(folders, totals, visited)

    async def complete(self) -> CycleOutcome:
        """`sync --once`: discover, then bring every included folder fully up to date
        (initial syncs included) and apply the retention window."""
        folders = await self._folders(discover_now=True)
        totals, visited = await self._run(plan_complete(folders), folders, expire=True)
        await move_store.flush_due(self.db, self.account.id, 0)  # every folder seen: no move still to complete
        return CycleOutcome(folders, totals, visited)

    async def _folders(self, *, discover_now: bool) -> list[Folder]:
        if not discover_now:
            return await folder_store.load_folders(self.db, self.account.id)
        self.report.publish(state=st.SYNCING, step="listing folders")
        found = await discover_folders(self.db, self.session, self.account.id, self.account.excluded_folders)
        self._skipped = found.skipped
        self._last_discovery = trio.current_time()
        return found.folders

    async def _run(self, plan: CyclePlan, folders: Sequence[Folder], *,
                   expire: bool) -> tuple[SyncTotals, tuple[Folder, ...]]:
        """Visit the plan's folders, then those of its STATUS checks that changed; the
        cycle's health events around it.  Returns the totals and the folders visited."""
        await self.report.health(hs.Event("cycle_started", initial_pending=plan.initial_pending))
        if expire:
            await self.expire_old()
        planned = {w.folder.id for w in plan.work}
        totals = SyncTotals(problems=[parked_problem(self.account.id, f.name) for f in folders
                                      if f.parked and not f.excluded and f.id not in planned])
        if self._skipped:
            totals.problems.append(skipped_problem(self._skipped))
        visited = [w.folder for w in plan.work]
        for work in plan.work:
            await self.visit(work, totals)
        for folder in await self.changed_by_status(plan.status_checks):
            visited.append(folder)
            await self.visit(FolderWork(folder), totals)
        await self.report.health(hs.Event("cycle_done", "; ".join(totals.problems) or None))
        return totals, tuple(visited)

    async def settle_moves(self, coverage: Coverage = NO_COVERAGE) -> list[Folder]:
        """Find at once the other side of the possible moves the last visits held
        (`mailbridge.store.moves`; where: `mailbridge.sync.moves.plan_search`): compare the
        folders that could hold it by STATUS and visit those that changed.  A move by
        another client is complete on the server when its first side shows (a MOVE is
        atomic; a COPY precedes its EXPUNGE), so those visits pair what is a move; what
        is still held after a search that reached every such folder is alone and written
        as the removal or arrival it is.  Under NOTIFY (`coverage`) the covered folders
        are not asked: a held removal gets `NOTIFY_GRACE` seconds for their push
        (`settle_at` says when to call again).  A folder that could not be visited
        leaves its sides to the move window.  Returns the folders visited."""
        visited: list[Folder] = []
        self.settle_at = math.inf
        for _ in range(3):  # a visit here may hold a side of a newer change: look again, a little
            held = await move_store.held(self.db, self.account.id)
            if held is None:
                return visited
            if held.mark <= self._settled_mark and not coverage.everything:
                return visited  # searched for already: the window decides
            if held.mark > self._settled_mark:
                self._settled_mark = held.mark
                folders = await folder_store.load_folders(self.db, self.account.id)
                search = plan_search(folders, sources=held.sources, covered=coverage.of(folders),
                                     removals=held.removals, limit=self.settings.status_checks_per_tick,
                                     removed_from=held.removed_from)
                totals = SyncTotals()
                for folder in await self.changed_by_status(search.status):
                    log.debug("account %d: visiting %r for the other side of a move", self.account.id, folder.name)
                    await self.visit(FolderWork(folder, flag_scan=False), totals)
                    visited.append(folder)
                if totals.problems or not search.complete:
                    return visited  # the cycles look further; the window decides
                await move_store.flush_through(self.db, self.account.id, held.mark,
                                               arrivals_only=coverage.everything)
            if not coverage.everything:
                continue
            # under NOTIFY a removal alone is one no push paired within the grace
            await move_store.flush_due(self.db, self.account.id, NOTIFY_GRACE)
            if await move_store.held(self.db, self.account.id) is not None:
                self.settle_at = trio.current_time() + NOTIFY_GRACE / 2
            return visited
        return visited

    # --- one folder ------------------------------------------------------------------------

    async def visit(self, work: FolderWork, totals: SyncTotals | None = None) -> None:
        """Bring `work.folder` up to date, adding what it did to `totals`; a refusal by the
        server (NO/BAD) becomes a problem there instead of an error."""
        totals = totals if totals is not None else SyncTotals()
        totals.folders += 1
        try:
            async for step in self._steps(work):
                totals.add(step)
                if step.phase == "parked":
                    totals.problems.append(parked_problem(self.account.id, step.folder))
        except ImapCommandError as exc:
            log.warning("account %d: folder %r: %s", self.account.id, work.folder.name, exc)
            metrics.ERRORS.labels(type(exc).__name__).inc()
            totals.problems.append(f"folder {work.folder.name!r}: {exc}")

    async def visit_pushed(self, folders: Sequence[Pushed]) -> list[Folder]:
        """Visit the known folders a push named (flags scanned where the server lacks
        CONDSTORE) as they are now; returns those visited.  A refusal is logged, as in a
        cycle (whose health report names it)."""
        visited = []
        for pushed in folders:
            folder = await folder_store.load_folder(self.db, pushed.id) if pushed is not None else None
            if folder is None or folder.excluded or folder.parked:
                continue
            log.debug("account %d: syncing %r (push)", self.account.id, folder.name)
            await self.visit(FolderWork(folder, flag_scan=not self.session.condstore))
            visited.append(folder)
        if folders:
            self.report.publish(state=st.IDLE, folder=None)
        return visited

    async def _steps(self, work: FolderWork) -> AsyncIterator[Step]:
        """The folder's steps; the mailbox gets its turn after each one.  Ends early when
        a request's answer found the folder reset meanwhile (the next visit resumes)."""
        folder = work.folder
        self.report.publish(state=st.SYNCING, folder=folder.name, step=f"syncing {folder.name}")
        steps = sync_folder_steps(self.db, self.session, folder, self.settings, flag_scan=work.flag_scan,
                                  full_reconcile=work.full_reconcile)
        try:
            async for step in steps:
                self.report.progress(step)
                yield step
                if not await self.between_steps(folder):
                    log.info("account %d: folder %r changed while answering a request; next cycle resumes",
                             self.account.id, folder.name)
                    return
        finally:
            await steps.aclose()

    # --- between steps -----------------------------------------------------------------------

    async def between_steps(self, folder: Folder | None) -> bool:
        """Answer the requests whose turn it is (`RequestMailbox.turn`); if one left another
        mailbox selected, select `folder` again.  False when `folder` cannot go on (its
        UIDVALIDITY changed meanwhile)."""
        before = self.session.selected
        requests = self.mailbox.turn()
        pending = list(requests)
        try:
            while pending:
                request = pending.pop(0)
                if isinstance(request.payload, SyncNow):
                    request.answer(Reply(value="running"))
                    continue
                await answer(self.session, self.db, request)
                self.report.publish()
        finally:
            self.mailbox.fail(pending)  # the actor stops (`answer` re-raised): callers must not wait
        if folder is None or not requests or before != folder.raw_name or self.session.selected == before:
            return True
        info = parse_select((await self.session.select(folder.raw_name, condstore=True)).lines_and_text)
        stored = await folder_store.get_uidvalidity(self.db, folder.id)
        return stored is None or info.uidvalidity == stored

    async def changed_by_status(self, folders: Sequence[Folder]) -> list[Folder]:
        """The folders whose STATUS differs from what their last visit stored (one a server
        refuses STATUS for counts as changed)."""
        if not folders:
            return []
        self.report.publish(state=st.SYNCING, folder=None, step=f"checking {len(folders)} folder(s) with STATUS")
        stored = await folder_store.server_counts(self.db, self.account.id)
        items = ["MESSAGES", "UIDNEXT", "UIDVALIDITY"] + (["HIGHESTMODSEQ"] if self.session.condstore else [])
        changed = []
        for folder in folders:
            try:
                response = await self.session.status(folder.raw_name, items)
                info = parse_status(response.lines, (folder.raw_name, folder.name))
            except ImapCommandError as exc:
                log.info("account %d: STATUS %r refused (%s); visiting it", self.account.id, folder.name, exc)
                changed.append(folder)
                continue
            if status_changed(folder, messages=info.messages, uidnext=info.uidnext, uidvalidity=info.uidvalidity,
                              highestmodseq=info.highestmodseq, stored_messages=stored.get(folder.id)):
                changed.append(folder)
            await self.between_steps(None)
        return changed

    async def expire_old(self) -> None:
        """Daily, with MAILBRIDGE_RETENTION_DAYS set: drop messages older than the window,
        1,000 per transaction, answering requests between batches."""
        days = self.settings.retention_days
        now = trio.current_time()
        if not days or (self._last_expiry is not None and now - self._last_expiry < EXPIRY_INTERVAL):
            return
        self._last_expiry = now
        cutoff = now_utc() - timedelta(days=days)
        self.report.publish(state=st.SYNCING, step=f"expiring messages older than {days} days")
        total = 0
        while n := await retention_store.expire_batch(self.db, self.account.id, cutoff):
            total += n
            metrics.MESSAGES.labels("expired").inc(n)
            await self.between_steps(None)
        if total:
            log.info("account %d: %d message(s) older than %d days left the mirror", self.account.id, total, days)


__all__ = ["CycleOutcome", "Reporter", "Visits", "inbox_of", "now_utc", "watched_folder"]

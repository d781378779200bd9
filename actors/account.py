"""AccountActor: one account's lock, IMAP session and throttle, for its whole life.

Life of an actor (`run`):

1. take the account's session advisory lock on a dedicated connection; not acquired →
   `standby`, retried every `timing.standby_retry` seconds (jittered);
2. with the lock: record itself as the account's owner (heartbeat), watch the lock
   connection (lost → `LockLost` cancels all IMAP work at once), decrypt the password,
   log in;
3. loop: a cycle (discover folders, then the planned folders batch by batch, answering
   requests from the mailbox between batches), then wait for the next tick while
   answering requests.

It publishes an immutable `ActorStatus` after every step.  It returns only when
cancelled; it raises on a failure the supervisor should handle (backoff and restart),
after recording the account's health.  A rejected login does not raise: the actor
parks (still holding the lock, so no other process retries either) until the
supervisor replaces it because the credentials changed.

Cancellation: every cleanup (LOGOUT, lock release, owner record, pending requests
answered) is shielded and bounded, so cancelling an actor finishes within seconds.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Sequence

import trio

from actors import status as st
from actors.bodies import fetch_body
from actors.messages import Reply, Request, SyncNow
from actors.pushes import NOTIFY_EVENTS, NotifyPushes, Pushed
from actors.registry import MAILBOX_SIZE, ActorUnavailable, Registry
from mailbridge import metrics
from mailbridge.accountops import endpoint_of
from mailbridge.aio.db import AccountLock
from mailbridge.aio.imap import ImapSession
from mailbridge.config import Settings
from mailbridge.errors import (
    DatabaseError,
    ImapAuthError,
    ImapCommandError,
    ImapConnectError,
    ImapConnectionLost,
    ImapError,
    LockLost,
    MailbridgeError,
    SecretError,
)
from mailbridge.imap.responses import (
    parse_exists_expunge,
    parse_select,
    parse_status,
)
from mailbridge.imap.throttle import Throttle
from mailbridge.secrets import Cipher
from mailbridge.store import accounts as account_store
from mailbridge.store import retention as retention_store
from mailbridge.store.accounts import Account
from mailbridge.sync import health as hs
from mailbridge.sync.account import discover, sync_folder_steps
from mailbridge.sync.folder import Folder, Step, load_folder, load_folders, parked_problem
from mailbridge.sync.planner import CyclePlan, FolderWork, plan_cycle, status_changed

log = logging.getLogger(__name__)
CLEANUP_TIMEOUT = 5.0
EXPIRY_INTERVAL = 24 * 3600.0  # seconds between retention runs
INBOX_RESCAN = 5.0  # least seconds between INBOX flag scans before IDLE (servers without CONDSTORE)


@dataclass(frozen=True, slots=True)
class ActorTiming:
    """Intervals an actor keeps (tests shorten them)."""

    standby_retry: float = 5.0      # seconds between lock attempts while another process owns it
    lock_probe: float = 5.0         # seconds between checks that the lock connection is alive
    heartbeat: float = 15.0         # seconds between owner/heartbeat_at updates
    rediscover: float = 0.0         # least seconds between LISTs (0: every cycle; one command)


@dataclass(frozen=True, slots=True)
class ActorDeps:
    """What every actor of a process shares."""

    db: Any
    settings: Settings
    registry: Registry
    owner: str                      # host:pid, stored in accounts.owner
    timing: ActorTiming = ActorTiming()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def root_cause(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups (else `exc`)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class AccountActor:
    """Syncs one account; see the module doc for its life."""

    def __init__(self, account: Account, deps: ActorDeps, *, throttle: Throttle, restarts: int = 0) -> None:
        self.account = account
        self.deps = deps
        self.throttle = throttle
        self.cycles = 0  # completed cycles (the supervisor resets its backoff after one)
        self.retired = False  # set by the supervisor when it stops this actor: publish no more
        self._health = hs.initial(_now())
        self._commands = 0
        self._send, self._mailbox = trio.open_memory_channel[Request](MAILBOX_SIZE)
        self._status = st.ActorStatus(account_id=account.id, email=account.email, state=st.STARTING,
                                      health=str(self._health.health), restarts=restarts,
                                      step="taking the account lock")
        self._rr_offset = 0
        self._status_offset = 0
        self._last_discovery: float | None = None
        self._selected: str | None = None  # raw name of the mailbox a request left selected
        self._inbox: Folder | None = None  # the folder to IDLE on (INBOX, when included)
        self._last_expiry: float | None = None
        self._idle_refused = False
        self._notify_refused = False
        self._pushes = NotifyPushes()  # what NOTIFY said about the other folders
        # news the server sends while a visit runs comes inside that visit's command
        # responses, where nothing reads it: so after a push visit, the folder's state is
        # compared with the server's once more (INBOX by SELECT, the others by STATUS)
        self._inbox_recheck = False
        self._recheck: list[Folder] = []
        self._inbox_scanned_at = float("-inf")  # trio time of INBOX's last flag scan
        self._publish()

    # --- status ------------------------------------------------------------------------

    @property
    def status(self) -> st.ActorStatus:
        return self._status

    def _publish(self, **changes: Any) -> None:
        changes.setdefault("mailbox_depth", self._send.statistics().current_buffer_used)
        changes.setdefault("commands", self._commands)
        changes.setdefault("throttle_waits", self.throttle.waits)
        changes.setdefault("cycles", self.cycles)
        self._status = self._status.evolve(**changes)
        if not self.retired:
            self.deps.registry.publish(self._status)

    def _count_command(self, name: str) -> None:
        self._commands += 1
        metrics.IMAP_COMMANDS.labels(name).inc()

    async def _health_event(self, event: hs.Event, *, store: bool = True) -> None:
        """Advance the health machine; write it to the account row when we own it."""
        new = hs.advance(self._health, event, _now())
        if new is self._health:
            return
        self._health = new
        self._publish(health=str(new.health), health_reason=new.reason)
        if store:
            try:
                with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT):
                    await account_store.set_health(self.deps.db, self.account.id, str(new.health), new.reason)
            except DatabaseError as exc:
                log.warning("account %d: cannot store health %s: %s", self.account.id, new.health, exc)

    # --- life --------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled; raises (after recording health) when it should be restarted."""
        a = self.account
        try:
            async with AccountLock.hold(self.deps.db.dsn, a.id) as lock:
                await self._wait_for_lock(lock)
                log.info("account %d (%s): lock taken; syncing as %s", a.id, a.email, self.deps.owner)
                self._publish(state=st.CONNECTING, lock_held=True, step="logging in", last_error=None)
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._guard_lock, lock)
                        nursery.start_soon(self._heartbeat)
                        await self._with_session()
                        nursery.cancel_scope.cancel()
                except BaseException as exc:
                    cause = root_cause(exc)
                    if isinstance(cause, Exception):
                        await self._record_failure(cause)  # still the owner: health is ours to write
                    raise
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT):
                        try:
                            await account_store.set_owner(self.deps.db, a.id, None, only_if=self.deps.owner)
                        except DatabaseError:
                            pass
        except BaseException as exc:
            cause = root_cause(exc)
            self._publish(lock_held=False)
            if isinstance(cause, Exception):
                self._publish(last_error=_describe(cause))
                if cause is not exc:
                    raise cause from None
            raise
        finally:
            self._close_mailbox()

    async def _wait_for_lock(self, lock: AccountLock) -> None:
        timing = self.deps.timing
        if not lock.acquired:
            log.info("account %d: standby: another process holds its lock; retrying every %g s",
                     self.account.id, timing.standby_retry)
        while not lock.acquired:
            owner = None
            try:
                owner = await self.deps.db.fetchval("SELECT owner FROM accounts WHERE id = $1", self.account.id)
            except DatabaseError:
                pass
            await self._health_event(hs.Event("standby", f"synced by {owner or 'another process'}"), store=False)
            self._publish(state=st.STANDBY, lock_held=False,
                          step=f"standby: {owner or 'another process'} holds the account lock")
            await trio.sleep(timing.standby_retry * random.uniform(0.8, 1.2))
            await lock.retry()

    async def _guard_lock(self, lock: AccountLock) -> None:
        """Raise LockLost as soon as the lock connection is gone (cancelling IMAP work)."""
        while True:
            with trio.move_on_after(self.deps.timing.lock_probe):
                await lock.lost.wait()
            await lock.probe()

    async def _heartbeat(self) -> None:
        while True:
            try:
                await account_store.set_owner(self.deps.db, self.account.id, self.deps.owner)
            except DatabaseError as exc:
                log.warning("account %d: heartbeat failed: %s", self.account.id, exc)
            await trio.sleep(self.deps.timing.heartbeat)

    async def _record_failure(self, exc: Exception) -> None:
        metrics.ERRORS.labels(type(exc).__name__).inc()
        if isinstance(exc, LockLost):
            return  # the lock's next owner decides the health now
        if isinstance(exc, ImapConnectError):
            await self._health_event(hs.Event("unreachable", str(exc)))
        else:
            await self._health_event(hs.Event("error", _describe(exc)))

    # --- the session -------------------------------------------------------------------

    async def _with_session(self) -> None:
        a = self.account
        settings = self.deps.settings
        token = await account_store.get_password_encrypted(self.deps.db, a.id)
        try:
            password = Cipher(settings.require_keys()).decrypt(token)
        except SecretError as exc:
            # retrying cannot help: wait (holding the lock) until the account or the keys change
            await self._health_event(hs.Event("error", str(exc)))
            self._publish(state=st.PARKED, step="waiting for a key that opens the password", last_error=str(exc))
            await trio.sleep_forever()
        try:
            async with ImapSession.open(endpoint_of(a), password, timeout=settings.imap_timeout,
                                        connect_timeout=settings.connect_timeout, gate=self.throttle,
                                        on_command=self._count_command) as session:
                del password
                self.deps.registry.attach_mailbox(a.id, self._send)
                self._publish(step="logged in")
                await session.enable("QRESYNC", "CONDSTORE")
                await self._loop(session)
        except ImapAuthError as exc:
            log.warning("account %d: %s; waiting for new credentials", a.id, exc)
            await self._health_event(hs.Event("auth_failed", str(exc)))
            self._publish(state=st.PARKED, step="waiting for new credentials", last_error=str(exc))
            self.deps.registry.attach_mailbox(a.id, None)
            await trio.sleep_forever()
        finally:
            self.deps.registry.attach_mailbox(a.id, None)

    async def _loop(self, session: ImapSession) -> None:
        """A full cycle every tick; half way between, a light one (LIST and STATUS of the
        folders the full cycle did not visit), so a change in any folder shows within
        about half a tick plus the time to fetch it."""
        poll = self.deps.settings.poll_seconds
        while True:
            started = trio.current_time()
            await self._cycle(session)
            for light, deadline in ((True, started + poll / 2), (False, started + poll)):
                self._publish(state=st.IDLE, folder=None, step="waiting for the next cycle",
                              next_cycle_at=_now() + timedelta(seconds=max(0.0, deadline - trio.current_time())))
                if await self._wait(session, deadline):
                    break  # SyncNow: a full cycle at once
                if light:
                    await self._cycle(session, light=True)

    async def _wait(self, session: ImapSession, deadline: float) -> bool:
        """Until `deadline` (False) or a SyncNow (True): answer requests, and where the
        server offers IDLE, idle on INBOX and sync it as soon as the server announces a
        change."""
        self.deps.registry.limit_waiting(self.account.id, MAILBOX_SIZE)  # no sync steps to share with
        while trio.current_time() < deadline:
            if self._inbox is None or not session.has("IDLE") or self._idle_refused:
                if await self._wait_for_request(session, deadline):
                    return True
                continue
            kind, value = await self._idle_once(session, deadline)
            if kind == "request":
                if isinstance(value.payload, SyncNow):
                    value.answer(Reply(value="scheduled"))
                    return True
                await self._answer(session, value)
                self._publish()
            elif kind == "push":
                inbox_changed, elsewhere = value
                if inbox_changed:
                    await self._sync_inbox(session, reconcile=True, why="server push")
                await self._sync_elsewhere(session, elsewhere)
        return False

    async def _wait_for_request(self, session: ImapSession, deadline: float) -> bool:
        """Answer one request arriving before `deadline`; True for a SyncNow."""
        with trio.move_on_at(deadline):
            request = await self._mailbox.receive()
            if isinstance(request.payload, SyncNow):
                request.answer(Reply(value="scheduled"))
                return True
            await self._answer(session, request)
            self._publish()
        return False

    async def _idle_once(self, session: ImapSession, deadline: float) -> tuple[str, Any]:
        """Make sure INBOX is current, then IDLE on it until a push that matters, a
        request, the deadline or the re-IDLE interval.
        Returns ("push", (INBOX changed, folders)) / ("request", Request) / ("timeout", None).

        Where the server offers NOTIFY, it is set once for the session, so a change in
        any other included folder ends the IDLE too; the folders it names are returned
        with the push (None for one not known yet).  Its STATUS pushes that came with
        other commands' responses since the last call are returned first, as a push.
        After a push visit, a folder is compared with the server once more (INBOX by
        SELECT, others by STATUS): news sent while the visit ran came inside its responses.

        INBOX still selected: a NOOP collects what the server queued since (flag changes
        included).  Otherwise SELECT and compare UIDNEXT/EXISTS/HIGHESTMODSEQ with what
        the last visit stored; without CONDSTORE that cannot show flag changes made since
        INBOX was last scanned, so it is scanned again first (at most every few seconds).
        """
        if await self._ensure_notify(session):
            self._pushes.note(session.take_pushes())
        pending = self._pushes.take()
        if pending:
            return "push", (False, pending)
        inbox = self._inbox
        assert inbox is not None
        condstore = session.condstore
        if self._selected == inbox.raw_name and not self._inbox_recheck:
            news = parse_exists_expunge((await session.noop()).lines)
            if news.changed:
                await self._sync_inbox(session, reconcile=True, why="news before IDLE")
                return "timeout", None
        else:
            if not condstore and trio.current_time() - self._inbox_scanned_at > INBOX_RESCAN:
                await self._sync_inbox(session, reconcile=True, why="flag scan before IDLE")
                return "timeout", None
            self._inbox_recheck = False
            response = await session.select(inbox.raw_name, condstore=True)
            self._selected = inbox.raw_name
            info = parse_select(response.lines_and_text)
            stored = await self.deps.db.fetchrow(
                "SELECT uidnext, highestmodseq, server_message_count FROM folders WHERE id = $1", inbox.id)
            if stored is None:
                self._inbox = None
                return "timeout", None
            if (info.uidnext != stored["uidnext"] or info.exists != stored["server_message_count"]
                    or (info.highestmodseq is not None and info.highestmodseq != stored["highestmodseq"])):
                await self._sync_inbox(session, reconcile=True, why="changed while not idling", recheck=False)
                return "timeout", None
            if self._recheck:
                folders, self._recheck = self._recheck, []
                fresh = [f for f in [await load_folder(self.deps.db, f.id) for f in folders]
                         if f is not None and not f.excluded and not f.parked]
                changed = await self._changed_by_status(session, fresh, condstore)
                if changed:
                    await self._sync_elsewhere(session, tuple(changed), recheck=False)
                    return "timeout", None
        until = min(deadline, trio.current_time() + self.deps.settings.idle_seconds)
        self._publish(state=st.IDLE, folder=None, step="idling on INBOX (IMAP IDLE"
                      + (", NOTIFY for the other folders)" if self._pushes.active else ")"))
        return await self._idle_until(session, until)

    async def _idle_until(self, session: ImapSession, until: float) -> tuple[str, Any]:
        """IDLE until a push that matters, a request or `until` (see `_idle_once`)."""
        result: tuple[str, Any] = ("timeout", None)
        try:
            async with session.idle() as stream, trio.open_nursery() as nursery:
                nursery.cancel_scope.deadline = until

                async def pushes() -> None:
                    nonlocal result
                    while True:
                        push = parse_exists_expunge(await stream.next_push())
                        elsewhere = self._pushes.folders_in(push)
                        if push.changed or elsewhere:
                            result = ("push", (push.changed, elsewhere))
                            nursery.cancel_scope.cancel()
                            return

                async def requests() -> None:
                    nonlocal result
                    request = await self._mailbox.receive()
                    result = ("request", request)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(pushes)
                nursery.start_soon(requests)
        except ImapCommandError as exc:
            if exc.command != "IDLE":
                raise
            log.warning("account %d: IDLE refused (%s); polling instead", self.account.id, exc)
            self._idle_refused = True
        return result

    async def _ensure_notify(self, session: ImapSession) -> bool:
        """NOTIFY set for the session (once) where the server offers and accepts it, and
        `_pushes` watching the account's current folders; False without NOTIFY."""
        if self._notify_refused or not session.has("NOTIFY"):
            return False
        folders = await load_folders(self.deps.db, self.account.id)
        if not session.notifying and not await session.notify(NOTIFY_EVENTS):
            # Dovecot without mailbox list indexes answers NO [NOTIFICATIONOVERFLOW]
            log.info("account %d: the server refused NOTIFY; folders other than INBOX are checked "
                     "every cycle instead", self.account.id)
            self._notify_refused = True
            return False
        self._pushes.watch(folders)
        return True

    async def _sync_elsewhere(self, session: ImapSession, folders: Sequence[Pushed], *,
                              recheck: bool = True) -> None:
        """Visit the folders a NOTIFY push named; one not known yet (None) means a light
        cycle, whose LIST finds it.  With `recheck`, the next `_idle_once` compares the
        visited folders' STATUS with what the visit stored, once."""
        if None in folders:
            await self._cycle(session, light=True)
        condstore = session.condstore
        for pushed in folders:
            folder = await load_folder(self.deps.db, pushed.id) if pushed is not None else None
            if folder is None or folder.excluded or folder.parked:
                continue
            log.debug("account %d: syncing %r (NOTIFY)", self.account.id, folder.name)
            async for _step in self._folder_steps(session, folder, FolderWork(folder, flag_scan=not condstore)):
                pass
            if recheck and all(f.id != folder.id for f in self._recheck):
                self._recheck.append(folder)
        if folders:
            self._publish(state=st.IDLE, folder=None)

    async def _sync_inbox(self, session: ImapSession, *, reconcile: bool, why: str, recheck: bool = True) -> None:
        inbox = await load_folder(self.deps.db, self._inbox.id) if self._inbox else None
        if inbox is None or inbox.excluded or inbox.parked:
            self._inbox = None
            return
        log.debug("account %d: syncing INBOX (%s)", self.account.id, why)
        condstore = session.condstore
        async for step in self._folder_steps(session, inbox, FolderWork(inbox, flag_scan=reconcile and not condstore)):
            pass
        if reconcile:
            self._inbox_scanned_at = trio.current_time()
        self._inbox_recheck = recheck
        self._publish(state=st.IDLE, folder=None)

    # --- one cycle ---------------------------------------------------------------------

    async def _cycle(self, session: ImapSession, *, light: bool = False) -> None:
        """One cycle (see `mailbridge.sync.planner`).  A light cycle visits only folders
        that are new or whose STATUS changed, and does no scans or reconciles."""
        a = self.account
        settings = self.deps.settings
        t0 = trio.current_time()
        db = self.deps.db
        if self._last_discovery is None or t0 - self._last_discovery >= self.deps.timing.rediscover:
            self._publish(state=st.SYNCING, step="listing folders")
            folders = await discover(db, session, a.id, a.excluded_folders)
            self._last_discovery = t0
        else:
            folders = await load_folders(db, a.id)
        condstore = session.condstore
        plan = plan_cycle(
            folders, now=_now(), offset=self._rr_offset, status_offset=self._status_offset,
            folders_per_tick=settings.folders_per_tick, status_per_tick=settings.status_checks_per_tick,
            scans_per_tick=settings.flag_scans_per_tick, condstore=condstore,
            reconcile_every=timedelta(hours=settings.reconcile_hours),
            reconcile_jitter=timedelta(minutes=settings.reconcile_jitter_minutes))
        if light:
            plan = CyclePlan(tuple(w for w in plan.work if not w.folder.initial_sync_complete),
                             tuple(f for f in folders if f.initial_sync_complete and not f.is_priority
                                   and not f.excluded and not f.parked)[: settings.status_checks_per_tick],
                             plan.next_offset, plan.next_status_offset)
        else:
            self._rr_offset, self._status_offset = plan.next_offset, plan.next_status_offset
        self._inbox = next((f for f in folders if f.name == "INBOX" and not f.excluded and not f.parked), None)
        await self._health_event(hs.Event("cycle_started", initial_pending=plan.initial_pending))
        if not light:
            await self._expire_old(session, t0)
        problems: list[str] = [parked_problem(a.id, f.name) for f in folders if f.parked and not f.excluded]
        totals = [0, 0, 0]

        async def visit(work: FolderWork) -> None:
            try:
                async for step in self._folder_steps(session, work.folder, work):
                    totals[0] += step.added
                    totals[1] += step.changed
                    totals[2] += step.removed
                    if step.phase == "parked":
                        problems.append(parked_problem(a.id, step.folder))
            except ImapCommandError as exc:
                # one folder's refusal (NO/BAD) must not stop the others
                log.warning("account %d: folder %r: %s", a.id, work.folder.name, exc)
                metrics.ERRORS.labels(type(exc).__name__).inc()
                problems.append(f"folder {work.folder.name!r}: {exc}")

        for work in plan.work:
            await visit(work)
        visited = len(plan.work)
        for folder in await self._changed_by_status(session, plan.status_checks, condstore):
            await visit(FolderWork(folder))
            visited += 1
        if not light:
            self.cycles += 1
            metrics.CYCLE_SECONDS.observe(trio.current_time() - t0)
        await self._health_event(hs.Event("cycle_done", "; ".join(problems) or None))
        log.info("account %d: cycle %d: %d folder(s) visited, %d checked, +%d ~%d -%d in %.1f s", a.id,
                 self.cycles, visited, len(plan.status_checks), *totals, trio.current_time() - t0)

    async def _changed_by_status(self, session: ImapSession, folders: Sequence[Folder],
                                 condstore: bool) -> list[Folder]:
        """The folders whose STATUS differs from what their last visit stored."""
        if not folders:
            return []
        self._publish(state=st.SYNCING, folder=None, step=f"checking {len(folders)} folder(s) with STATUS")
        stored = {r["id"]: r["server_message_count"] for r in await self.deps.db.fetch(
            "SELECT id, server_message_count FROM folders WHERE account_id = $1", self.account.id)}
        items = ["MESSAGES", "UIDNEXT", "UIDVALIDITY"] + (["HIGHESTMODSEQ"] if condstore else [])
        changed = []
        for folder in folders:
            try:
                response = await session.status(folder.raw_name, items)
                info = parse_status(response.lines, (folder.raw_name, folder.name))
                self._pushes.note(response.lines, but=folder)  # others' NOTIFY STATUS may come along
            except ImapCommandError as exc:
                log.info("account %d: STATUS %r refused (%s); visiting it", self.account.id, folder.name, exc)
                changed.append(folder)
                continue
            if status_changed(folder, messages=info.messages, uidnext=info.uidnext, uidvalidity=info.uidvalidity,
                              highestmodseq=info.highestmodseq, stored_messages=stored.get(folder.id)):
                changed.append(folder)
            await self._between_steps(session, None)
        return changed

    async def _expire_old(self, session: ImapSession, now: float) -> None:
        """Daily, with MAILBRIDGE_RETENTION_DAYS set: drop messages older than the window,
        1,000 per transaction, answering requests between batches."""
        days = self.deps.settings.retention_days
        if not days or (self._last_expiry is not None and now - self._last_expiry < EXPIRY_INTERVAL):
            return
        self._last_expiry = now
        cutoff = _now() - timedelta(days=days)
        self._publish(state=st.SYNCING, step=f"expiring messages older than {days} days")
        total = 0
        while n := await retention_store.expire_batch(self.deps.db, self.account.id, cutoff):
            total += n
            metrics.MESSAGES.labels("expired").inc(n)
            await self._between_steps(session, None)
        if total:
            log.info("account %d: %d message(s) older than %d days left the mirror", self.account.id, total, days)

    async def _folder_steps(self, session: ImapSession, folder: Folder, work: FolderWork | None = None):
        """The folder's steps; requests are answered after each one."""
        work = work or FolderWork(folder)
        self._publish(state=st.SYNCING, folder=folder.name, step=f"syncing {folder.name}")
        steps = sync_folder_steps(self.deps.db, session, folder, self.deps.settings, flag_scan=work.flag_scan,
                                  full_reconcile=work.full_reconcile)
        try:
            async for step in steps:
                self._selected = folder.raw_name
                self._progress(step)
                yield step
                if not await self._between_steps(session, folder):
                    log.info("account %d: folder %r changed while answering a request; next cycle resumes",
                             self.account.id, folder.name)
                    return
        finally:
            await steps.aclose()

    def _progress(self, step: Step) -> None:
        metrics.count_step(step.added, step.changed, step.removed)
        previous = next((p for p in self._status.folders if p.name == step.folder), None)
        synced = step.synced
        if step.phase != "done" and not synced:
            synced = previous.synced if previous else 0
        synced_at = _now() if step.phase == "done" else (previous.synced_at if previous else None)
        self._status = self._status.with_folder(
            st.FolderProgress(step.folder, step.phase, synced, step.total, synced_at))
        self._publish(step=f"{step.phase} {step.folder}")

    async def _between_steps(self, session: ImapSession, folder: Folder | None) -> bool:
        """Answer the requests waiting now (not those arriving meanwhile: a steady stream
        of requests must not stop the sync); if one selected another mailbox, re-select
        `folder`.  False when the folder cannot go on (its UIDVALIDITY changed meanwhile).

        When the throttle lacks the commands for all of them and the next step, it answers
        one: requests and sync steps then take turns at the throttle, and at most
        WAITING_WHEN_THROTTLED more may wait (the registry refuses the rest at once), so
        requests beyond its rate neither stall the mirror nor wait near their timeout."""
        moved = False
        waiting = self._send.statistics().current_buffer_used
        short = waiting > 0 and self.throttle.available < REQUEST_COMMANDS * waiting + 1
        # throttled, let only a few wait (each is answered within a few steps) and refuse
        # the rest at once, rather than hold 16 for a wait near the caller's timeout
        self.deps.registry.limit_waiting(self.account.id, WAITING_WHEN_THROTTLED if short else MAILBOX_SIZE)
        if short:
            waiting = 1
        for _ in range(waiting):
            try:
                request = self._mailbox.receive_nowait()
            except trio.WouldBlock:
                break
            if isinstance(request.payload, SyncNow):
                request.answer(Reply(value="running"))
                continue
            await self._answer(session, request)
            self._publish()
            moved = moved or (folder is not None and self._selected != folder.raw_name)
        if not moved or folder is None:
            return True
        response = await session.select(folder.raw_name, condstore=True)
        self._selected = folder.raw_name
        info = parse_select(response.lines_and_text)
        stored = await self.deps.db.fetchval("SELECT uidvalidity FROM folders WHERE id = $1", folder.id)
        return stored is None or info.uidvalidity == stored

    # --- requests ----------------------------------------------------------------------

    async def _answer(self, session: ImapSession, request: Request) -> None:
        try:
            value = await fetch_body(session, self.deps.db, request.payload, self._selected, self._on_select)
        except (MailbridgeError, ImapError) as exc:
            request.answer(Reply(error=exc))
            if isinstance(exc, ImapConnectionLost):
                raise
        except BaseException:
            request.answer(Reply(error=ActorUnavailable("the actor stopped while answering", 5.0)))
            raise
        else:
            request.answer(Reply(value=value))

    def _on_select(self, raw_name: str) -> None:
        self._selected = raw_name

    def _close_mailbox(self) -> None:
        """Answer whatever is still queued (callers must not wait for a dead actor)."""
        self.deps.registry.attach_mailbox(self.account.id, None)
        self._send.close()
        while True:
            try:
                request = self._mailbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            request.answer(Reply(error=ActorUnavailable(
                f"account {self.account.id}'s actor stopped; try again shortly", 5.0)))
        self._mailbox.close()


# commands a body request may take: EXAMINE of its folder, the FETCH, SELECT back
REQUEST_COMMANDS = 3
# requests let wait between sync steps while the throttle is short (one is answered a step)
WAITING_WHEN_THROTTLED = 4


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, MailbridgeError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


ActorFactory = Callable[[Account, Throttle, int], AccountActor]

__all__ = ["AccountActor", "ActorDeps", "ActorFactory", "ActorTiming", "root_cause"]

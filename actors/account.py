"""AccountActor: one account's lock, IMAP session and throttle, for its whole life.

Life of an actor (`run`, for `serve`):

1. take the account's session advisory lock on one of the process's lock connections
   (`mailbridge.aio.locks`: a lease, no connection of its own); not acquired → `standby`,
   retried every `timing.standby_retry` seconds (jittered), at no cost but one statement;
2. with the lock: record itself as the account's owner, watch the lease (its connection
   lost → `LockLost` cancels all IMAP work at once), decrypt the password, log in.  Under
   `serve` the process's membership writes every owned account's heartbeat in one
   statement; `run_once` keeps its own;
3. serve (`actors.serving`): cycles of folder visits (`actors.visits`) on the tick, and
   in between the watch (`actors.watch`: IDLE, NOTIFY and the request mailbox), visiting
   what the server announces and answering requests.

`run_once` (for `sync --once`) is the same machinery run to completion: the lock (not
acquired → skipped), login, one complete cycle, the health, then it returns.

`hand_over()` (the account now belongs to another process) stops the actor at its next
step boundary, so the batch in flight commits first; `run` then returns.

It publishes an immutable `ActorStatus` after every step.  `run` returns only when
cancelled; it raises on a failure the supervisor should handle (backoff and restart),
after recording the account's health and the least wait the failure asks for
(`retry_after`, from `mailbridge.sync.health.judge`).  A restarted actor starts from
the health its predecessor left.  A rejected login does not raise: the actor parks
(still holding the lock, so no other process retries either) until the supervisor
replaces it because the credentials changed.

Cancellation: every cleanup (LOGOUT, lock release, owner record, pending requests
answered) is shielded and bounded, so cancelling an actor finishes within seconds.
"""

from __future__ import annotations

import logging
import math
import random
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, NoReturn, TypeVar

import trio

from actors import status as st
from actors.mailbox import RequestMailbox
from actors.pushes import NotifyPushes
from actors.registry import Registry
from actors.serving import Serving
from actors.visits import CycleOutcome, Visits, now_utc
from actors.watch import Watch
from mailbridge import metrics
from mailbridge.accountops import endpoint_of
from mailbridge.aio.db import Database
from mailbridge.aio.locks import Lease, LockConnections
from mailbridge.aio.imap import ImapSession
from mailbridge.credentials import Bearer
from mailbridge.oauth2.signin import signed_in, stored_credential
from mailbridge.oauth2.tokens import renewal_delay
from mailbridge.config import Settings
from mailbridge.errors import (
    DatabaseError,
    ImapAuthError,
    LockLost,
    MailbridgeError,
    SecretError,
    root_cause,
)
from mailbridge.imap.throttle import Throttle
from mailbridge.secrets import Cipher
from mailbridge.store import accounts as account_store
from mailbridge.store import members as member_store
from mailbridge.store.accounts import Account
from mailbridge.store.db import Db
from mailbridge.sync import health as hs
from mailbridge.sync.folder import Step

log = logging.getLogger(__name__)
CLEANUP_TIMEOUT = 5.0
HEALTH_WRITE_TIMEOUT = 30.0  # a health write waits this long for the pool (shielded: a stop waits too)
_JITTER = random.Random()  # our own generator: the global one's state is not ours to move
# states in which a hand-over stops the actor at once (no step in flight)
HAND_OVER_NOW = frozenset({st.STARTING, st.STANDBY, st.CONNECTING, st.IDLE, st.PARKED})
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ActorTiming:
    """Intervals an actor keeps (tests shorten them)."""

    standby_retry: float = 2.0      # seconds between lock attempts while another process owns it
    heartbeat: float = 15.0         # seconds between owner/heartbeat_at updates (run_once)
    rediscover: float = 0.0         # least seconds between LISTs (0: every cycle; one command)


@dataclass(frozen=True, slots=True)
class ActorDeps:
    """What every actor of a process shares."""

    db: Database
    settings: Settings
    registry: Registry
    owner: str                      # host:pid, stored in accounts.owner
    locks: LockConnections          # the process's lock connections
    timing: ActorTiming = ActorTiming()


@dataclass(frozen=True, slots=True)
class OnceResult:
    """How `run_once` ended: the cycle's outcome, or the problem that stopped it."""

    outcome: CycleOutcome | None
    problem: str | None = None


class AccountActor:
    """Syncs one account; see the module doc for its life."""

    def __init__(self, account: Account, deps: ActorDeps, *, throttle: Throttle, restarts: int = 0,
                 on_step: Callable[[Step], None] | None = None) -> None:
        self.account = account
        self.deps = deps
        self.throttle = throttle
        self.cycles = 0  # completed cycles (the supervisor resets its backoff after one)
        self.retired = False  # set by the supervisor when it stops this actor: publish no more
        self.retry_after: float | None = None  # after a failure: least seconds before the next start
        self.handing_over = False  # set by `hand_over`: stop at the next step boundary
        self._life = trio.CancelScope()  # cancelled to stop after a hand-over
        # an OAuth2 session ends before its access token expires: at `_renew_at` (trio
        # time) when between steps, else at the next step boundary after it (`publish`)
        self._renewal: trio.CancelScope | None = None
        self._renew_at = math.inf
        self._logged_in = False
        self.mailbox = RequestMailbox(account.id, deps.registry, throttle)
        self._on_step = on_step
        # a restarted actor carries the account's health on (a crash loop does not show
        # "starting"/"syncing" between failures); only a good cycle makes it healthy
        previous = deps.registry.status(account.id) if restarts else None
        self._health = (hs.resumed(previous.health, previous.health_reason, now_utc()) if previous is not None
                        else hs.initial(now_utc()))
        self._commands = 0
        self._health_unstored = restarts > 0  # the row may not hold the health (a write failed): write it
        self._status = st.ActorStatus(account_id=account.id, email=account.email, state=st.STARTING,
                                      health=str(self._health.health), restarts=restarts,
                                      step="taking the account lock")
        self.publish()

    # --- status (the `actors.visits.Reporter` of its visits) ---------------------------

    @property
    def status(self) -> st.ActorStatus:
        return self._status

    def publish(self, **changes: Any) -> None:
        """A new status snapshot with `changes`, for the registry (unless retired)."""
        changes.setdefault("mailbox_depth", self.mailbox.depth)
        changes.setdefault("commands", self._commands)
        changes.setdefault("throttle_waits", self.throttle.waits)
        changes.setdefault("cycles", self.cycles)
        self._status = self._status.evolve(**changes)
        if not self.retired:
            self.deps.registry.publish(self._status)
        if self.handing_over and (self._status.state in HAND_OVER_NOW or "step" in changes):
            self._life.cancel()  # between steps: nothing in flight is lost
        if self._renewal is not None:
            if self._status.state in HAND_OVER_NOW:
                self._renewal.deadline = self._renew_at  # idle: end the session when due
            else:
                self._renewal.deadline = math.inf  # a step in flight finishes first
                if "step" in changes and trio.current_time() >= self._renew_at:
                    self._renewal.cancel()

    def progress(self, step: Step) -> None:
        """One step done: metrics, the folder's progress in the status, the observer."""
        metrics.count_step(step.added, step.changed, step.removed)
        self._status = self._status.after_step(step.folder, step.phase, step.synced, step.total)
        self.publish(step=f"{step.phase} {step.folder}")
        if self._on_step is not None:
            self._on_step(step)
        if self.handing_over:
            self._life.cancel()  # the step committed: stop before the next one

    async def health(self, event: hs.Event, *, store: bool = True) -> None:
        """Advance the health machine; write it to the account row when we own it."""
        new = hs.advance(self._health, event, now_utc())
        if new is self._health and not (store and self._health_unstored):
            return
        if new is not self._health:
            self._health = new
            self.publish(health=str(new.health), health_reason=new.reason)
        if store:
            # a write that failed (Postgres away) is made again at the next event
            self._health_unstored = True
            try:
                with trio.CancelScope(shield=True), trio.move_on_after(HEALTH_WRITE_TIMEOUT) as scope:
                    await account_store.set_health(self.deps.db, self.account.id, str(new.health), new.reason)
                    self._health_unstored = False
                if scope.cancelled_caught:
                    log.info("account %d: storing health %s took over %g s (the pool is busy); retried at the "
                             "next event", self.account.id, new.health, HEALTH_WRITE_TIMEOUT)
            except DatabaseError as exc:
                log.warning("account %d: cannot store health %s: %s", self.account.id, new.health, exc)

    def _count_command(self, name: str) -> None:
        self._commands += 1
        metrics.IMAP_COMMANDS.labels(name).inc()

    # --- life --------------------------------------------------------------------------

    def hand_over(self) -> None:
        """Stop soon: at once when between steps (idle, standby, parked, logging in),
        else after the step in flight commits.  `run` then returns."""
        self.handing_over = True
        if self._status.state in HAND_OVER_NOW:
            self._life.cancel()

    async def run(self) -> None:
        """Run until cancelled or handed over; raises (after recording health) when it
        should be restarted."""
        a = self.account
        try:
            with self._life:
                lease = await self._wait_for_lock()
                try:
                    log.info("account %d (%s): lock taken; syncing as %s", a.id, a.email, self.deps.owner)
                    async with self._owning(lease, heartbeat=False):
                        await self._session(self._serve, park=True)
                finally:
                    await lease.release(before=self._disown)
            if self.handing_over:
                log.info("account %d: handed over to another process", a.id)
        except BaseException as exc:
            cause = root_cause(exc)
            self.publish(lock_held=False, owner=None)
            if isinstance(cause, Exception):
                self.publish(last_error=st.describe_error(cause))
                if cause is not exc:
                    raise cause from None
            raise
        finally:
            self.mailbox.close()

    async def run_once(self) -> OnceResult:
        """`sync --once` for this account: one complete cycle under the lock, then return.
        Never raises our errors: they are recorded as health and returned as the problem."""
        a = self.account
        self._health = hs.resumed(a.health, a.health_reason, a.health_changed_at)
        try:
            lease = await self.deps.locks.try_lock(a.id, then=self._own)
            if lease is None:
                owner = await account_store.get_owner(self.deps.db, a.id)
                return OnceResult(None, f"account {a.id} is being synced by another process "
                                        f"({owner or 'unknown'}); skipped")
            try:
                async with self._owning(lease, heartbeat=True):
                    return OnceResult(await self._session(self._complete, park=False))
            finally:
                await lease.release(before=self._disown)
        except Exception as exc:
            cause = root_cause(exc)
            if not isinstance(cause, MailbridgeError):
                raise
            return OnceResult(None, str(cause))
        finally:
            self.mailbox.close()

    async def _wait_for_lock(self) -> Lease:
        """The account's lease, once taken (standby until then)."""
        timing = self.deps.timing
        lease = await self.deps.locks.try_lock(self.account.id, then=self._own)
        if lease is None:
            log.info("account %d: standby: another process holds its lock; retrying every %g s",
                     self.account.id, timing.standby_retry)
        while lease is None:
            owner = None
            try:
                owner = await account_store.get_owner(self.deps.db, self.account.id)
            except DatabaseError:
                pass
            await self.health(hs.Event("standby", f"synced by {owner or 'another process'}"), store=False)
            self.publish(state=st.STANDBY, lock_held=False,
                         step=f"standby: {owner or 'another process'} holds the account lock")
            await trio.sleep(timing.standby_retry * _JITTER.uniform(0.8, 1.2))
            lease = await self.deps.locks.try_lock(self.account.id, then=self._own)
        return lease

    @asynccontextmanager
    async def _owning(self, lease: Lease, *, heartbeat: bool) -> AsyncIterator[None]:
        """While the lock is held: the owner record's heartbeat (here when `heartbeat`,
        else the process's membership writes it), and the guard that cancels everything
        when the lease is lost.  A failure in the body is recorded as the account's
        health (we still own it) and re-raised.  The owner itself is written next to the
        lock, on the lock's connection (`_own`, `_disown`)."""
        self.publish(state=st.CONNECTING, lock_held=True, step="logging in", last_error=None,
                     owner=self.deps.owner)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._guard_lock, lease)
                if heartbeat:
                    nursery.start_soon(self._heartbeat)
                yield
                nursery.cancel_scope.cancel()
        except BaseException as exc:
            cause = root_cause(exc)
            if isinstance(cause, Exception):
                await self._record_failure(cause)
            raise

    async def _own(self, conn: Db) -> None:
        """Record this process as the owner: on the lock's connection, right after the
        lock was taken, so no queue for the pool lies between the two."""
        await member_store.record_owner(conn, self.account.id, self.deps.owner)

    async def _disown(self, conn: Db) -> None:
        """Clear the owner record (if still ours): on the lock's connection, right before
        the lock is released, so the next owner's record cannot be overtaken."""
        await member_store.record_owner(conn, self.account.id, None, only_if=self.deps.owner)

    async def _guard_lock(self, lease: Lease) -> None:
        """Raise LockLost as soon as the lease is lost (cancelling IMAP work)."""
        await lease.lost.wait()
        raise LockLost(f"the lock connection holding account {self.account.id}'s lock was lost")

    async def _heartbeat(self) -> None:
        while True:
            try:
                await account_store.set_owner(self.deps.db, self.account.id, self.deps.owner)
            except DatabaseError as exc:
                log.warning("account %d: heartbeat failed: %s", self.account.id, exc)
            await trio.sleep(self.deps.timing.heartbeat)

    async def _record_failure(self, exc: Exception) -> None:
        """The failure's health (`mailbridge.sync.health.judge`), and its hint for the
        supervisor's next start (`retry_after`): a server that turned us away is asked
        again no sooner than one poll tick, a throttling one no sooner than it asked."""
        metrics.ERRORS.labels(type(exc).__name__).inc()
        verdict = hs.judge(exc, logged_in=self._logged_in, unavailable_floor=self.deps.settings.poll_seconds)
        self.retry_after = verdict.retry_after
        if verdict.event is not None:  # None: the lock is lost; its next owner decides the health
            await self.health(verdict.event)

    async def _park(self, step: str, reason: str) -> NoReturn:
        """Wait, holding the lock, until the supervisor replaces this actor."""
        self.publish(state=st.PARKED, step=step, last_error=reason)
        self.mailbox.detach()
        await trio.sleep_forever()

    # --- the session -------------------------------------------------------------------

    async def _session(self, body: Callable[[ImapSession], Awaitable[T]], *, park: bool) -> T:
        """Decrypt the password, log in and run `body` on the session.  Credentials that
        cannot work (no key opens the password, the server rejects the login) are recorded
        as the health, then park the actor (`park`) or raise.  With `park` (serving), an
        OAuth2 session ends shortly before its access token expires, at a step boundary,
        and `body` starts again in a new session signed in with a refreshed token: no
        error, no health change, not a restart."""
        while True:
            renewal = trio.CancelScope()
            try:
                with renewal:
                    return await self._signed_in_session(body, park=park, renewal=renewal)
            finally:
                self._renewal, self._renew_at = None, math.inf
            # only the renewal was cancelled (any other cancellation propagates from `with`)
            log.info("account %d: OAuth2 access token about to expire; signing in again", self.account.id)
            self.publish(step="signing in again (OAuth2 token renewal)")

    async def _signed_in_session(self, body: Callable[[ImapSession], Awaitable[T]], *, park: bool,
                                 renewal: trio.CancelScope) -> T:
        a = self.account
        settings = self.deps.settings
        try:
            # the password, or an OAuth2 access token (refreshed when due, and once more
            # when the server refuses it: `signed_in`)
            credential = await stored_credential(self.deps.db, settings, a)
        except SecretError as exc:
            # retrying cannot help: wait (holding the lock) until the account or the keys change
            await self.health(hs.Event("error", str(exc)))
            if not park:
                raise
            await self._park("waiting for a key that opens the password", str(exc))
        except ImapAuthError as exc:  # OAuth2Revoked / OAuth2Error: the refresh was refused
            log.warning("account %d: %s; waiting for new credentials", a.id, exc)
            await self.health(hs.Event("auth_failed", str(exc)))
            if not park:
                raise
            await self._park("waiting for new credentials", str(exc))
        try:
            async with signed_in(self.deps.db, settings, a, credential=credential, gate=self.throttle,
                                 on_command=self._count_command) as session:
                if park and isinstance(credential, Bearer) and credential.expires_at is not None:
                    self._renew_at = trio.current_time() + renewal_delay(credential.expires_at, now_utc())
                    self._renewal = renewal
                del credential
                self._logged_in = True
                self.mailbox.attach()
                self.publish(step="logged in")
                await session.enable("QRESYNC", "CONDSTORE")
                return await body(session)
        except ImapAuthError as exc:
            log.warning("account %d: %s; waiting for new credentials", a.id, exc)
            await self.health(hs.Event("auth_failed", str(exc)))
            if not park:
                raise
            await self._park("waiting for new credentials", str(exc))
        finally:
            self.mailbox.detach()

    def _visits(self, session: ImapSession, pushes: NotifyPushes) -> Visits:
        return Visits(self.account, self.deps.db, self.deps.settings, session, self.mailbox, pushes, self,
                      rediscover=self.deps.timing.rediscover)

    async def _complete(self, session: ImapSession) -> CycleOutcome:
        outcome = await self._visits(session, NotifyPushes()).complete()
        self._cycle_done()
        return outcome

    async def _serve(self, session: ImapSession) -> None:
        pushes = NotifyPushes()  # what NOTIFY said about the other folders
        visits = self._visits(session, pushes)
        watch = Watch(self.deps.db, self.account.id, self.mailbox, pushes,
                      idle_seconds=self.deps.settings.idle_seconds, check_status=visits.changed_by_status,
                      on_idle=lambda step: self.publish(state=st.IDLE, folder=None, step=step))
        await Serving(session, visits, watch, self.mailbox, self.deps.db,
                      poll_seconds=self.deps.settings.poll_seconds, publish=self.publish,
                      on_cycle=self._cycle_done).run()

    def _cycle_done(self) -> None:
        self.cycles += 1


__all__ = ["AccountActor", "ActorDeps", "ActorTiming", "OnceResult"]

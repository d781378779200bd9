"""The Supervisor: exactly one AccountActor per enabled account this process may run.

- Learns of added, changed, disabled and removed accounts at once through Postgres
  LISTEN/NOTIFY (channel ``mailbridge_accounts``, fired by a trigger on ``accounts``),
  with a periodic rescan as the safety net (a lost notification, a lost LISTEN
  connection).
- ``MAILBRIDGE_MAX_ACCOUNTS`` is the deployment's limit: the oldest accounts, the same
  ones in every process; the rest are reported ``over_limit``, disabled ones ``disabled``.
- With several serve processes (`shares`: the process's `actors.membership.Membership`),
  runs actors only for its share of those (`actors.shares`); an account whose share moves
  to another process is handed over (its actor stops after the step in flight, at most
  ``handover_grace`` seconds, and releases the lock the new owner is waiting for).  The
  others are published as ``elsewhere`` with the owner and health the accounts table
  records.
- A changed account (server, login, credentials, exclusions) gets a fresh actor, started
  only after the old one has released its lock.
- Restarts a crashed actor after an exponential backoff with jitter; a hint from the
  failure (`retry_after`: the server asked us to wait, or said it is unavailable) is a
  floor under that backoff, so a server that turns us away is not asked again at once.
  Restart budget, as OTP supervisors: more than ``intensity`` restarts within
  ``period`` seconds and the actor rests for ``cooldown`` seconds before the next try
  (the process and the other accounts carry on; an OTP supervisor would give up and
  crash, which here would take every account down with one).  The backoff starts over
  once an actor completes a cycle.
- An actor whose login is refused parks itself (see `actors.account`): no retry storm;
  the new credentials' NOTIFY restarts it.
- Throttles outlive actor restarts: a crash loop cannot buy a fresh burst of commands.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncContextManager, Callable, Protocol, Sequence

import trio

from actors import status as st
from actors.account import AccountActor
from actors.registry import Registry
from mailbridge.errors import DatabaseError, LockLost, MailbridgeError, root_cause
from mailbridge.imap.throttle import Throttle
from mailbridge.store.accounts import Account

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "mailbridge_accounts"
OUTAGE_BACKOFF_CAP = 30.0  # longest backoff after a database or lock failure


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Backoff and restart budget for crashed actors."""

    base: float = 1.0        # first backoff, seconds
    cap: float = 300.0       # longest backoff
    jitter: float = 0.25     # ± fraction of the backoff
    intensity: int = 5       # restarts allowed ...
    period: float = 300.0    # ... within this many seconds
    cooldown: float = 600.0  # rest when the budget is exhausted

    def backoff(self, failures: int, rng: random.Random, floor: float | None = None) -> float:
        """Seconds before restart number `failures` (1, 2, ...) in a row; never less than
        `floor` (a hint from the failure), and the jitter only ever adds to a floor."""
        delay = min(self.cap, self.base * 2 ** max(0, failures - 1))
        delay = max(0.0, delay * (1 + rng.uniform(-self.jitter, self.jitter)))
        if floor is not None and delay < floor:
            delay = floor * (1 + rng.uniform(0.0, self.jitter))
        return delay


def retry_hint(actor: Any, cause: BaseException) -> float | None:
    """The least seconds before the next start that the failure asks for: the actor's
    verdict (`AccountActor.retry_after`) or the error's own `retry_after`, the longer."""
    hints = [h for h in (getattr(actor, "retry_after", None), getattr(cause, "retry_after", None))
             if isinstance(h, (int, float)) and h > 0]
    return max(hints) if hints else None


class AccountSource(Protocol):
    """Where the supervisor learns about accounts."""

    async def load(self) -> Sequence[Account]:
        """Every account, in any order."""

    def listen(self) -> AsyncContextManager[trio.MemoryReceiveChannel[str]]:
        """Notifications of account changes (any payload means "rescan")."""

    async def record(self, account_id: int, health: str, reason: str) -> None:
        """Store the health of an account no actor runs (over_limit, disabled)."""


class Shares(Protocol):
    """How this process learns its share of the accounts (`actors.membership.Membership`)."""

    def split(self, account_ids: Sequence[int]) -> dict[int, str]:
        """account id → the name (host:pid) of the process that should own it; the
        accounts of this process map to `own_name`."""

    @property
    def own_name(self) -> str: ...

    async def refresh(self) -> None:
        """Learn the live processes now (before a split); never raises."""


class DbAccountSource:
    """Accounts from Postgres; changes by LISTEN on the accounts trigger's channel."""

    def __init__(self, db: Any) -> None:
        self.db = db

    async def load(self) -> Sequence[Account]:
        from mailbridge.store import accounts as account_store

        return await account_store.list_all(self.db)

    def listen(self) -> AsyncContextManager[trio.MemoryReceiveChannel[str]]:
        return self.db.listen(NOTIFY_CHANNEL)

    async def record(self, account_id: int, health: str, reason: str) -> None:
        from mailbridge.store import accounts as account_store

        await account_store.set_health(self.db, account_id, health, reason)


def fingerprint(account: Account) -> tuple:
    """What, when it changes, needs a fresh actor."""
    return (account.email, account.imap_host, account.imap_port, account.imap_tls, account.imap_username,
            account.verify_certificate, account.excluded_folders, account.credentials_changed_at)


def run_order(accounts: Sequence[Account]) -> list[Account]:
    """Enabled accounts, oldest first (the ones that run when there are too many)."""
    return sorted((a for a in accounts if a.enabled), key=lambda a: (a.created_at, a.id))


ActorFactory = Callable[[Account, Throttle, int], AccountActor]


@dataclass
class _Child:
    account: Account
    fingerprint: tuple
    throttle: Throttle
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    restarts: int = 0
    recent: deque = field(default_factory=deque)  # trio times of recent restarts
    actor: AccountActor | None = None
    running: bool = False   # an actor is running (not waiting for a restart)
    leaving: bool = False   # stopped or handed over: never restarted

    def stop(self) -> None:
        """Cancel the child; its actor's late snapshots no longer reach the registry."""
        self.leaving = True
        if self.actor is not None:
            self.actor.retired = True
        self.scope.cancel()

    def hand_over(self) -> None:
        """Stop the child after the step in flight (the supervisor bounds the wait)."""
        self.leaving = True
        if self.actor is not None and self.running:
            self.actor.retired = True
            self.actor.hand_over()
        else:
            self.stop()


def _cancellation_only(exc: BaseException, account_id: int) -> BaseException:
    """`exc` without the errors that raced a cancellation (they are logged instead).

    An actor being stopped can fail on its way out (a removed account's rows vanish under
    a write).  Raised together with the Cancelled, such an error would pass the crash
    handler (a mixed group is not an Exception) and take the supervisor down with it.
    """
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    cancelled, errors = exc.split(trio.Cancelled)
    if cancelled is None or errors is None:
        return exc
    for error in errors.exceptions:
        log.info("account %d: while stopping: %s", account_id, st.describe_error(root_cause(error)))
    return cancelled


class Supervisor:
    """Keeps the actors matching the accounts table; see the module doc."""

    def __init__(self, source: AccountSource, registry: Registry, *, max_accounts: int,
                 commands_per_minute: int, actor_factory: ActorFactory,
                 policy: RestartPolicy = RestartPolicy(), rescan_seconds: float = 30.0,
                 listen_retry: float = 2.0, rng: random.Random | None = None, shares: Shares | None = None,
                 handover_grace: float = 10.0) -> None:
        self.source = source
        self.registry = registry
        self.max_accounts = max_accounts
        self.commands_per_minute = commands_per_minute
        self.actor_factory = actor_factory
        self.policy = policy
        self.rescan_seconds = rescan_seconds
        self.listen_retry = listen_retry
        self.rng = rng or random.Random()
        self.shares = shares
        self.handover_grace = handover_grace
        self._handing: set[int] = set()  # accounts whose actor is finishing its step to hand over
        self._children: dict[int, _Child] = {}
        self._throttles: dict[int, Throttle] = {}
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.scans = 0

    # --- the loop ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Supervise until cancelled; `task_status.started()` after the first scan."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._listen)
            await self._scan()
            task_status.started()
            while True:
                with trio.move_on_after(self.rescan_seconds):
                    await self._wake.wait()
                self._wake = trio.Event()
                await self._scan()

    def wake(self) -> None:
        """Rescan now (a notification arrived, or a test asks)."""
        self._wake.set()

    async def _listen(self) -> None:
        while True:
            try:
                async with self.source.listen() as notes:
                    self.wake()  # changes made while we were not listening
                    async for _ in notes:
                        self.wake()
                log.warning("account notifications: LISTEN connection lost; reconnecting")
            except (DatabaseError, MailbridgeError, OSError) as exc:
                log.warning("account notifications unavailable (%s); rescanning every %g s",
                            exc, self.rescan_seconds)
            await trio.sleep(self.listen_retry)

    async def _scan(self) -> None:
        try:
            accounts = await self.source.load()
        except (DatabaseError, MailbridgeError) as exc:
            log.warning("cannot read the accounts table: %s; actors keep running", exc)
            return
        self.scans += 1
        if self.shares is not None:
            await self.shares.refresh()
        ordered = run_order(accounts)
        limited = ordered[: self.max_accounts]
        over = ordered[self.max_accounts:]
        placed = self.shares.split([a.id for a in limited]) if self.shares is not None else {}
        mine_name = self.shares.own_name if self.shares is not None else None
        runnable = {a.id: a for a in limited if self.shares is None or placed.get(a.id) == mine_name}
        elsewhere = [a for a in limited if a.id not in runnable]

        for account_id, child in list(self._children.items()):
            account = runnable.get(account_id)
            if account is None and any(a.id == account_id for a in elsewhere):
                log.info("account %d: now %s's share: handing it over", account_id, placed.get(account_id))
                self._hand_over(child)
                del self._children[account_id]
            elif account is None or fingerprint(account) != child.fingerprint:
                why = "removed or disabled" if account is None else "changed"
                log.info("account %d %s: stopping its actor", account_id, why)
                child.stop()
                del self._children[account_id]
                if account is not None:
                    self._spawn(account, after=child.done)
        for account in runnable.values():
            if account.id not in self._children:
                self._spawn(account, after=None)
        for account in elsewhere:
            self._elsewhere(account, placed.get(account.id))

        known = {a.id for a in accounts}
        for account in over:
            await self._stopped(account, "over_limit",
                                f"over the account limit (MAILBRIDGE_MAX_ACCOUNTS={self.max_accounts}): not synced")
        for account in accounts:
            if not account.enabled:
                await self._stopped(account, "disabled", "disabled")
        for status in self.registry.snapshots():
            if status.account_id not in known:
                self.registry.remove(status.account_id)
        for account_id in list(self._throttles):
            if account_id not in known:
                del self._throttles[account_id]

    def _elsewhere(self, account: Account, expected: str | None) -> None:
        """Publish an account another process syncs (or should), as the table has it."""
        if account.owner:
            step = f"synced by {account.owner}"
        else:
            step = f"unowned: {expected or 'another process'} is to take it over"
        current = self.registry.status(account.id)
        if (current is not None and current.state == st.ELSEWHERE and current.owner == account.owner
                and current.health == account.health and current.health_reason == account.health_reason
                and current.step == step):
            return
        self.registry.publish(st.ActorStatus(account_id=account.id, email=account.email, state=st.ELSEWHERE,
                                             health=account.health or "unknown",
                                             health_reason=account.health_reason, owner=account.owner,
                                             step=step))

    def _hand_over(self, child: _Child) -> None:
        """Stop `child` after its step in flight; cancel it if that takes too long."""
        child.hand_over()
        assert self._nursery is not None
        self._handing.add(child.account.id)

        async def bound() -> None:
            with trio.move_on_after(self.handover_grace):
                await child.done.wait()
            if not child.done.is_set():
                log.warning("account %d: hand-over took over %g s; stopping its actor",
                            child.account.id, self.handover_grace)
                child.scope.cancel()
                await child.done.wait()
            self._handing.discard(child.account.id)

        self._nursery.start_soon(bound)

    async def _stopped(self, account: Account, health: str, reason: str) -> None:
        current = self.registry.status(account.id)
        if current is not None and current.state == st.STOPPED and current.health == health:
            return
        self.registry.publish(st.ActorStatus(account_id=account.id, email=account.email, state=st.STOPPED,
                                             health=health, health_reason=reason, step=reason))
        if account.health != health:
            try:
                await self.source.record(account.id, health, reason)
            except (DatabaseError, MailbridgeError) as exc:
                log.warning("account %d: cannot store health %s: %s", account.id, health, exc)

    # --- children ----------------------------------------------------------------------

    def _spawn(self, account: Account, *, after: trio.Event | None) -> None:
        assert self._nursery is not None
        throttle = self._throttles.get(account.id)
        if throttle is None:
            throttle = self._throttles[account.id] = Throttle(self.commands_per_minute)
        child = _Child(account, fingerprint(account), throttle)
        self._children[account.id] = child
        self._nursery.start_soon(self._supervise, child, after)

    async def _supervise(self, child: _Child, after: trio.Event | None) -> None:
        account = child.account
        try:
            with child.scope:
                if after is not None:
                    await after.wait()
                failures = 0
                while not child.leaving:
                    actor = child.actor = self.actor_factory(account, child.throttle, child.restarts)
                    child.running = True
                    try:
                        await actor.run()
                        return
                    except BaseException as exc:
                        child.running = False
                        if not isinstance(exc, Exception):
                            raise _cancellation_only(exc, account.id)
                        # an actor's crash must never reach the supervisor
                        cause = root_cause(exc)
                        if child.leaving:
                            log.info("account %d: while handing over: %s", account.id, st.describe_error(cause))
                            return
                        failures = 1 if actor.cycles else failures + 1
                        delay, why = self._next_start(child, failures, retry_hint(actor, cause),
                                                      counted=not isinstance(cause, (LockLost, DatabaseError)))
                        child.restarts += 1
                        retry_at = datetime.now(timezone.utc) + timedelta(seconds=delay)
                        text = st.describe_error(cause)
                        log.warning("account %d: actor crashed (%s); restart %d in %.1f s%s", account.id, text,
                                    child.restarts, delay, why)
                        if not isinstance(cause, MailbridgeError):
                            log.debug("account %d: crash detail", account.id, exc_info=cause)
                        self.registry.publish(actor.status.evolve(
                            state=st.BACKOFF, restarts=child.restarts, last_error=text, retry_at=retry_at,
                            lock_held=False, step=f"restarting in {delay:.0f} s{why}", mailbox_depth=0))
                        await trio.sleep(delay)
        finally:
            child.done.set()
            if self._children.get(account.id) is not child:
                self.wake()  # stopped on purpose: a rescan republishes what the account is now

    def _next_start(self, child: _Child, failures: int, floor: float | None = None,
                    counted: bool = True) -> tuple[float, str]:
        """The delay before the next start, and why (for the log).  A failure not
        `counted` (the lock or the database went: every actor of the process fails with
        it, through no fault of its account) does not use up the restart budget; its
        backoff is capped at OUTAGE_BACKOFF_CAP seconds, so the accounts come back soon
        after Postgres does."""
        if not counted:
            delay = min(self.policy.backoff(failures, self.rng, floor), max(OUTAGE_BACKOFF_CAP, floor or 0.0))
            return delay, " (the database or the lock connection failed)"
        now = trio.current_time()
        child.recent.append(now)
        while child.recent and now - child.recent[0] > self.policy.period:
            child.recent.popleft()
        if len(child.recent) > self.policy.intensity:
            child.recent.clear()
            budget = f" (restart budget of {self.policy.intensity} per {self.policy.period:g} s used up)"
            return max(self.policy.cooldown, floor or 0.0), budget
        delay = self.policy.backoff(failures, self.rng, floor)
        return delay, (f" (at least {floor:g} s after what the server said)" if floor and delay >= floor else "")

    @property
    def stopping(self) -> list[int]:
        """Ids of the accounts whose actor is handing over (not done yet)."""
        return sorted(self._handing)

    @property
    def running(self) -> list[int]:
        """Ids of the accounts with a live child (for tests and diagnostics)."""
        return sorted(self._children)


__all__ = ["AccountSource", "DbAccountSource", "RestartPolicy", "Shares", "Supervisor", "fingerprint",
           "retry_hint", "run_order"]

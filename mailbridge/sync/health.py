"""An account's health: a small pure state machine (no I/O, no clock of its own).

States (the values of ``accounts.health``):

============  ===================================================================
starting      an actor was started and has not finished its first cycle yet
standby       another process holds the account's lock and syncs it
syncing       logged in; an initial sync (or re-sync after a reset) is under way
healthy       the last cycle finished with every included folder up to date
degraded      the last cycle finished, but something needs a look: a folder parked
              after repeated UIDVALIDITY resets, a folder that failed, or a
              transient error after a healthy spell (the actor is retrying)
auth_failed   the server rejected the credentials; nothing is retried until they
              change (so a wrong password never turns into a login storm)
unreachable   the server could not be reached or the connection keeps dropping
disabled      the account is switched off (``enabled = false``)
over_limit    beyond MAILBRIDGE_MAX_ACCOUNTS: not synced
unowned       its owner is gone (no session holds its lock); written by any live
              serve process (`mailbridge.store.members.clear_dead_owners`), never
              by an actor, until a process takes the account over
============  ===================================================================

Transitions, by event (`Event.kind`):

- ``started``: any state → starting (a new actor; also after credentials changed)
- ``standby``: → standby
- ``cycle_started``: → syncing when an initial sync is pending (a new account, a new
  folder, a reset); otherwise starting/standby/unowned/unreachable → syncing and every other
  state stays (a routine cycle of a healthy account is not news)
- ``cycle_done``: → healthy, or degraded with the reason when the cycle reports one
- ``auth_failed``: → auth_failed (sticky: only ``started``, ``disabled`` and
  ``over_limit`` leave it)
- ``unreachable``: → unreachable
- ``error``: → degraded (a crash the supervisor will retry)
- ``disabled`` / ``over_limit``: → that state, from anywhere

What an actor's failure becomes (`judge`; `retry_after` is the least wait before the
supervisor starts the next actor, a floor under its exponential backoff):

=====================================  ============  =========================================
failure                                event         retry_after
=====================================  ============  =========================================
LockLost                               (none)        (the lock's next owner decides)
ImapAuthError (incl. AUTHENTICATION-   auth_failed   (parked: no retry until new credentials)
FAILED and the other RFC 5530 codes)
ImapUnavailable (``* BYE`` greeting,   unreachable   the server's hint, at least
[UNAVAILABLE], too many connections)                 `unavailable_floor` (one poll tick)
ImapThrottled (Office 365's            error         the server's suggested backoff (capped
"Request is throttled")                (degraded)    by the seam)
ImapCommandError with [LIMIT],         error         `unavailable_floor` for [INUSE] and
[INUSE], [OVERQUOTA], [SERVERBUG]      (degraded)    [LIMIT] (someone else holds it), else
                                                     none
ImapProtocolError before the login     unreachable   none (a foreign banner, a wrong tag:
                                                     likely the wrong host, port or tls)
ImapProtocolError after the login      error         none
ImapConnectError (refused, DNS, TLS)   unreachable   none
anything else                          error         none
=====================================  ============  =========================================

The reason names the server's response code and says what to do; it holds no time, so
a failure repeating every backoff does not rewrite the account's health each time.

A one-off run (`sync --once`) starts from the account's stored state (`resumed`), so a
routine run that changes nothing writes nothing; from ``auth_failed`` (which only a new
start leaves) and from anything unknown it starts at ``starting``.

The time a state was entered (`since`) is kept when an event leaves the state as it is,
so "healthy since 09:14" means exactly that.  Only a change of state or reason makes a
new `HealthState` with a new `since`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from mailbridge.errors import (
    ImapAuthError,
    ImapCommandError,
    ImapConnectError,
    ImapProtocolError,
    ImapThrottled,
    ImapUnavailable,
    LockLost,
    MailbridgeError,
)


class Health(str, Enum):
    STARTING = "starting"
    STANDBY = "standby"
    SYNCING = "syncing"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    AUTH_FAILED = "auth_failed"
    UNREACHABLE = "unreachable"
    DISABLED = "disabled"
    OVER_LIMIT = "over_limit"
    UNOWNED = "unowned"

    def __str__(self) -> str:  # so f-strings and JSON show "healthy", not "Health.HEALTHY"
        return self.value


EVENT_KINDS = frozenset({"started", "standby", "cycle_started", "cycle_done", "auth_failed",
                         "unreachable", "error", "disabled", "over_limit"})


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to an account's actor."""

    kind: str
    reason: str | None = None
    initial_pending: bool = False  # cycle_started: some folder still needs its initial sync

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown health event {self.kind!r}")


@dataclass(frozen=True, slots=True)
class HealthState:
    """An account's health, why, and since when."""

    health: Health
    reason: str | None
    since: datetime


def initial(now: datetime) -> HealthState:
    return HealthState(Health.STARTING, None, now)


def resumed(health: str, reason: str | None, since: datetime) -> HealthState:
    """The state a one-off run starts from (see the module doc)."""
    try:
        stored = Health(health)
    except ValueError:
        stored = Health.STARTING
    if stored is Health.AUTH_FAILED or stored is Health.STARTING:
        return HealthState(Health.STARTING, None, since)
    return HealthState(stored, reason, since)


def _target(state: HealthState, event: Event) -> tuple[Health, str | None]:
    h = state.health
    kind = event.kind
    if kind in ("started", "disabled", "over_limit"):
        return Health(kind if kind != "started" else "starting"), event.reason
    if h is Health.AUTH_FAILED:
        return h, state.reason  # sticky until new credentials start a new actor
    if kind == "standby":
        return Health.STANDBY, event.reason
    if kind == "cycle_started":
        if event.initial_pending:
            return Health.SYNCING, event.reason
        if h in (Health.STARTING, Health.STANDBY, Health.UNOWNED, Health.UNREACHABLE):
            return Health.SYNCING, event.reason
        return h, state.reason
    if kind == "cycle_done":
        return (Health.DEGRADED, event.reason) if event.reason else (Health.HEALTHY, None)
    if kind == "auth_failed":
        return Health.AUTH_FAILED, event.reason
    if kind == "unreachable":
        return Health.UNREACHABLE, event.reason
    return Health.DEGRADED, event.reason  # error


def advance(state: HealthState, event: Event, now: datetime) -> HealthState:
    """The state after `event`; `state` itself when nothing changes."""
    health, reason = _target(state, event)
    if health is state.health and reason == state.reason:
        return state
    return HealthState(health, reason, now)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a failure means for the account: its health event (None: none to record) and
    the least seconds before the next connection attempt (None: the usual backoff)."""

    event: Event | None
    retry_after: float | None = None


# RFC 5530 codes that degrade the account: what each means, for the reason
DEGRADING_CODES = {
    "LIMIT": "the server's limit for this account was reached",
    "INUSE": "the mailbox is in use by another client",
    "OVERQUOTA": "the account is over its quota",
    "SERVERBUG": "the server reports a bug of its own",
}
_WAIT_ON = frozenset({"LIMIT", "INUSE"})  # codes after which reconnecting at once cannot help


def _text(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, MailbridgeError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def judge(exc: BaseException, *, logged_in: bool, unavailable_floor: float) -> Verdict:
    """The verdict on an actor's failure `exc` (see the module doc's table).  Pure."""
    if isinstance(exc, LockLost):
        return Verdict(None)
    if isinstance(exc, ImapAuthError):
        return Verdict(Event("auth_failed", _text(exc)))
    if isinstance(exc, ImapUnavailable):  # its message names the server's words and code
        return Verdict(Event("unreachable", _text(exc)), max(exc.retry_after or 0.0, unavailable_floor))
    if isinstance(exc, ImapThrottled):
        return Verdict(Event("error", _text(exc)), exc.retry_after)
    if isinstance(exc, ImapCommandError) and exc.code in DEGRADING_CODES:
        reason = f"[{exc.code}] {DEGRADING_CODES[exc.code]}: {_text(exc)}"
        return Verdict(Event("error", reason), unavailable_floor if exc.code in _WAIT_ON else None)
    if isinstance(exc, ImapProtocolError) and not logged_in:
        return Verdict(Event("unreachable", _text(exc)))
    if isinstance(exc, ImapConnectError):
        return Verdict(Event("unreachable", _text(exc)))
    return Verdict(Event("error", _text(exc)))


__all__ = ["DEGRADING_CODES", "EVENT_KINDS", "Event", "Health", "HealthState", "Verdict", "advance", "initial",
           "judge", "resumed"]

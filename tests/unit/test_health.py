"""The health state machine (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mailbridge.sync.health import Event, Health, HealthState, advance, initial, resumed

T0 = datetime(2026, 11, 29, 9, 0, tzinfo=timezone.utc)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_a_normal_life():
    s = initial(T0)
    assert s.health is Health.STARTING
    s = advance(s, Event("cycle_started", initial_pending=True), at(1))
    assert s.health is Health.SYNCING and s.since == at(1)
    s = advance(s, Event("cycle_done"), at(5))
    assert (s.health, s.reason, s.since) == (Health.HEALTHY, None, at(5))
    same = advance(s, Event("cycle_started"), at(6))
    assert same is s  # a routine cycle is not news
    assert advance(same, Event("cycle_done"), at(7)) is s  # "healthy since" stays
    s = advance(s, Event("cycle_started", initial_pending=True), at(8))
    assert s.health is Health.SYNCING  # a new folder or a reset


def test_degraded_with_reason_then_healthy_again():
    s = advance(initial(T0), Event("cycle_done", "folder 'X' is parked"), at(1))
    assert (s.health, s.reason) == (Health.DEGRADED, "folder 'X' is parked")
    s = advance(s, Event("error", "connection lost"), at(2))
    assert (s.health, s.reason, s.since) == (Health.DEGRADED, "connection lost", at(2))
    assert advance(s, Event("cycle_done"), at(3)).health is Health.HEALTHY


def test_auth_failed_is_sticky_until_a_new_start():
    s = advance(initial(T0), Event("auth_failed", "authentication failed"), at(1))
    for kind in ("cycle_started", "cycle_done", "error", "unreachable", "standby"):
        assert advance(s, Event(kind, "x"), at(2)) is s
    assert advance(s, Event("started"), at(3)).health is Health.STARTING
    assert advance(s, Event("disabled"), at(3)).health is Health.DISABLED


def test_unreachable_standby_and_limits():
    s = advance(initial(T0), Event("unreachable", "refused"), at(1))
    assert s.health is Health.UNREACHABLE
    s = advance(s, Event("cycle_started"), at(2))
    assert s.health is Health.SYNCING
    assert advance(s, Event("standby", "synced by h:1"), at(3)).health is Health.STANDBY
    assert advance(s, Event("over_limit"), at(3)).health is Health.OVER_LIMIT
    assert str(Health.HEALTHY) == "healthy"


def test_unknown_events_are_refused():
    with pytest.raises(ValueError):
        Event("exploded")


def test_a_one_off_run_resumes_the_stored_state_except_auth_failed():
    since = datetime(2026, 1, 1, tzinfo=timezone.utc)
    healthy = resumed("healthy", None, since)
    assert healthy == HealthState(Health.HEALTHY, None, since)
    # a routine cycle of a healthy account changes nothing, so nothing is written
    assert advance(advance(healthy, Event("cycle_started"), since), Event("cycle_done"), since) is healthy
    assert resumed("auth_failed", "wrong password", since).health is Health.STARTING
    assert resumed("no such state", None, since).health is Health.STARTING
    assert resumed("degraded", "folder 'X' parked", since).reason == "folder 'X' parked"


# --- what a failure becomes (judge) ------------------------------------------------------

from mailbridge.errors import (  # noqa: E402
    DatabaseError,
    ImapAuthError,
    ImapCommandError,
    ImapConnectError,
    ImapConnectionLost,
    ImapProtocolError,
    ImapThrottled,
    ImapUnavailable,
    LockLost,
)
from mailbridge.sync.health import judge  # noqa: E402


def verdict(exc, logged_in=True, floor=60.0):
    return judge(exc, logged_in=logged_in, unavailable_floor=floor)


def test_a_server_that_turns_us_away_is_unreachable_with_its_reason_and_a_floor():
    v = verdict(ImapUnavailable("imap.example.test said: too many connections", reason_code="TOOMANYCONNECTIONS"))
    assert v.event.kind == "unreachable" and v.retry_after == 60.0
    assert v.event.reason == "imap.example.test said: too many connections"
    assert verdict(ImapUnavailable("busy", retry_after=300.0)).retry_after == 300.0  # its hint, when longer
    assert verdict(ImapUnavailable("busy"), floor=2.0).retry_after == 2.0


def test_throttling_degrades_and_waits_as_long_as_the_server_asks():
    v = verdict(ImapThrottled("the server throttles us: Request is throttled", retry_after=2.0, command="UID FETCH"))
    assert v.event.kind == "error" and v.retry_after == 2.0 and "throttled" in v.event.reason
    assert advance(initial(T0), v.event, at(1)).health is Health.DEGRADED


@pytest.mark.parametrize("code, floor", [("LIMIT", 60.0), ("INUSE", 60.0), ("OVERQUOTA", None),
                                         ("SERVERBUG", None)])
def test_rfc_5530_codes_degrade_the_account_naming_the_code(code, floor):
    v = verdict(ImapCommandError(f"UID FETCH refused: NO [{code}] no", "UID FETCH", "NO", code=code))
    assert v.event.kind == "error" and f"[{code}]" in v.event.reason and v.retry_after == floor
    assert advance(initial(T0), v.event, at(1)).health is Health.DEGRADED


def test_authentication_failed_parks_and_a_lost_lock_records_nothing():
    v = verdict(ImapAuthError("authentication failed: [AUTHENTICATIONFAILED]", code="AUTHENTICATIONFAILED"))
    assert v.event.kind == "auth_failed" and v.retry_after is None
    assert verdict(LockLost("gone")).event is None


def test_a_protocol_error_before_the_login_is_unreachable_after_it_degraded():
    exc = ImapProtocolError("127.0.0.1:22 is not an IMAP server (it greeted with 'SSH-2.0-...')")
    assert verdict(exc, logged_in=False).event.kind == "unreachable"
    assert verdict(exc, logged_in=True).event.kind == "error"
    assert verdict(ImapConnectError("refused"), logged_in=False).event.kind == "unreachable"


def test_other_failures_degrade_with_their_text_and_the_usual_backoff():
    for exc in (ImapConnectionLost("connection reset"), DatabaseError("boom"), ValueError("odd")):
        v = verdict(exc)
        assert v.event.kind == "error" and v.retry_after is None
    assert verdict(ValueError("odd")).event.reason == "ValueError: odd"
    assert verdict(ImapCommandError("NO [NONEXISTENT]", "SELECT", "NO", code="NONEXISTENT")).retry_after is None

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

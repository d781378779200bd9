"""Folders the server's pushes cover (NOTIFY: every folder but INBOX, which IDLE watches
and the cycles visit every tick): the planner leaves them to the pushes but for work on
its own clock, and the serving schedule runs a tick cycle (LIST, INBOX, due work) each
tick and the full cycle only as a safety net (pure: no I/O)."""

from __future__ import annotations

import math
from datetime import timedelta

from actors.serving import FULL, LIGHT, TICK, Schedule
from mailbridge.sync.planner import NO_COVERAGE, Coverage, plan_cycle, plan_light
from tests.support.folders import NOW, folder

HOUR = timedelta(hours=1)
NOTIFY = Coverage(everything=True, inbox=1)


def names(plan):
    return [w.folder.name for w in plan.work]


def account():
    return [folder(1, "INBOX", priority=True), folder(2, "Sent", priority=True),
            folder(3, "New", complete=False), folder(4, "Trash", excluded=True)] + \
           [folder(10 + i, f"F{i}") for i in range(4)]


def test_notify_covers_every_folder_but_inbox_and_idle_alone_covers_nothing():
    folders = account()
    assert NOTIFY.of(folders) == {f.id for f in folders} - {1}
    assert Coverage(inbox=1).of(folders) == frozenset()
    assert NO_COVERAGE.of(folders) == frozenset()


def test_covered_folders_get_no_visits_or_status_checks_but_inbox_is_visited():
    folders = account()
    covered = NOTIFY.of(folders)
    plan = plan_cycle(folders, now=NOW, folders_per_tick=2, condstore=True, covered=covered, offset=3,
                      status_offset=1)
    assert names(plan) == ["INBOX", "New"] and plan.status_checks == ()  # and the initial sync goes on
    assert (plan.next_offset, plan.next_status_offset) == (3, 1)  # rotations keep their place
    light = plan_light(plan, folders, status_per_tick=50, covered=covered)
    assert names(light) == ["New"] and light.status_checks == ()
    today = plan_cycle(folders, now=NOW, folders_per_tick=2, condstore=True, covered=NO_COVERAGE.of(folders))
    assert names(today) == ["INBOX", "Sent", "F0", "F1", "New"] and [f.name for f in today.status_checks] == \
        ["F2", "F3"]


def test_covered_folders_keep_their_reconciles_and_overdue_flag_scans():
    old = NOW - timedelta(hours=7)
    folders = [folder(2, "Sent", priority=True, reconciled=old, scanned=NOW),
               folder(10, "A", scanned=NOW - timedelta(hours=7)), folder(11, "B", scanned=NOW - HOUR),
               folder(12, "C", scanned=None)]
    covered = {2, 10, 11, 12}
    plan = plan_cycle(folders, now=NOW, condstore=False, scans_per_tick=2, covered=covered)
    assert [(w.folder.name, w.flag_scan, w.full_reconcile) for w in plan.work] == [
        ("Sent", False, True), ("C", True, False)]  # one reconcile; the most overdue scan (the rate needed)
    assert plan.status_checks == ()
    # uncovered, the same folders get today's per-tick scans (least recently scanned first)
    today = plan_cycle(folders, now=NOW, condstore=False, scans_per_tick=2, folders_per_tick=0)
    assert {w.folder.name for w in today.work if w.flag_scan} == {"Sent", "A", "C"}


def test_without_notify_a_full_cycle_every_tick_and_a_light_one_between():
    for coverage in (NO_COVERAGE, Coverage(inbox=1)):  # IDLE alone covers nothing
        s = Schedule(poll=60, safety=900)
        assert s.next(coverage) == (-math.inf, FULL)  # the first cycle at once
        for tick in range(3):
            s.done(FULL, tick * 60.0)
            assert s.next(coverage) == (tick * 60 + 30.0, LIGHT)
            s.done(LIGHT, tick * 60 + 30.0)
            assert s.next(coverage) == ((tick + 1) * 60.0, FULL)


def test_notify_runs_a_tick_cycle_each_tick_and_the_full_one_as_a_safety_net():
    s = Schedule(poll=60, safety=180)
    assert s.next(NOTIFY) == (-math.inf, FULL)
    s.done(FULL, 0.0)
    kinds = []
    for tick in range(1, 7):
        when, kind = s.next(NOTIFY)  # no light cycle between
        assert when == tick * 60
        kinds.append(kind)
        s.done(kind, when)
    assert kinds == [TICK, TICK, FULL, TICK, TICK, FULL]


def test_losing_notify_or_a_sync_now_brings_a_full_cycle_at_once():
    s = Schedule(poll=60, safety=900)
    s.done(FULL, 0.0)
    assert s.next(NOTIFY) == (60.0, TICK)
    s.done(TICK, 60.0)
    assert s.next(NO_COVERAGE) == (-math.inf, FULL)  # NOTIFY overflowed or was refused
    s.done(FULL, 100.0)
    assert s.next(NO_COVERAGE) == (130.0, LIGHT)  # and the schedule without coverage from then on
    s.done(LIGHT, 130.0)
    assert s.next(NO_COVERAGE) == (160.0, FULL)
    s.full_now()
    assert s.next(NO_COVERAGE) == (-math.inf, FULL)
    s.done(FULL, 170.0)
    s.full_now()
    assert s.next(NOTIFY) == (-math.inf, FULL)


def test_safety_zero_is_a_full_cycle_every_tick():
    s = Schedule(poll=60, safety=0)
    s.done(FULL, 0.0)
    assert s.next(NOTIFY) == (60.0, FULL)

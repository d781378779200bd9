"""The cycle planner (pure)."""

from __future__ import annotations

from datetime import timedelta

from mailbridge.sync.planner import jitter_of, plan_complete, plan_cycle, plan_light, status_changed
from tests.support.folders import NOW, folder


def names(plan):
    return [w.folder.name for w in plan.work]


def test_priority_and_unfinished_every_tick_others_round_robin_then_status():
    folders = [folder(1, "INBOX", priority=True), folder(2, "Sent", priority=True),
               folder(3, "New", complete=False), folder(4, "Trash", excluded=True), folder(5, "Old", parked=True)]
    folders += [folder(10 + i, f"F{i}") for i in range(7)]
    plan = plan_cycle(folders, now=NOW, folders_per_tick=3, condstore=True, status_per_tick=50)
    assert names(plan) == ["INBOX", "Sent", "F0", "F1", "F2", "New"]
    assert [f.name for f in plan.status_checks] == ["F3", "F4", "F5", "F6"]
    second = plan_cycle(folders, now=NOW, offset=plan.next_offset, folders_per_tick=3, condstore=True)
    assert names(second) == ["INBOX", "Sent", "F3", "F4", "F5", "New"]
    third = plan_cycle(folders, now=NOW, offset=second.next_offset, folders_per_tick=3, condstore=True)
    assert names(third)[2:5] == ["F0", "F1", "F6"]  # wraps around
    assert plan.initial_pending


def test_status_checks_rotate_when_capped():
    folders = [folder(10 + i, f"F{i}") for i in range(6)]
    plan = plan_cycle(folders, now=NOW, folders_per_tick=1, status_per_tick=2, condstore=True)
    assert [f.name for f in plan.status_checks] == ["F1", "F2"]
    again = plan_cycle(folders, now=NOW, offset=plan.next_offset, status_offset=plan.next_status_offset,
                       folders_per_tick=1, status_per_tick=2, condstore=True)
    assert names(again) == ["F1"] and [f.name for f in again.status_checks] == ["F3", "F4"]


def test_flag_scans_only_without_condstore_least_recently_scanned_first():
    folders = [folder(1, "INBOX", priority=True)]
    folders += [folder(10 + i, f"F{i}", scanned=NOW - timedelta(minutes=10 * i)) for i in range(5)]
    folders.append(folder(20, "Never", scanned=None))
    plan = plan_cycle(folders, now=NOW, folders_per_tick=1, scans_per_tick=2, condstore=False)
    scans = {w.folder.name for w in plan.work if w.flag_scan}
    assert scans == {"INBOX", "Never", "F4"}
    with_condstore = plan_cycle(folders, now=NOW, folders_per_tick=1, scans_per_tick=2, condstore=True)
    assert not any(w.flag_scan for w in with_condstore.work)


def test_one_full_reconcile_per_tick_priority_first_with_jitter():
    old = NOW - timedelta(hours=7)
    folders = [folder(1, "INBOX", priority=True, reconciled=old), folder(10, "A", reconciled=old),
               folder(11, "B", reconciled=None)]
    plan = plan_cycle(folders, now=NOW, folders_per_tick=0, condstore=True)
    full = [w.folder.name for w in plan.work if w.full_reconcile]
    assert full == ["INBOX"]
    fresh = [folder(1, "INBOX", priority=True), folder(10, "A", reconciled=old), folder(11, "B", reconciled=None)]
    full = [w.folder.name for w in plan_cycle(fresh, now=NOW, folders_per_tick=0, condstore=True).work
            if w.full_reconcile]
    assert full == ["A"]
    assert timedelta(0) <= jitter_of(10, timedelta(minutes=15)) < timedelta(minutes=15)
    assert jitter_of(10, timedelta(minutes=15)) != jitter_of(11, timedelta(minutes=15))


def test_status_changed():
    f = folder(1, "A", uidnext=10, modseq=77)
    same = dict(messages=9, uidnext=10, uidvalidity=5, highestmodseq=77, stored_messages=9)
    assert not status_changed(f, **same)
    assert status_changed(f, **{**same, "uidnext": 11})
    assert status_changed(f, **{**same, "messages": 8})
    assert status_changed(f, **{**same, "highestmodseq": 78})
    assert status_changed(f, **{**same, "uidvalidity": 6})
    assert not status_changed(f, **{**same, "highestmodseq": None})


def test_flag_scan_hours_raise_the_rate_until_every_folder_is_scanned_in_time():
    """MAILBRIDGE_FLAG_SCAN_HOURS: beyond the per-tick scans, overdue folders are scanned at
    the rate that scans each within the interval; folders scanned within it wait."""
    folders = [folder(10 + i, f"F{i}", scanned=NOW - timedelta(hours=2, minutes=i)) for i in range(30)]
    scanned = lambda plan: sorted(w.folder.name for w in plan.work if w.flag_scan)  # noqa: E731

    # 30 folders, 60 s ticks, every 6 h: 2 a tick suffice (the default), the oldest first
    default = plan_cycle(folders, now=NOW, scans_per_tick=2, flag_scan_every=timedelta(hours=6))
    assert scanned(default) == ["F28", "F29"]
    # every hour: all 30 are overdue, and one hour has 60 ticks: ceil(30 / 60) = 1 < 2, still 2
    assert scanned(plan_cycle(folders, now=NOW, scans_per_tick=2, flag_scan_every=timedelta(hours=1))) == ["F28", "F29"]
    # every 10 minutes (10 ticks): 3 a tick, the overdue ones
    assert len(scanned(plan_cycle(folders, now=NOW, scans_per_tick=2,
                                  flag_scan_every=timedelta(minutes=10)))) == 3
    # no per-tick scans: only overdue folders, at the needed rate; none overdue, none scanned
    assert len(scanned(plan_cycle(folders, now=NOW, scans_per_tick=0, flag_scan_every=timedelta(hours=1)))) == 1
    assert scanned(plan_cycle(folders, now=NOW, scans_per_tick=0, flag_scan_every=timedelta(hours=6))) == []
    # an interval no longer than a tick: every folder, every tick
    assert len(scanned(plan_cycle(folders, now=NOW, scans_per_tick=0, tick=timedelta(seconds=60),
                                  flag_scan_every=timedelta(seconds=30)))) == 30
    # with CONDSTORE nothing is scanned whatever the interval
    assert scanned(plan_cycle(folders, now=NOW, condstore=True, flag_scan_every=timedelta(0))) == []


def test_light_and_complete_plans():
    folders = [folder(1, "INBOX", priority=True), folder(2, "New", complete=False),
               folder(3, "Trash", excluded=True), folder(4, "Old", parked=True), folder(5, "F0")]
    full = plan_cycle(folders, now=NOW, condstore=True)
    light = plan_light(full, folders, status_per_tick=50)
    assert names(light) == ["New"] and [f.name for f in light.status_checks] == ["F0"]
    complete = plan_complete(folders)
    assert names(complete) == ["INBOX", "New", "Old", "F0"]  # the parked one reports itself parked
    assert all(w.flag_scan and not w.full_reconcile for w in complete.work)

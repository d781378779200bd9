"""The cycle planner (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from mailbridge.sync.folder import Folder
from mailbridge.sync.planner import jitter_of, plan_cycle, status_changed

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)


def folder(fid: int, name: str, *, priority=False, complete=True, excluded=False, parked=False,
           scanned=None, reconciled=NOW, uidnext=10, modseq=None) -> Folder:
    return Folder(id=fid, account_id=1, name=name, raw_name=name, uidvalidity=5, uidnext=uidnext,
                  highestmodseq=modseq, initial_top_uid=9, initial_low_uid=1, synced_high_uid=9,
                  initial_sync_complete=complete, is_priority=priority, excluded=excluded, parked=parked,
                  uidvalidity_resets=(), last_reconcile_at=reconciled, last_flag_scan_at=scanned)


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

"""The planner's flag-scan budget (servers without CONDSTORE; pure): beyond the per-tick
scans, the next least recently scanned folders as long as they fit in the budget, so a
few small folders are all scanned every tick, and light cycles repeat those scans."""

from __future__ import annotations

from datetime import timedelta

from mailbridge.sync.planner import FLAG_SCAN_BUDGET, ScanBudget, plan_cycle, plan_light
from tests.support.folders import NOW, folder


def scanned(plan):
    return sorted(w.folder.name for w in plan.work if w.flag_scan)


def test_small_folders_all_scanned_within_the_budget_least_recently_scanned_first():
    folders = [folder(1, "INBOX", priority=True)]
    folders += [folder(10 + i, f"F{i}", scanned=NOW - timedelta(minutes=i)) for i in range(9)]
    sizes = {10 + i: 200 for i in range(9)}
    plan = plan_cycle(folders, now=NOW, scans_per_tick=2, condstore=False, scan_budget=FLAG_SCAN_BUDGET, sizes=sizes)
    assert scanned(plan) == ["F0", "F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8", "INBOX"]
    assert not plan.status_checks  # each scanned folder is visited: no STATUS besides
    # without a budget (the default), two a tick as before
    assert scanned(plan_cycle(folders, now=NOW, scans_per_tick=2, condstore=False, sizes=sizes)) == ["F7", "F8",
                                                                                                     "INBOX"]
    # with CONDSTORE nothing is scanned, budget or not
    assert scanned(plan_cycle(folders, now=NOW, condstore=True, scan_budget=FLAG_SCAN_BUDGET, sizes=sizes)) == []


def test_the_budget_bounds_folders_and_messages_and_unknown_sizes_wait():
    folders = [folder(10 + i, f"F{i}", scanned=NOW - timedelta(minutes=i)) for i in range(6)]
    # F5 and F4 (least recently scanned) are the per-tick ones; of the rest, F3 is too big,
    # F2 and F1 fit in 300 messages, F0's size is unknown; an empty folder keeps its STATUS
    folders.append(folder(30, "Empty", scanned=NOW))
    sizes = {15: 10_000, 14: 10_000, 13: 1_000, 12: 100, 11: 200, 30: 0}
    plan = plan_cycle(folders, now=NOW, scans_per_tick=2, condstore=False, scan_budget=ScanBudget(5, 300),
                      sizes=sizes, folders_per_tick=0)
    assert scanned(plan) == ["F1", "F2", "F4", "F5"]
    assert "Empty" in [f.name for f in plan.status_checks]
    plan = plan_cycle(folders, now=NOW, scans_per_tick=2, condstore=False, scan_budget=ScanBudget(1, 300),
                      sizes=sizes)
    assert scanned(plan) == ["F2", "F4", "F5"]  # one more folder at most


def test_light_cycles_repeat_the_scans_of_the_non_priority_folders_when_asked():
    folders = [folder(1, "INBOX", priority=True), folder(2, "New", complete=False)]
    folders += [folder(10 + i, f"F{i}", scanned=NOW - timedelta(minutes=i)) for i in range(4)]
    sizes = {10: 5, 11: 5, 12: 5, 13: 5_000_000}
    full = plan_cycle(folders, now=NOW, scans_per_tick=1, condstore=False, scan_budget=FLAG_SCAN_BUDGET,
                      sizes=sizes, reconcile_every=timedelta(0))
    assert scanned(full) == ["F0", "F1", "F2", "F3", "INBOX"]
    light = plan_light(full, folders, status_per_tick=50, scans=True)
    assert [w.folder.name for w in light.work] == ["F0", "F1", "F2", "F3", "New"]
    assert not any(w.full_reconcile for w in light.work if w.folder.initial_sync_complete)
    assert light.status_checks == ()
    plain = plan_light(full, folders, status_per_tick=50)
    assert [w.folder.name for w in plain.work] == ["New"]
    assert [f.name for f in plain.status_checks] == ["F0", "F1", "F2", "F3"]
    covered = plan_light(full, folders, status_per_tick=50, scans=True, covered={10, 11})
    assert [w.folder.name for w in covered.work] == ["F2", "F3", "New"]
    assert [f.name for f in covered.status_checks] == []

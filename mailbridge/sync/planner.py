"""What a cycle does: which folders it visits, how thoroughly, and which it only
checks with STATUS.  Pure: folders and the time in, a plan out.

Every visit of a folder brings in its new mail and runs the cheap change checks of
`mailbridge.sync.reconcile` (CONDSTORE's CHANGEDSINCE, QRESYNC's VANISHED, the count
check).  What costs more is planned here, per tick (``MAILBRIDGE_POLL_SECONDS``):

- **visits**: priority folders (INBOX, Sent) every tick; folders whose initial sync is
  not complete every tick until it is; the other folders round robin,
  ``folders_per_tick`` at a time;
- **STATUS checks**: the steady folders not visited this tick are asked ``STATUS``
  (MESSAGES UIDNEXT UIDVALIDITY, and HIGHESTMODSEQ under CONDSTORE), up to
  ``status_per_tick`` of them, rotating; the actor visits those that changed.  So new
  mail, deletes and (with CONDSTORE) flag changes show in every folder within a tick
  or two, at one command per folder;
- **flag scans** (servers without CONDSTORE only: flags of every mirrored UID):
  priority folders on every visit; of the others, the ``scans_per_tick`` least recently
  scanned each tick, and more when that rate could not scan each of them within
  ``flag_scan_every`` (``MAILBRIDGE_FLAG_SCAN_HOURS``): then the overdue ones, most
  overdue first, up to the rate that can (``ceil(folders × tick / flag_scan_every)``);
  beyond those, the next least recently scanned as long as they fit in ``scan_budget``
  (`FLAG_SCAN_BUDGET`: at most `SCAN_BUDGET_FOLDERS` more folders, holding together at
  most `SCAN_BUDGET_MESSAGES` messages as their last visits counted, ``sizes``), so the
  few small folders of most accounts are all scanned every tick (and, as the light
  cycle repeats these scans, every half tick); a large account's take turns;
- **full reconciles** (``UID SEARCH`` diff and flags, whatever the server offers, as a
  safety net): when due (``reconcile_every`` since the last, plus a fixed per-folder
  jitter of up to ``reconcile_jitter`` so folders do not come due together), one per
  tick, priority folders first.

Excluded and parked folders are never planned.

**Covered** folders (`Coverage`: under NOTIFY every folder but the one IDLE watches,
INBOX, which keeps its visit every tick) get no visits, STATUS checks or per-tick flag
scans: only what is on its own clock (the initial sync, a due full reconcile, a flag scan
once overdue by ``flag_scan_every``), within the same per-tick limits.  A plan without
coverage is the **full** cycle, the safety net under pushes.

Two other plans share the vocabulary: a **light** cycle (half way between ticks: only
the folders still in their initial sync, the full plan's flag scans of uncovered
non-priority folders when asked (``scans``), and STATUS checks of the other steady
uncovered ones), and a **complete** one (`sync --once`: every included folder, flags scanned, to
the end).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Collection, Mapping, Sequence

from mailbridge.store.folders import Folder


@dataclass(frozen=True, slots=True)
class ScanBudget:
    """How many flag scans a cycle may add beyond the per-tick and overdue ones: up to
    `folders` more folders holding together at most `messages` messages."""

    folders: int = 0
    messages: int = 0


NO_SCAN_BUDGET = ScanBudget()
SCAN_BUDGET_FOLDERS = 10      # extra flag scans per cycle at most (servers without CONDSTORE)
SCAN_BUDGET_MESSAGES = 5_000  # messages those extra scans may fetch the flags of, together
FLAG_SCAN_BUDGET = ScanBudget(SCAN_BUDGET_FOLDERS, SCAN_BUDGET_MESSAGES)


@dataclass(frozen=True, slots=True)
class Coverage:
    """Which folders the server's pushes cover now: with NOTIFY (`everything`) every
    folder but `inbox` (the id of the folder IDLE watches: news about the selected mailbox
    that comes inside other commands' replies is not applied, so it is visited every
    tick); without NOTIFY none (IDLE alone covers nothing)."""

    everything: bool = False
    inbox: int | None = None

    def of(self, folders: Sequence[Folder]) -> frozenset[int]:
        """The ids of the covered folders among `folders`."""
        if not self.everything:
            return frozenset()
        return frozenset(f.id for f in folders if f.id != self.inbox)


NO_COVERAGE = Coverage()


@dataclass(frozen=True, slots=True)
class FolderWork:
    folder: Folder
    flag_scan: bool = False       # fetch every mirrored UID's flags (no CONDSTORE)
    full_reconcile: bool = False  # UID SEARCH diff and flags, whatever the server offers


@dataclass(frozen=True, slots=True)
class CyclePlan:
    work: tuple[FolderWork, ...]
    status_checks: tuple[Folder, ...]
    next_offset: int         # where the visit round robin starts next tick
    next_status_offset: int  # where the STATUS rotation starts next tick

    @property
    def initial_pending(self) -> bool:
        return any(not w.folder.initial_sync_complete for w in self.work)


def jitter_of(folder_id: int, jitter: timedelta) -> timedelta:
    """A fixed fraction of `jitter` for this folder (Knuth's multiplicative hash)."""
    fraction = ((folder_id * 2654435761) % 2**32) / 2**32
    return jitter * fraction


def reconcile_due(folder: Folder, every: timedelta, jitter: timedelta) -> datetime | None:
    """When the folder's next full reconcile is due (None: never reconciled, due now)."""
    if folder.last_reconcile_at is None:
        return None
    return folder.last_reconcile_at + every + jitter_of(folder.id, jitter)


def _rotate(items: list[Folder], offset: int, take: int) -> tuple[list[Folder], int]:
    if not items:
        return [], offset  # nothing rotates (every folder covered): the place is kept
    start = offset % len(items)
    take = min(take, len(items))
    return [items[(start + i) % len(items)] for i in range(take)], (start + take) % len(items)


def plan_cycle(folders: Sequence[Folder], *, now: datetime, offset: int = 0, status_offset: int = 0,
               folders_per_tick: int = 5, status_per_tick: int = 50, scans_per_tick: int = 2,
               condstore: bool = False, reconcile_every: timedelta = timedelta(hours=6),
               reconcile_jitter: timedelta = timedelta(minutes=15), tick: timedelta = timedelta(seconds=60),
               flag_scan_every: timedelta = timedelta(hours=6), covered: Collection[int] = frozenset(),
               scan_budget: ScanBudget = NO_SCAN_BUDGET, sizes: Mapping[int, int | None] | None = None) -> CyclePlan:
    """The visits (priority first, then by name) and STATUS checks of this tick; of the
    `covered` folders (ids) only what is due on its own clock (see the module doc).
    `sizes`: each folder's message count as its last visit stored (by id; unknown counts
    as too large for `scan_budget`)."""
    eligible = [f for f in folders if not f.excluded and not f.parked]
    priority = [f for f in eligible if f.is_priority]
    others = sorted((f for f in eligible if not f.is_priority), key=lambda f: f.name)
    steady = [f for f in others if f.initial_sync_complete]
    open_steady = [f for f in steady if f.id not in covered]

    work: dict[int, FolderWork] = {f.id: FolderWork(f, flag_scan=not condstore) for f in priority
                                   if f.id not in covered or not f.initial_sync_complete}
    for f in others:
        if not f.initial_sync_complete:
            work[f.id] = FolderWork(f)
    visits, next_offset = _rotate(open_steady, offset, folders_per_tick)
    for f in visits:
        work.setdefault(f.id, FolderWork(f))

    if not condstore:
        scans = flag_scans(open_steady, now=now, per_tick=scans_per_tick, tick=tick, every=flag_scan_every,
                           budget=scan_budget, sizes=sizes or {})
        # covered folders' flag changes are pushed: scanned only when overdue, as a safety net
        scans += flag_scans([f for f in priority + steady if f.id in covered and f.initial_sync_complete],
                            now=now, per_tick=0, tick=tick, every=flag_scan_every)
        for f in scans:
            work[f.id] = FolderWork(f, flag_scan=True)

    due = [f for f in priority + steady
           if (d := reconcile_due(f, reconcile_every, reconcile_jitter)) is None or d <= now]
    if due:
        f = due[0]
        work[f.id] = FolderWork(f, flag_scan=work.get(f.id, FolderWork(f)).flag_scan, full_reconcile=True)

    rest = [f for f in open_steady if f.id not in work]
    checks, next_status_offset = _rotate(rest, status_offset, status_per_tick)
    ordered = tuple(work[f.id] for f in priority + others if f.id in work)
    return CyclePlan(ordered, tuple(checks), next_offset, next_status_offset)


def flag_scans(steady: Sequence[Folder], *, now: datetime, per_tick: int, tick: timedelta,
               every: timedelta, budget: ScanBudget = NO_SCAN_BUDGET,
               sizes: Mapping[int, int | None] | None = None) -> list[Folder]:
    """The steady non-priority folders to flag-scan this tick, least recently scanned first:
    `per_tick` of them, and beyond that the overdue ones (never scanned, or not within
    `every`) up to the rate that scans each folder within `every` (every folder, when
    `every` is not longer than a tick); then, of the rest, least recently scanned first,
    those that fit in `budget` (`sizes`: message counts by folder id; a folder of unknown
    size or larger than what is left waits for its turn among the first, an empty one for
    its STATUS check)."""
    never = datetime.min.replace(tzinfo=now.tzinfo)
    ordered = sorted(steady, key=lambda f: (f.last_flag_scan_at or never, f.name))
    needed = len(ordered) if every <= tick else math.ceil(len(ordered) * (tick / every))
    chosen = ordered[:per_tick]
    for f in ordered[len(chosen):needed]:
        if f.last_flag_scan_at is not None and now - f.last_flag_scan_at < every:
            break  # sorted: the rest were scanned more recently still
        chosen.append(f)
    folders_left, messages_left = budget.folders, budget.messages
    for f in ordered[len(chosen):]:
        if folders_left <= 0:
            break
        size = (sizes or {}).get(f.id)
        if size and size <= messages_left:  # an empty folder has no flags to change
            chosen.append(f)
            folders_left -= 1
            messages_left -= size
    return chosen


def plan_light(full: CyclePlan, folders: Sequence[Folder], *, status_per_tick: int,
               covered: Collection[int] = frozenset(), scans: bool = False) -> CyclePlan:
    """A light cycle, from the `full` plan of the same moment: only its visits of folders
    still in their initial sync, with `scans` its flag scans of steady non-priority
    folders not `covered`, and STATUS checks of the other steady non-priority folders not
    `covered` (up to `status_per_tick`); the rotations do not advance."""
    work = tuple(w for w in full.work if not w.folder.initial_sync_complete
                 or (scans and w.flag_scan and not w.folder.is_priority and w.folder.id not in covered))
    planned = {w.folder.id for w in work}
    checks = tuple(f for f in folders if f.initial_sync_complete and not f.is_priority and f.id not in planned
                   and not f.excluded and not f.parked and f.id not in covered)[:status_per_tick]
    work = tuple(w if not w.folder.initial_sync_complete else FolderWork(w.folder, flag_scan=True) for w in work)
    return CyclePlan(work, checks, full.next_offset, full.next_status_offset)


def plan_complete(folders: Sequence[Folder]) -> CyclePlan:
    """`sync --once`: every included folder in the given order, flags scanned; a parked one
    is visited too (its visit only reports that it is parked)."""
    return CyclePlan(tuple(FolderWork(f, flag_scan=True) for f in folders if not f.excluded), (), 0, 0)


def status_changed(folder: Folder, *, messages: int | None, uidnext: int | None, uidvalidity: int | None,
                   highestmodseq: int | None, stored_messages: int | None) -> bool:
    """Whether a STATUS answer differs from what the mirror stored at the last visit."""
    if uidvalidity is not None and uidvalidity != folder.uidvalidity:
        return True
    if uidnext is not None and uidnext != folder.uidnext:
        return True
    if messages is not None and messages != stored_messages:
        return True
    return highestmodseq is not None and highestmodseq != folder.highestmodseq


__all__ = ["FLAG_SCAN_BUDGET", "NO_COVERAGE", "NO_SCAN_BUDGET", "SCAN_BUDGET_FOLDERS", "SCAN_BUDGET_MESSAGES",
           "Coverage", "CyclePlan", "FolderWork", "ScanBudget", "flag_scans", "jitter_of",
           "plan_complete", "plan_cycle", "plan_light", "reconcile_due", "status_changed"]

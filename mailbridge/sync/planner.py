"""What a cycle does: which folders it syncs, and which of them it reconciles.  Pure.

The DESIGN defaults, per tick (`MAILBRIDGE_POLL_SECONDS`):

- priority folders (INBOX, Sent) every tick, each with a reconcile (flags and deletes);
- folders whose initial sync is not complete every tick, until it is (a new account is
  mirrored as fast as the server allows, not 5 folders a minute);
- the other folders round robin, `folders_per_tick` at a time, new mail only;
- a reconcile of a non-priority folder when it is due (`reconcile_hours` since the
  last, plus a fixed per-folder jitter of up to `reconcile_jitter_minutes` so folders do
  not all come due together), at most `scans_per_tick` per tick, the most overdue first.

Excluded and parked folders are never planned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Sequence

from mailbridge.sync.folder import Folder


@dataclass(frozen=True, slots=True)
class FolderWork:
    folder: Folder
    reconcile: bool


@dataclass(frozen=True, slots=True)
class CyclePlan:
    work: tuple[FolderWork, ...]
    next_offset: int  # where the round robin starts next tick

    @property
    def initial_pending(self) -> bool:
        return any(not w.folder.initial_sync_complete for w in self.work)


def jitter_of(folder_id: int, jitter: timedelta) -> timedelta:
    """A fixed fraction of `jitter` for this folder (Knuth's multiplicative hash)."""
    fraction = ((folder_id * 2654435761) % 2**32) / 2**32
    return jitter * fraction


def reconcile_due(folder: Folder, now: datetime, every: timedelta, jitter: timedelta) -> datetime | None:
    """When the folder's next reconcile is due (None: due now, never reconciled)."""
    if folder.last_reconcile_at is None:
        return None
    return folder.last_reconcile_at + every + jitter_of(folder.id, jitter)


def plan_cycle(folders: Sequence[Folder], *, now: datetime, offset: int, folders_per_tick: int,
               reconcile_every: timedelta, reconcile_jitter: timedelta, scans_per_tick: int) -> CyclePlan:
    """The folders to sync this tick, in order: priority first, then the rest by name."""
    eligible = [f for f in folders if not f.excluded and not f.parked]
    priority = [f for f in eligible if f.is_priority]
    others = sorted((f for f in eligible if not f.is_priority), key=lambda f: f.name)

    chosen: dict[int, bool] = {f.id: True for f in priority}  # folder id → reconcile
    for f in others:
        if not f.initial_sync_complete:
            chosen[f.id] = False
    steady = [f for f in others if f.initial_sync_complete]
    next_offset = 0
    if steady:
        start = offset % len(steady)
        take = min(folders_per_tick, len(steady))
        for i in range(take):
            chosen.setdefault(steady[(start + i) % len(steady)].id, False)
        next_offset = (start + take) % len(steady)

    def overdue(f: Folder) -> datetime:
        due = reconcile_due(f, now, reconcile_every, reconcile_jitter)
        return due if due is not None else datetime.min.replace(tzinfo=now.tzinfo)

    due_now = [f for f in steady
               if (d := reconcile_due(f, now, reconcile_every, reconcile_jitter)) is None or d <= now]
    for f in sorted(due_now, key=overdue)[:max(0, scans_per_tick)]:
        chosen[f.id] = True

    order = priority + others
    work = tuple(FolderWork(f, chosen[f.id]) for f in order if f.id in chosen)
    return CyclePlan(work, next_offset)


__all__ = ["CyclePlan", "FolderWork", "jitter_of", "plan_cycle", "reconcile_due"]

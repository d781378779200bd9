"""Where to look for the other side of a possible move (pure; see
`mailbridge.store.moves` for what is held and `actors.visits.Visits.settle_moves` for
the search).

A held arrival names its source: the folders whose mirror rows share its email_id.  A
held removal names nothing: its destination may be any folder.  The folders the
server's pushes cover (NOTIFY) need no STATUS: their change is pushed by itself, so a
side is given `NOTIFY_GRACE` seconds for that push before it counts as alone.  The
others are compared by STATUS, at most `limit` of them: the sources first, then the
special-use and priority folders (where clients move to), then by name.  When the
search reaches every folder that could hold the other side, what it did not pair is
proven alone at once; otherwise (more folders than the limit) the cycles look further
and the move window decides.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from mailbridge.store.folders import Folder

NOTIFY_GRACE = 5.0  # seconds a side waits for a NOTIFY push of its other side (Dovecot: about 1 s)


@dataclass(frozen=True, slots=True)
class Search:
    """The folders to compare by STATUS now, and whether that is every folder that could
    hold the other side of a held removal (`complete`: then what stays held is alone)."""

    status: tuple[Folder, ...]
    complete: bool


def plan_search(folders: Sequence[Folder], *, sources: Collection[int], covered: Collection[int],
                removals: bool, limit: int, removed_from: Collection[int] = ()) -> Search:
    """The search over the account's `folders` (those not excluded, parked or still in
    their initial sync are never asked: nothing there writes an event); `sources`: the
    folders holding a held arrival's email_id; `covered`: the ids NOTIFY covers;
    `removals`: a removal is held (else only arrivals), from the folders `removed_from`
    (a removal pairs only with an arrival in another folder: when all left one folder,
    that one is not asked)."""
    usable = [f for f in folders if not f.excluded and not f.parked and f.initial_sync_complete]
    lone = set(removed_from) if len(set(removed_from)) == 1 else set()
    wanted = [f for f in usable
              if f.id in sources or (removals and f.id not in covered and f.id not in lone)]
    wanted.sort(key=lambda f: (f.id not in sources, f.special_use is None and not f.is_priority, f.name))
    return Search(tuple(wanted[:max(0, limit)]), complete=len(wanted) <= limit)


__all__ = ["NOTIFY_GRACE", "Search", "plan_search"]

"""Where the search for a move's other side looks (mailbridge.sync.moves.plan_search)."""

from __future__ import annotations

import dataclasses

from mailbridge.store.folders import Folder
from mailbridge.sync.moves import plan_search


def folder(i: int, name: str, **kw) -> Folder:
    fields = {f.name for f in dataclasses.fields(Folder)}
    base = dict(id=i, account_id=1, name=name, raw_name=name, uidvalidity=1, uidnext=10, highestmodseq=None,
                initial_top_uid=None, initial_low_uid=None, synced_high_uid=None, initial_sync_complete=True,
                is_priority=False, excluded=False, parked=False, uidvalidity_resets=(), last_reconcile_at=None,
                last_flag_scan_at=None)
    base.update(kw)
    return Folder(**{k: v for k, v in base.items() if k in fields})


FOLDERS = [folder(1, "INBOX", is_priority=True), folder(2, "Zeta"), folder(3, "Archive", special_use="\\Archive"),
           folder(4, "Trash", excluded=True), folder(5, "New", initial_sync_complete=False),
           folder(6, "Broken", parked=True), folder(7, "Alpha")]


def names(search) -> list[str]:
    return [f.name for f in search.status]


def test_a_removal_asks_every_usable_folder_sources_and_likely_destinations_first():
    s = plan_search(FOLDERS, sources={2}, covered=(), removals=True, limit=50)
    assert names(s) == ["Zeta", "Archive", "INBOX", "Alpha"] and s.complete


def test_arrivals_alone_ask_only_their_sources():
    s = plan_search(FOLDERS, sources={7}, covered=(), removals=False, limit=50)
    assert names(s) == ["Alpha"] and s.complete


def test_notify_covered_folders_are_not_asked():
    s = plan_search(FOLDERS, sources=(), covered={2, 3, 7}, removals=True, limit=50)
    assert names(s) == ["INBOX"] and s.complete


def test_over_the_limit_the_search_is_incomplete():
    s = plan_search(FOLDERS, sources=(), covered=(), removals=True, limit=2)
    assert names(s) == ["Archive", "INBOX"] and not s.complete


def test_the_one_folder_all_removals_left_is_not_asked():
    s = plan_search(FOLDERS, sources=(), covered=(), removals=True, limit=50, removed_from={1})
    assert names(s) == ["Archive", "Alpha", "Zeta"] and s.complete
    s = plan_search(FOLDERS, sources=(), covered=(), removals=True, limit=50, removed_from={1, 3})
    assert names(s) == ["Archive", "INBOX", "Alpha", "Zeta"]
    # Gmail: All Mail is the only mirrored folder; a message leaving it asks nothing
    s = plan_search(FOLDERS[:1], sources=(), covered=(), removals=True, limit=50, removed_from={1})
    assert names(s) == [] and s.complete

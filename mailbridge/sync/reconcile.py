"""Flags and deletes of a folder's mirrored range, as cheaply as the server allows.

Run on every visit of a folder, after its new mail is in (so the mirrored range is
[initial_low_uid, synced_high_uid] and every server UID in it that existed at SELECT
time is mirrored):

Flags
  - CONDSTORE: nothing when HIGHESTMODSEQ is what we stored last time; otherwise
    ``UID FETCH low:high (UID FLAGS) (CHANGEDSINCE stored)``, plus ``VANISHED`` when
    QRESYNC is enabled, which also names the expunged UIDs.
  - otherwise, when a flag scan is planned: ``UID FETCH low:high (UID FLAGS)``, diffed.
  - on Gmail (X-GM-EXT-1) both ask ``X-GM-LABELS`` too: a label change bumps the
    message's MODSEQ, so it arrives (and is stored) as a flag change does.

Deletes
  - QRESYNC's VANISHED, when we have it;
  - the count check: once the initial sync is complete (and no retention window hides
    old messages), the mirror holds every message of the SELECT snapshot plus what
    arrived since plus stale rows, so ``mirrored == EXISTS`` proves there is nothing
    stale.  O(1) on the server, one index count here;
  - otherwise (counts differ, a full reconcile is due, or the count check cannot
    apply): ``UID SEARCH UID low:high`` diffed against the mirror.  A server UID the
    mirror lacks inside the range is fetched (healed), unless retention keeps it out.

Every change is written with its events in one transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mailbridge.imap.models import FlagUpdate, MessageMeta, SelectInfo
from mailbridge.imap.fetch import parse_fetch
from mailbridge.imap.responses import parse_search, parse_vanished
from mailbridge.imap.uidset import compress_uids
from mailbridge.store import folders as folder_store
from mailbridge.store import messages as message_store
from mailbridge.store.db import Db
from mailbridge.store.folders import Folder
from mailbridge.sync.fetching import FolderReader, flag_items
from mailbridge.sync.salvage import write_batch

log = logging.getLogger(__name__)
SCAN_CHUNK = 10_000  # UIDs per FETCH of a full flag scan


@dataclass(frozen=True, slots=True)
class ReconcileOutcome:
    """What one reconcile changed in the mirror, and what it cost."""

    changed: int = 0
    removed: int = 0
    added: int = 0
    commands: int = 0  # IMAP commands this reconcile sent


async def reconcile(db: Db, reader: FolderReader, f: Folder, info: SelectInfo, *, prev_modseq: int | None,
                    flag_scan: bool, full: bool) -> ReconcileOutcome:
    """Bring flags and deletes of folder `f`'s mirrored range up to date (see module doc);
    `info` is what this visit's SELECT saw, `reader` reads the selected folder.

    Each write is one transaction; cancelled in between, the mirror is as after the last
    one, and the next visit reconciles again."""
    assert f.initial_low_uid is not None and f.synced_high_uid is not None
    low, high = f.initial_low_uid, f.synced_high_uid
    if high < low:
        return ReconcileOutcome()
    session = reader.session
    commands = 0
    flag_updates: list[FlagUpdate] = []
    vanished: list[int] | None = None
    qresync = "QRESYNC" in session.enabled
    condstore = session.condstore
    full_flags = False
    scanned: set[int] = set()

    if condstore and prev_modseq and info.highestmodseq is not None and not full:
        if info.highestmodseq != prev_modseq:
            modifiers = f"(CHANGEDSINCE {prev_modseq}{' VANISHED' if qresync else ''})"
            response = await session.uid_fetch(f"{low}:{high}", flag_items(session), modifiers=modifiers)
            commands += 1
            flag_updates = [FlagUpdate(i.uid, i.flags, i.modseq, i.labels) for i in parse_fetch(response.lines)
                            if isinstance(i, (FlagUpdate, MessageMeta)) and low <= i.uid <= high]
            if qresync:
                vanished = [u for u in parse_vanished(response.lines) if low <= u <= high]
        elif qresync:
            vanished = []  # nothing changed at all since we looked: no expunge either
    elif flag_scan or full:
        flag_updates, scanned, n = await _scan_flags(db, reader, f.id, low, high)
        commands += n
        full_flags = True

    server_uids: set[int] | None = scanned if full_flags else None
    gone: list[int] = list(vanished or ())
    missing: list[int] = []
    async with db.transaction() as tx:
        mirrored_count = await message_store.count_between(tx, f.id, low, high)
    count_check = f.initial_sync_complete and not reader.retention_days and info.exists is not None
    stale_possible = not count_check or mirrored_count - len(gone) != info.exists
    if full or (stale_possible and (vanished is None or count_check)):
        if server_uids is None:
            server_uids = set(await reader.search(f"UID {low}:{high}"))
            commands += 1
        mirrored = set(await _mirrored_uids(db, f.id, low, high))
        gone = sorted(mirrored - server_uids)
        missing = sorted(server_uids - mirrored)
    elif server_uids is not None:
        mirrored = set(await _mirrored_uids(db, f.id, low, high))
        gone = sorted(set(gone) | (mirrored - server_uids))

    async with db.transaction() as tx:
        removed = await message_store.remove_uids(tx, f.account_id, f.id, gone)
        gone_set = set(gone)
        changed = await message_store.update_flags(tx, f.account_id, f.id,
                                                   [u for u in flag_updates if u.uid not in gone_set])
        await folder_store.stamp_reconcile(tx, f.id, flags_scanned=full_flags or condstore,
                                           uids_compared=full or server_uids is not None)

    added = 0
    if missing and reader.retention_days:
        response = await session.uid_search(f"UID {compress_uids(missing)}{reader.retention_criterion()}")
        commands += 1
        keep = set(parse_search(response.lines))
        missing = [u for u in missing if u in keep]
    if missing:
        # UIDs inside the mirrored range the mirror lacks: should not happen; heal them
        log.warning("folder %r: %d server UIDs missing from the mirror; fetching them", f.name, len(missing))
        metas, _ = await reader.fetch_meta(missing)
        commands += 1
        # one statement on the pool: a message refused for its values becomes a placeholder
        added = (await write_batch(db, f.account_id, f.id, metas, emit_events=True)).written.added
    return ReconcileOutcome(changed=changed, removed=removed, added=added, commands=commands)


async def _scan_flags(db: Db, reader: FolderReader, folder_id: int, low: int, high: int
                      ) -> tuple[list[FlagUpdate], set[int], int]:
    """Every UID's flags in [low, high], fetched SCAN_CHUNK UIDs at a time so memory stays
    bounded: (the updates that differ from the mirror, the server's UIDs, commands sent)."""
    differ: list[FlagUpdate] = []
    server: set[int] = set()
    commands = 0
    for lo in range(low, high + 1, SCAN_CHUNK):
        hi = min(high, lo + SCAN_CHUNK - 1)
        response = await reader.session.uid_fetch(f"{lo}:{hi}", flag_items(reader.session))
        commands += 1
        mirrored = await message_store.flags_between(db, folder_id, lo, hi)
        labelled = await message_store.labels_between(db, folder_id, lo, hi) \
            if reader.session.has("X-GM-EXT-1") else {}
        for item in parse_fetch(response.lines):
            if isinstance(item, (FlagUpdate, MessageMeta)) and lo <= item.uid <= hi:
                server.add(item.uid)
                mine = mirrored.get(item.uid)
                if mine is None:
                    continue
                labels_differ = item.labels is not None and sorted(labelled.get(item.uid) or ()) != sorted(item.labels)
                if sorted(mine) != sorted(item.flags) or labels_differ:
                    differ.append(FlagUpdate(item.uid, item.flags, item.modseq, item.labels))
        del response, mirrored
    return differ, server, commands


async def _mirrored_uids(db: Db, folder_id: int, low: int, high: int) -> list[int]:
    async with db.transaction() as tx:
        return await message_store.uids_between(tx, folder_id, low, high)


__all__ = ["ReconcileOutcome", "reconcile"]

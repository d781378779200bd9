"""`Folder` records for the pure tests (planner, NOTIFY pushes): no database needed."""

from __future__ import annotations

from datetime import datetime, timezone

from mailbridge.sync.folder import Folder

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)


def folder(fid: int, name: str, *, priority=False, complete=True, excluded=False, parked=False,
           scanned=None, reconciled=NOW, uidnext=10, modseq=None) -> Folder:
    return Folder(id=fid, account_id=1, name=name, raw_name=name, uidvalidity=5, uidnext=uidnext,
                  highestmodseq=modseq, initial_top_uid=9, initial_low_uid=1, synced_high_uid=9,
                  initial_sync_complete=complete, is_priority=priority, excluded=excluded, parked=parked,
                  uidvalidity_resets=(), last_reconcile_at=reconciled, last_flag_scan_at=scanned)

"""One account's sync over one session: discover folders, then bring them up to date.

The AccountActor's visits (`actors.visits`) run these, for `serve` a cycle at a time
and for `sync --once` one complete cycle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, AsyncGenerator

from mailbridge.aio.imap import ImapSession
from mailbridge.config import Settings
from mailbridge.errors import ImapCommandError
from mailbridge.imap.responses import parse_list
from mailbridge.sync.discover import apply_plan, plan_folders
from mailbridge.sync.folder import Folder, FolderSync, Step, load_folders, parked_problem

log = logging.getLogger(__name__)


@dataclass
class SyncTotals:
    """Counters over a run (mutable: filled as steps arrive)."""

    folders: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    defects: int = 0
    problems: list[str] = field(default_factory=list)  # what makes the account degraded

    def add(self, step: Step) -> None:
        self.added += step.added
        self.changed += step.changed
        self.removed += step.removed
        self.defects += step.defects


async def discover(db: Any, session: ImapSession, account_id: int,
                   excluded_names: tuple[str, ...] | None) -> list[Folder]:
    """LIST the server's folders into the folders table; returns the account's folders."""
    response = await session.list("", "*")
    plans = plan_folders(parse_list(response.lines), excluded_names)
    async with db.transaction() as tx:
        added, removed = await apply_plan(tx, account_id, plans)
    if added or removed:
        log.info("account %d: %d folder(s) added, %d removed", account_id, added, removed)
    return await load_folders(db, account_id)


async def sync_folder_steps(db: Any, session: ImapSession, folder: Folder, settings: Settings, *,
                            flag_scan: bool = True, full_reconcile: bool = False) -> AsyncGenerator[Step, None]:
    """The steps of one folder's sync; a vanished folder ends with a 'gone' step.

    Every visit brings in new mail and runs the cheap change checks of
    `mailbridge.sync.reconcile`; `flag_scan` adds a scan of every mirrored UID's flags
    where the server lacks CONDSTORE, `full_reconcile` a UID SEARCH diff regardless.
    """
    sync = FolderSync(db, session, folder, batch_size=settings.batch_size,
                      retention_days=settings.retention_days,
                      reset_limit=settings.uidvalidity_reset_limit, flag_scan=flag_scan,
                      full_reconcile=full_reconcile)
    try:
        async for step in sync.steps():
            yield step
    except ImapCommandError as exc:
        if exc.command in ("SELECT", "EXAMINE"):
            # listed a moment ago, unselectable now: deleted or renamed on the server
            yield Step(folder.name, "gone", detail=str(exc))
            return
        raise

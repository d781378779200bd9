"""One folder's visit as steps, and the totals of a run over an account's folders.

The AccountActor's visits (`actors.visits`) run these (after `sync.discover`), for
`serve` a cycle at a time and for `sync --once` one complete cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncGenerator

from mailbridge.aio.imap import ImapSession
from mailbridge.config import Settings
from mailbridge.errors import ImapCommandError
from mailbridge.imap.throttle import default_burst
from mailbridge.store.db import Db
from mailbridge.sync.folder import Folder, FolderSync, Step

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


async def sync_folder_steps(db: Db, session: ImapSession, folder: Folder, settings: Settings, *,
                            flag_scan: bool = True, full_reconcile: bool = False) -> AsyncGenerator[Step, None]:
    """The steps of one folder's sync; a vanished folder ends with a 'gone' step.

    Every visit brings in new mail and runs the cheap change checks of
    `mailbridge.sync.reconcile`; `flag_scan` adds a scan of every mirrored UID's flags
    where the server lacks CONDSTORE, `full_reconcile` a UID SEARCH diff regardless.
    """
    sync = FolderSync(db, session, folder, batch_size=settings.batch_size,
                      retention_days=settings.retention_days,
                      reset_limit=settings.uidvalidity_reset_limit, flag_scan=flag_scan,
                      full_reconcile=full_reconcile, move_window=settings.move_window_seconds,
                      fetch_budget=default_burst(settings.commands_per_minute))
    try:
        async for step in sync.steps():
            yield step
    except ImapCommandError as exc:
        if exc.command in ("SELECT", "EXAMINE") and exc.code in GONE_CODES:
            # listed a moment ago, unselectable now: deleted or renamed on the server (a
            # refusal with another RFC 5530 code, [SERVERBUG] or [LIMIT], is a problem)
            yield Step(folder.name, "gone", detail=str(exc))
            return
        raise


# the response codes of a SELECT refused because the mailbox is not there (None: no code)
GONE_CODES = frozenset({None, "NONEXISTENT"})

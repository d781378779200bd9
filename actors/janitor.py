"""The janitor: one task per `serve` process pruning the change log.

Every `interval` seconds (first soon after start) it deletes the events older than
`MAILBRIDGE_EVENTS_RETENTION_DAYS`, in bounded batches (`mailbridge.store.events.prune`).
Several processes sharing one database may all run it: the deletes are idempotent.
"""

from __future__ import annotations

import logging

import trio

from mailbridge.errors import DatabaseError
from mailbridge.store import events as event_store
from mailbridge.store.db import Db

log = logging.getLogger(__name__)

INTERVAL = 3600.0      # seconds between prunes
FIRST_DELAY = 30.0     # seconds after start before the first (start-up stays quick)
BATCH = 5000           # events per DELETE statement
PAUSE = 0.05           # seconds between batches, leaving the database to the actors


async def prune_once(db: Db, retention_days: int, *, batch: int = BATCH, pause: float = PAUSE) -> int:
    """Delete every event older than `retention_days`, a batch at a time with a short pause
    between batches; returns how many went.  Cancelled, it stops after the batch in flight."""
    total = 0
    more = True
    while more:
        deleted, more = await event_store.prune_batch(db, retention_days, batch)
        total += deleted
        if more:
            await trio.sleep(pause)
    return total


async def run_janitor(db: Db, retention_days: int, *, interval: float = INTERVAL,
                      first_delay: float = FIRST_DELAY, batch: int = BATCH,
                      task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Prune events every `interval` seconds until cancelled.  A database error is logged
    and retried at the next interval; it never ends the task."""
    task_status.started()
    await trio.sleep(first_delay)
    while True:
        try:
            deleted = await prune_once(db, retention_days, batch=batch)
        except DatabaseError as exc:
            log.warning("event pruning failed: %s; retrying in %.0f s", exc, interval)
        else:
            if deleted:
                log.info("pruned %d event(s) older than %d day(s)", deleted, retention_days)
        await trio.sleep(interval)


__all__ = ["prune_once", "run_janitor"]

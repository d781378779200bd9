"""The search indexer: builds queued full-text documents beside the sync.

Account actors write the documents of the rows they insert with the rows and queue the
ids of the rows they change (`search_pending`, also filled by a migration that changes
the document); this task, one per process, turns queued ids into `message_search`
documents a batch at a time.  Search is exact either way (see
`mailbridge.store.search`); the index only makes it fast.
"""

from __future__ import annotations

import logging

import trio

from mailbridge.errors import DatabaseError
from mailbridge.store import search as search_store
from mailbridge.store.db import Db

log = logging.getLogger(__name__)

BATCH = 2000          # queued ids per statement
IDLE_POLL = 1.0       # seconds between looks at an empty queue
DUTY = 0.5            # at most this share of the time indexing while a backlog drains
RETRY_AFTER = 5.0     # seconds after a database error


async def drain(db: Db, *, batch: int = BATCH) -> int:
    """Index everything queued now; returns how many ids were taken.  Cancelled, it
    stops after the statement in flight commits or rolls back (no partial batch)."""
    total = 0
    while True:
        n = await search_store.index_pending(db, batch)
        total += n
        if n < batch:
            return total


async def run_indexer(db: Db, *, batch: int = BATCH, idle_poll: float = IDLE_POLL, duty: float = DUTY,
                      task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Index queued documents until cancelled.

    While a backlog drains it works at most `duty` of the time (it sleeps as long as a
    batch took, scaled), leaving the database to the account actors' writes; with an
    empty queue it looks again every `idle_poll` seconds.  A database error is logged and
    retried after RETRY_AFTER seconds; it never ends the task.
    """
    task_status.started()
    while True:
        started = trio.current_time()
        try:
            n = await search_store.index_pending(db, batch)
        except DatabaseError as exc:
            log.warning("search indexer: %s; retrying in %.0f s", exc, RETRY_AFTER)
            await trio.sleep(RETRY_AFTER)
            continue
        if n < batch:
            await trio.sleep(idle_poll)
        else:
            took = trio.current_time() - started
            await trio.sleep(took * (1 - duty) / duty)


__all__ = ["drain", "run_indexer"]

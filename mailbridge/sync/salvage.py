"""The batch write that no single message can stop.

`write_batch` writes a batch with `message_store.upsert` as one statement (the normal
path: nothing more).  When Postgres, or the driver encoding the parameters, refuses the
batch for its values (`message_store.rejected_data`), it bisects: halves are written
without the cursor, those that still fail are halved again, and each message that fails
alone is stored as a placeholder carrying the refusal as its defect (the folder's repair
fetches such rows again).  The cursor, if any, then moves in the statement that writes
those placeholders: it never covers a row that is not committed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from mailbridge.errors import DatabaseError
from mailbridge.imap.models import MessageMeta
from mailbridge.store import messages as message_store
from mailbridge.store.db import Db
from mailbridge.store.messages import EncodedRows, FolderUpdate, Written
from mailbridge.sync.fetching import placeholder

log = logging.getLogger(__name__)

UNSTORABLE = "could not be stored"  # the defect's prefix on such a placeholder
_REASON_CHARS = 300  # of the refusal kept in the defect (it may quote a huge value)


@dataclass(frozen=True, slots=True)
class BatchWritten:
    """What `write_batch` did: the rows' counts and the UIDs stored as placeholders."""

    written: Written
    unstorable: tuple[int, ...] = ()


async def write_batch(db: Db, account_id: int, folder_id: int, rows: Sequence[MessageMeta] | EncodedRows, *,
                      emit_events: bool, folder: FolderUpdate | None = None) -> BatchWritten:
    """`message_store.upsert` of `rows` with `folder`, salvaging a batch refused for its
    values as the module says; any other error (and a placeholder refused too) is raised.
    `db` is the pool, not a transaction: a refused statement aborts the transaction it is
    in, and the parts after it could not be written.

    On cancellation, what was committed stays committed; the cursor has moved only if the
    last statement committed, and a re-run rewrites the same rows (idempotent upserts).
    `rows` may come encoded (`message_store.encode_rows`); the parts are encoded anew.
    """
    metas = rows.metas if isinstance(rows, EncodedRows) else rows
    try:
        return BatchWritten(await message_store.upsert(db, account_id, folder_id, rows,
                                                       emit_events=emit_events, folder=folder))
    except DatabaseError as exc:
        if not message_store.rejected_data(exc) or not metas:
            raise
        first = exc
    log.warning("folder %s: a batch of %d message(s) was refused for its values (%s); "
                "writing it in parts", folder_id, len(metas), _reason(first))
    # the parts carry no cursor; their inserts still count when the cursor's would
    partial = FolderUpdate(count_added=True) if folder is not None and folder.count_added else None
    added = changed = 0
    refused: list[tuple[int, str]] = []

    async def write(part: Sequence[MessageMeta], known_bad: DatabaseError | None) -> None:
        nonlocal added, changed
        if known_bad is None:
            try:
                done = await message_store.upsert(db, account_id, folder_id, part,
                                                  emit_events=emit_events, folder=partial)
            except DatabaseError as exc:
                if not message_store.rejected_data(exc):
                    raise
                known_bad = exc
            else:
                added += done.added
                changed += done.changed
                return
        if len(part) == 1:
            refused.append((part[0].uid, _reason(known_bad)))
            return
        half = len(part) // 2
        await write(part[:half], None)
        await write(part[half:], None)

    await write(metas, first)
    placeholders = [placeholder(uid, reason, defect=UNSTORABLE) for uid, reason in refused]
    for uid, reason in refused:
        log.warning("folder %s: UID %d stored as a placeholder: %s", folder_id, uid, reason)
    last = await message_store.upsert(db, account_id, folder_id, placeholders,
                                      emit_events=emit_events, folder=folder)
    return BatchWritten(Written(added + last.added, changed + last.changed, last.message_count),
                        tuple(uid for uid, _ in refused))


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS] + "…"


__all__ = ["UNSTORABLE", "BatchWritten", "write_batch"]

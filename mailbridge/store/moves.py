"""Moves as moves: the two sides of a move, seen in different visits, become one
`message_moved` event (see sql/0013_moves.sql).

A message moved by another client (UID MOVE, or COPY + STORE \\Deleted + EXPUNGE) leaves
one folder and arrives in another with the same `email_id`; mailbridge sees the two
sides in different folder visits, in either order.  So the side seen first is held in
`move_pending` instead of writing its event:

- a removal of a row with an `email_id` (`messages.remove_uids`) is held as `removed`,
  unless a held `added` of the same email_id in another folder of the account waits:
  then the removal and that arrival are one `message_moved`;
- an arrival of a row (`messages.upsert` with events) takes a held `removed` of the same
  email_id in another folder: one `message_moved`; else, when another folder of the
  account still holds a row of that email_id (a copy, or a move whose source folder is
  not visited yet), its `message_added` is held as `added`;
- the actor looks for the other side at once (`actors.visits.Visits.settle_moves`):
  right after a visit or cycle that held a side, it compares the folders that could
  hold it with the server by STATUS (`mailbridge.sync.moves.plan_search`) and visits
  those that changed; a server's MOVE (or a client's COPY before its EXPUNGE) has put
  the other side there already, so what is still held afterwards has none and is
  written as the event it held, `message_removed` or `message_added` (`flush_through`;
  under NOTIFY a removal waits a short grace for a push instead); at the end of
  `sync --once` all of it (every folder was seen);
- as a safety net, what is held longer than `MAILBRIDGE_MOVE_WINDOW_SECONDS` is written
  so too (`flush_due`, at the end of each folder visit of the owning actor).

Each side is held, claimed or flushed in the same statement that deletes or inserts the
row or writes the event, so nothing is lost: after a crash what is held is settled by
the next actor's first search (or the window).  Pairs are matched one to one (ranked by
UID and by age within an email_id), and a moved event is written only for a held row
its statement deleted, so two writers never both use one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailbridge.store.api import MESSAGE_COLUMNS
from mailbridge.store.db import Db

# the payload of a `message_moved` event, over a row `m` with the arrival (id, uid,
# email_id), the source (from_folder, from_uid, from_message) and the destination folder
MOVED_PAYLOAD = """jsonb_build_object(
           'message', m.id, 'uid', m.uid, 'email_id', m.email_id,
           'from_folder', (SELECT name FROM folders WHERE id = m.from_folder), 'from_folder_id', m.from_folder,
           'from_uid', m.from_uid, 'from_message', m.from_message)"""

# the held sides due (older than $2 seconds, or of id at most $3; NULL: not that test), as the events they held
_FLUSH = """
    WITH due AS (
        DELETE FROM move_pending
        WHERE account_id = $1 AND (created_at <= now() - make_interval(secs => $2::float8) OR id <= $3::bigint)
        RETURNING id, account_id, folder_id, side, payload
    ), ev AS (
        INSERT INTO events (account_id, folder_id, kind, payload)
        SELECT account_id, folder_id, CASE side WHEN 'removed' THEN 'message_removed' ELSE 'message_added' END,
               payload
        FROM due ORDER BY id
        RETURNING 1
    )
    SELECT count(*) FROM ev"""


async def flush_due(db: Db, account_id: int, window_seconds: float) -> int:
    """Write the events held longer than `window_seconds` (0: all) as what they are, a
    removal or an arrival that no move completed; returns how many.  One statement."""
    return int(await db.fetchval(_FLUSH, account_id, float(window_seconds), 0))


async def flush_through(db: Db, account_id: int, mark: int, *, arrivals_only: bool = False) -> int:
    """Write the events of the sides held up to `mark` (`Held.mark`), or only of its
    arrivals, as plain removals and arrivals: what could hold their other side was
    compared with the server after they were held, so it does not exist.  Returns how
    many.  One statement."""
    if arrivals_only:
        return int(await db.fetchval(_FLUSH_ARRIVALS, account_id, mark))
    return int(await db.fetchval(_FLUSH, account_id, None, mark))


_FLUSH_ARRIVALS = _FLUSH.replace(
    "(created_at <= now() - make_interval(secs => $2::float8) OR id <= $3::bigint)",
    "side = 'added' AND id <= $2::bigint")


@dataclass(frozen=True, slots=True)
class Held:
    """What an account holds: the newest side's id (ids grow), whether a removal is
    among them, the folders whose rows share a held arrival's email_id (its source), and
    the folders the held removals left."""

    mark: int
    removals: bool
    sources: frozenset[int]
    removed_from: frozenset[int] = frozenset()  # the folders the held removals left


async def held(db: Db, account_id: int) -> Held | None:
    """The account's held sides (None: none).  One statement."""
    row = await db.fetchrow(
        """SELECT max(id) AS mark, bool_or(side = 'removed') AS removals,
                  array_agg(DISTINCT folder_id) FILTER (WHERE side = 'removed') AS removed_from,
                  (SELECT array_agg(DISTINCT m.folder_id) FROM move_pending p
                   JOIN messages m ON m.account_id = p.account_id AND m.email_id = p.email_id
                                  AND m.folder_id <> p.folder_id
                   WHERE p.account_id = $1 AND p.side = 'added') AS sources
           FROM move_pending WHERE account_id = $1""", account_id)
    if row is None or row["mark"] is None:
        return None
    return Held(int(row["mark"]), bool(row["removals"]), frozenset(row["sources"] or ()),
                frozenset(row["removed_from"] or ()))


async def copies(db: Db, email_id: str, account_id: int | None = None) -> list[dict[str, Any]]:
    """Every mirrored copy of `email_id` (in one account, or in each: a derived id is the
    same for one message delivered to two accounts), by account, folder name and UID;
    rows of MESSAGE_COLUMNS."""
    rows = await db.fetch(
        f"""SELECT {MESSAGE_COLUMNS} FROM messages m JOIN folders f ON f.id = m.folder_id
            WHERE m.account_id = ANY (SELECT id FROM accounts WHERE $2::bigint IS NULL OR id = $2)
              AND m.email_id = $1
            ORDER BY m.account_id, f.name, m.uid LIMIT {MAX_COPIES}""", email_id, account_id)
    return [dict(r) for r in rows]


MAX_COPIES = 1000


async def pending(db: Db, account_id: int) -> int:
    """How many sides of a possible move the account holds."""
    return int(await db.fetchval("SELECT count(*) FROM move_pending WHERE account_id = $1", account_id))


__all__ = ["MAX_COPIES", "MOVED_PAYLOAD", "copies", "flush_due", "Held", "flush_through", "held", "pending"]

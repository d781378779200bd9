"""The folder algorithms: select and UIDVALIDITY, incremental, initial (newest first),
and reconcile (flags and deletes).

Cursors (see sql/0001_baseline.sql) move only in the transaction that writes the rows
they cover:

- ``initial_top_uid``: UIDs above it belong to the incremental sync;
- ``initial_low_uid``: every server UID in [initial_low_uid, initial_top_uid] is mirrored;
- ``synced_high_uid``: every server UID in (initial_top_uid, synced_high_uid] is mirrored.

So a crash, a kill -9 or a dropped connection at any point leaves cursors that describe
exactly what is stored; the next run continues from them, and re-fetching a batch is an
idempotent upsert.  Work is cut into batches: `FolderSync.steps()` yields after each one
so the actor can answer requests between them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator

from mailbridge.aio.imap import ImapSession
from mailbridge.errors import ImapCommandError
from mailbridge.imap.models import FetchDefect, FlagUpdate, MessageMeta, SelectInfo
from mailbridge.imap.responses import parse_fetch, parse_search, parse_select
from mailbridge.imap.uidset import split_for_command
from mailbridge.store import messages as message_store

log = logging.getLogger(__name__)

HEADER_FIELDS = "MESSAGE-ID SUBJECT FROM TO CC DATE IN-REPLY-TO REFERENCES"
META_ITEMS = f"(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS ({HEADER_FIELDS})])"
META_ITEMS_MODSEQ = f"(UID FLAGS INTERNALDATE RFC822.SIZE MODSEQ BODY.PEEK[HEADER.FIELDS ({HEADER_FIELDS})])"
RESET_WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Folder:
    """A folders row, as the sync needs it."""

    id: int
    account_id: int
    name: str
    raw_name: str
    uidvalidity: int | None
    uidnext: int | None
    highestmodseq: int | None
    initial_top_uid: int | None
    initial_low_uid: int | None
    synced_high_uid: int | None
    initial_sync_complete: bool
    is_priority: bool
    excluded: bool
    parked: bool
    uidvalidity_resets: tuple[datetime, ...]
    last_reconcile_at: datetime | None
    last_flag_scan_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> "Folder":
        data = {k: row[k] for k in cls.__slots__}  # type: ignore[attr-defined]
        data["uidvalidity_resets"] = tuple(data["uidvalidity_resets"] or ())
        return cls(**data)


FOLDER_COLUMNS = ", ".join(Folder.__slots__)  # type: ignore[attr-defined]


async def load_folders(db: Any, account_id: int) -> list[Folder]:
    rows = await db.fetch(
        f"SELECT {FOLDER_COLUMNS} FROM folders WHERE account_id = $1 "
        "ORDER BY is_priority DESC, name = 'INBOX' DESC, name", account_id)
    return [Folder.from_row(r) for r in rows]


async def load_folder(db: Any, folder_id: int) -> Folder | None:
    row = await db.fetchrow(f"SELECT {FOLDER_COLUMNS} FROM folders WHERE id = $1", folder_id)
    return Folder.from_row(row) if row else None


@dataclass(frozen=True, slots=True)
class Step:
    """What one batch did."""

    folder: str
    phase: str  # select, reset, incremental, initial, reconcile, parked, done
    added: int = 0
    changed: int = 0
    removed: int = 0
    defects: int = 0
    synced: int = 0  # rows now mirrored in the folder
    total: int | None = None  # messages on the server (EXISTS)
    detail: str = ""


class FolderParked(Exception):
    """Raised internally when a folder crosses the UIDVALIDITY reset limit."""


class FolderSync:
    """Brings one folder up to date over one session, batch by batch."""

    def __init__(self, db: Any, session: ImapSession, folder: Folder, *, batch_size: int,
                 retention_days: int | None = None, reset_limit: int = 3,
                 reconcile: bool = True, now=lambda: datetime.now(timezone.utc)) -> None:
        self.db = db
        self.session = session
        self.folder = folder
        self.batch_size = batch_size
        self.retention_days = retention_days
        self.reset_limit = reset_limit
        self.reconcile_wanted = reconcile
        self.now = now
        self.select_info: SelectInfo | None = None

    @property
    def _modseq(self) -> bool:
        return "CONDSTORE" in self.session.enabled or "QRESYNC" in self.session.enabled

    # --- the whole run -----------------------------------------------------------------

    async def steps(self) -> AsyncIterator[Step]:
        """Select, then incremental, initial and reconcile batches; one Step per batch."""
        if self.folder.parked:
            yield Step(self.folder.name, "parked", detail="parked after repeated UIDVALIDITY resets")
            return
        step = await self._select()
        yield step
        if step.phase == "parked":
            return
        async for step in self._incremental():
            yield step
        async for step in self._initial():
            yield step
        if self.reconcile_wanted:
            yield await self._reconcile()
        yield await self._finish()

    # --- select and UIDVALIDITY --------------------------------------------------------

    async def _select(self) -> Step:
        response = await self.session.select(self.folder.raw_name, condstore=True)
        info = parse_select(response.lines_and_text)
        self.select_info = info
        f = self.folder
        top = (info.uidnext - 1) if info.uidnext else await self._max_uid()
        if f.uidvalidity is None:
            await self._init_cursors(info, top)
            return Step(f.name, "select", total=info.exists, detail="first sync")
        if info.uidvalidity is not None and info.uidvalidity != f.uidvalidity:
            return await self._reset(info, top)
        return Step(f.name, "select", total=info.exists)

    async def _max_uid(self) -> int:
        response = await self.session.uid_search("ALL")
        uids = parse_search(response.lines)
        return max(uids, default=0)

    async def _init_cursors(self, info: SelectInfo, top: int) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(
                """UPDATE folders SET uidvalidity = $2, uidnext = $3, highestmodseq = $4,
                       initial_top_uid = $5::bigint, initial_low_uid = $5::bigint + 1, synced_high_uid = $5::bigint,
                       initial_sync_complete = false, server_message_count = $6
                   WHERE id = $1""",
                self.folder.id, info.uidvalidity, info.uidnext, info.highestmodseq, top, info.exists)
        self.folder = replace(self.folder, uidvalidity=info.uidvalidity, uidnext=info.uidnext,
                              highestmodseq=info.highestmodseq, initial_top_uid=top,
                              initial_low_uid=top + 1, synced_high_uid=top, initial_sync_complete=False)

    async def _reset(self, info: SelectInfo, top: int) -> Step:
        f = self.folder
        now = self.now()
        recent = tuple(t for t in f.uidvalidity_resets if now - t < RESET_WINDOW) + (now,)
        park = len(recent) > self.reset_limit
        async with self.db.transaction() as tx:
            removed = int(await tx.fetchval(
                "WITH d AS (DELETE FROM messages WHERE folder_id = $1 RETURNING 1) SELECT count(*) FROM d", f.id))
            await tx.execute(
                """UPDATE folders SET uidvalidity = $2, uidnext = $3, highestmodseq = $4,
                       initial_top_uid = $5::bigint, initial_low_uid = $5::bigint + 1, synced_high_uid = $5::bigint,
                       initial_sync_complete = false, message_count = 0, server_message_count = $6,
                       uidvalidity_resets = $7, parked = $8,
                       parked_reason = CASE WHEN $8 THEN $9 ELSE NULL END,
                       last_reconcile_at = NULL, last_flag_scan_at = NULL
                   WHERE id = $1""",
                f.id, info.uidvalidity, info.uidnext, info.highestmodseq, top, info.exists,
                list(recent), park,
                f"UIDVALIDITY changed {len(recent)} times in 24 h (limit {self.reset_limit}); "
                f"`mailbridge accounts reset {f.account_id} --folder '{f.name}'` resumes it")
            await tx.execute(
                """INSERT INTO events (account_id, folder_id, kind, payload)
                   VALUES ($1, $2, 'folder_reset', jsonb_build_object(
                       'folder', $3::text, 'old_uidvalidity', $4::bigint, 'new_uidvalidity', $5::bigint,
                       'removed', $6::int, 'parked', $7::bool))""",
                f.account_id, f.id, f.name, f.uidvalidity, info.uidvalidity, removed, park)
        log.warning("folder %r: UIDVALIDITY %s -> %s; %d rows dropped, re-syncing%s", f.name,
                    f.uidvalidity, info.uidvalidity, removed, " (parked)" if park else "")
        self.folder = replace(f, uidvalidity=info.uidvalidity, uidnext=info.uidnext,
                              highestmodseq=info.highestmodseq, initial_top_uid=top, initial_low_uid=top + 1,
                              synced_high_uid=top, initial_sync_complete=False, parked=park,
                              uidvalidity_resets=recent)
        return Step(f.name, "parked" if park else "reset", removed=removed, total=info.exists,
                    detail=f"UIDVALIDITY {f.uidvalidity} -> {info.uidvalidity}")

    # --- fetching ----------------------------------------------------------------------

    async def _fetch_meta(self, uids: list[int]) -> tuple[list[MessageMeta], int]:
        items = META_ITEMS_MODSEQ if self._modseq else META_ITEMS
        wanted = set(uids)
        metas: dict[int, MessageMeta] = {}
        defects = 0
        for uid_set in split_for_command(uids):
            response = await self.session.uid_fetch(uid_set, items)
            for item in parse_fetch(response.lines):
                if isinstance(item, MessageMeta):
                    if item.uid in wanted:
                        metas[item.uid] = item
                        defects += bool(item.defects)
                elif isinstance(item, FetchDefect):
                    defects += 1
                    log.warning("folder %r: unparseable FETCH response for UID %s: %s",
                                self.folder.name, item.uid, item.reason)
                    if item.uid in wanted and item.uid not in metas:
                        metas[item.uid] = _placeholder(item.uid, item.reason)
        return [metas[u] for u in sorted(metas)], defects

    async def _search(self, criteria: str) -> list[int]:
        response = await self.session.uid_search(criteria)
        return sorted(set(parse_search(response.lines)))

    # --- incremental -------------------------------------------------------------------

    async def _incremental(self) -> AsyncIterator[Step]:
        f = self.folder
        info = self.select_info
        assert info is not None and f.synced_high_uid is not None
        high = f.synced_high_uid
        if info.uidnext is not None and info.uidnext - 1 <= high:
            return
        new = [u for u in await self._search(f"UID {high + 1}:*") if u > high]
        for start in range(0, len(new), self.batch_size):
            batch = new[start:start + self.batch_size]
            metas, defects = await self._fetch_meta(batch)
            cursor = batch[-1]
            async with self.db.transaction() as tx:
                added, changed = await message_store.upsert(tx, f.account_id, f.id, metas, emit_events=True)
                await tx.execute("UPDATE folders SET synced_high_uid = $2 WHERE id = $1", f.id, cursor)
            self.folder = f = replace(f, synced_high_uid=cursor)
            yield Step(f.name, "incremental", added=added, changed=changed, defects=defects, total=info.exists)
        final = max(f.synced_high_uid or 0, (info.uidnext - 1) if info.uidnext else 0)
        if final != f.synced_high_uid:
            await self.db.execute("UPDATE folders SET synced_high_uid = $2 WHERE id = $1", f.id, final)
            self.folder = replace(f, synced_high_uid=final)

    # --- initial, newest first ---------------------------------------------------------

    def _since(self) -> str:
        if not self.retention_days:
            return ""
        day = (self.now() - timedelta(days=self.retention_days)).date()
        return f" SINCE {day.day}-{day.strftime('%b')}-{day.year}"

    async def _initial(self) -> AsyncIterator[Step]:
        f = self.folder
        if f.initial_sync_complete:
            return
        info = self.select_info
        assert info is not None and f.initial_low_uid is not None
        low = f.initial_low_uid
        remaining = await self._search(f"UID 1:{low - 1}{self._since()}") if low > 1 else []
        remaining = [u for u in remaining if u < low]
        while remaining:
            batch = remaining[-self.batch_size:]
            del remaining[-self.batch_size:]
            metas, defects = await self._fetch_meta(batch)
            new_low = batch[0]
            complete = not remaining
            async with self.db.transaction() as tx:
                added, changed = await message_store.upsert(tx, f.account_id, f.id, metas, emit_events=False)
                await tx.execute(
                    """UPDATE folders SET initial_low_uid = $2, initial_sync_complete = $3,
                           message_count = (SELECT count(*) FROM messages WHERE folder_id = $1)
                       WHERE id = $1""",
                    f.id, 1 if complete else new_low, complete)
                synced = await tx.fetchval("SELECT message_count FROM folders WHERE id = $1", f.id)
            self.folder = f = replace(f, initial_low_uid=1 if complete else new_low,
                                      initial_sync_complete=complete)
            yield Step(f.name, "initial", added=added, changed=changed, defects=defects,
                       synced=int(synced), total=info.exists)
        if not f.initial_sync_complete:
            await self.db.execute(
                "UPDATE folders SET initial_low_uid = 1, initial_sync_complete = true WHERE id = $1", f.id)
            self.folder = replace(f, initial_low_uid=1, initial_sync_complete=True)

    # --- reconcile: flags and deletes of the mirrored range ----------------------------

    async def _reconcile(self) -> Step:
        f = self.folder
        assert f.initial_low_uid is not None and f.synced_high_uid is not None
        low, high = f.initial_low_uid, f.synced_high_uid
        if high < low:
            return Step(f.name, "reconcile")
        response = await self.session.uid_fetch(f"{low}:{high}", "(UID FLAGS)")
        server: dict[int, tuple[str, ...]] = {}
        for item in parse_fetch(response.lines):
            if isinstance(item, (FlagUpdate, MessageMeta)) and low <= item.uid <= high:
                server[item.uid] = item.flags
        async with self.db.transaction() as tx:
            mirrored = await message_store.flags_by_uid(tx, f.id)
            gone = [u for u in mirrored if low <= u <= high and u not in server]
            changed_flags = [FlagUpdate(u, flags) for u, flags in server.items()
                             if u in mirrored and tuple(sorted(mirrored[u])) != tuple(sorted(flags))]
            missing = [u for u in server if u not in mirrored]
            removed = await message_store.remove_uids(tx, f.account_id, f.id, gone)
            changed = await message_store.update_flags(tx, f.account_id, f.id, changed_flags)
            await tx.execute("UPDATE folders SET last_reconcile_at = now(), last_flag_scan_at = now() WHERE id = $1",
                             f.id)
        added = 0
        if missing:
            # UIDs inside the mirrored range the mirror lacks (should not happen): heal them
            log.warning("folder %r: %d server UIDs missing from the mirror; fetching them", f.name, len(missing))
            metas, _ = await self._fetch_meta(sorted(missing))
            async with self.db.transaction() as tx:
                added, _ = await message_store.upsert(tx, f.account_id, f.id, metas, emit_events=True)
        return Step(f.name, "reconcile", added=added, changed=changed, removed=removed)

    async def _finish(self) -> Step:
        f = self.folder
        info = self.select_info
        assert info is not None
        synced = await self.db.fetchval(
            """UPDATE folders SET uidnext = $2, highestmodseq = $3, server_message_count = $4,
                   message_count = (SELECT count(*) FROM messages WHERE folder_id = $1),
                   last_synced_at = now()
               WHERE id = $1 RETURNING message_count""",
            f.id, info.uidnext, info.highestmodseq, info.exists)
        return Step(f.name, "done", synced=int(synced or 0), total=info.exists)


def _placeholder(uid: int, reason: str) -> MessageMeta:
    """A row for a message whose FETCH response could not be parsed: the UID is real."""
    return MessageMeta(uid=uid, flags=(), internal_date=None, size_bytes=None, message_id=None,
                       subject=None, from_name=None, from_email=None, to_emails=(), cc_emails=(),
                       sent_at=None, in_reply_to=None, references=(), modseq=None,
                       defects=(f"unparseable FETCH response: {reason}",))


async def folder_gone(exc: ImapCommandError) -> bool:
    """True when a SELECT failure means the mailbox no longer exists."""
    text = str(exc).lower()
    return "nonexistent" in text or "doesn't exist" in text or "does not exist" in text or "not exist" in text

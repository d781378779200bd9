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
import shlex
from array import array
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from itertools import islice
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import trio

from mailbridge.aio.imap import ImapSession
from mailbridge.aio.loop import single_exception
from mailbridge.errors import ImapCommandError
from mailbridge.imap.models import FetchDefect, MessageMeta, SelectInfo
from mailbridge.imap.fetch import parse_fetch
from mailbridge.imap.responses import parse_search, parse_select
from mailbridge.imap.uidset import split_for_command
from mailbridge.store import messages as message_store
from mailbridge.sync.reconcile import reconcile

log = logging.getLogger(__name__)

HEADER_FIELDS = "MESSAGE-ID SUBJECT FROM TO CC DATE IN-REPLY-TO REFERENCES"
META_ITEMS = f"(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS ({HEADER_FIELDS})])"
META_ITEMS_MODSEQ = f"(UID FLAGS INTERNALDATE RFC822.SIZE MODSEQ BODY.PEEK[HEADER.FIELDS ({HEADER_FIELDS})])"
RESET_WINDOW = timedelta(hours=24)
REPAIR_INTERVAL = timedelta(minutes=10)  # least time between refetches of a folder's unreadable rows
PARSE_SLICE = 100  # FETCH responses parsed between checkpoints


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
    last_repair_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Any) -> "Folder":
        data = {k: row[k] for k in cls.__slots__}  # type: ignore[attr-defined]
        data["uidvalidity_resets"] = tuple(data["uidvalidity_resets"] or ())
        return cls(**data)


def resume_command(account_id: int, folder_name: str) -> str:
    """The command that un-parks a folder (its name quoted for a POSIX shell)."""
    return f"mailbridge accounts reset {account_id} --folder {shlex.quote(folder_name)}"


def parked_problem(account_id: int, folder_name: str) -> str:
    """What an account's health says about a parked folder, and how to resume it."""
    return (f"folder {folder_name!r} is parked after repeated UIDVALIDITY resets; "
            f"`{resume_command(account_id, folder_name)}` resumes it")


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
    phase: str  # select, reset, incremental, initial, repair, reconcile, parked, done
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
                 retention_days: int | None = None, reset_limit: int = 3, flag_scan: bool = True,
                 full_reconcile: bool = False, now=lambda: datetime.now(timezone.utc)) -> None:
        self.db = db
        self.session = session
        self.folder = folder
        self.batch_size = batch_size
        self.retention_days = retention_days
        self.reset_limit = reset_limit
        self.flag_scan = flag_scan
        self.full_reconcile = full_reconcile
        self.now = now
        self.select_info: SelectInfo | None = None
        # HIGHESTMODSEQ stored by the last visit: CHANGEDSINCE starts there (None after a reset)
        self.prev_modseq: int | None = folder.highestmodseq if folder.initial_top_uid is not None else None

    @property
    def _modseq(self) -> bool:
        return self.session.condstore

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
        step = await self._repair()
        if step is not None:
            yield step
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
        # what the initial sync fetches is at least as new as this SELECT: changes after
        # it have a higher modseq, so CHANGEDSINCE it misses nothing
        self.prev_modseq = info.highestmodseq

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
                f"`{resume_command(f.account_id, f.name)}` resumes it")
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
        self.prev_modseq = info.highestmodseq  # as after a first SELECT
        return Step(f.name, "parked" if park else "reset", removed=removed, total=info.exists,
                    detail=f"UIDVALIDITY {f.uidvalidity} -> {info.uidvalidity}")

    # --- fetching ----------------------------------------------------------------------

    async def _fetch_raw(self, uids: list[int]) -> list[Any]:
        """The unparsed metadata FETCH responses (one `lines` per command) of `uids`."""
        items = META_ITEMS_MODSEQ if self._modseq else META_ITEMS
        responses = []
        for uid_set in split_for_command(uids):
            response = await self.session.uid_fetch(uid_set, items)
            responses.append(response.lines)
            del response
        return responses

    async def _parse_meta(self, uids: list[int], responses: list[Any]) -> tuple[list[MessageMeta], int]:
        """The messages of `uids` in `responses` (emptied as it goes), ascending, and the
        number of defects.  It yields to other tasks every PARSE_SLICE messages, so a
        concurrent fetch and database write (see `_pipeline`) make progress."""
        wanted = set(uids)
        metas: dict[int, MessageMeta] = {}
        defects = 0
        responses.reverse()
        while responses:
            lines = responses.pop()
            n = 0
            for item in parse_fetch(lines):
                n += 1
                if n % PARSE_SLICE == 0:
                    await trio.sleep(0)
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
            del lines
        return [metas[u] for u in sorted(metas)], defects

    async def _fetch_meta(self, uids: list[int]) -> tuple[list[MessageMeta], int]:
        return await self._parse_meta(uids, await self._fetch_raw(uids))

    async def _pipeline(self, batches: Iterator[list[int]],
                        write: Callable[[list[int], list[MessageMeta], bool], Awaitable[Any]],
                        ) -> AsyncIterator[tuple[list[int], int, Any]]:
        """Fetch, parse and write `batches` in order, overlapped: while batch k is written,
        k+1 is parsed and k+2 fetched (the server prepares its response while we parse).

        `write(batch, metas, last)` writes one batch and its cursor in one transaction
        (one statement: see `message_store.upsert`'s folder_set); this yields (batch,
        defects, write's result) after each commit, outside any concurrent work, so a
        cursor never covers rows that are not committed and the session is idle at every
        yield.  At most three batches are held at a time.  A failed fetch does not drop
        what was fetched before it: those batches are parsed and written first, and the
        error is raised after the last of them has been yielded.  A failed write is
        raised at once (the fetch and parse it overlapped are cancelled).
        """
        fetch_next = next(batches, None)     # the batch to fetch next
        fetched: tuple[list[int], list[Any]] | None = None                 # to parse
        parsed: tuple[list[int], list[MessageMeta], int] | None = None     # to write
        failure: BaseException | None = None  # of a fetch: raised once the batches before it are written
        while fetch_next is not None or fetched is not None or parsed is not None:
            got_raw: list[Any] = []
            got_metas: list[Any] = []
            got_result: list[Any] = []

            async def fetch(uids: list[int]) -> None:
                try:
                    got_raw.append(await self._fetch_raw(uids))
                except Exception as exc:  # noqa: BLE001 - raised after the earlier batches are written
                    got_raw.append(exc)

            async def parse(uids: list[int], responses: list[Any]) -> None:
                got_metas.append(await self._parse_meta(uids, responses))

            async def store(uids: list[int], metas: list[MessageMeta], last: bool) -> None:
                got_result.append(await write(uids, metas, last))

            try:
                async with trio.open_nursery() as nursery:
                    if fetch_next is not None:
                        nursery.start_soon(fetch, fetch_next)
                    if parsed is not None:
                        last = fetch_next is None and fetched is None and failure is None
                        nursery.start_soon(store, parsed[0], parsed[1], last)
                    if fetched is not None:
                        nursery.start_soon(parse, *fetched)
            except BaseExceptionGroup as group:  # the write's own error, not a group of one
                leaf = single_exception(group)
                if leaf is group:
                    raise
                raise leaf from None
            written, parsed = parsed, None
            if fetched is not None:
                parsed = (fetched[0], *got_metas[0])
                fetched = None
            if fetch_next is not None:
                if isinstance(got_raw[0], BaseException):
                    failure = got_raw[0]
                    fetch_next = None
                else:
                    fetched = (fetch_next, got_raw[0])
                    fetch_next = next(batches, None)
            del got_raw, got_metas
            if written is not None:
                yield written[0], written[2], got_result[0]
                del written
        if failure is not None:
            raise failure

    async def _search(self, criteria: str) -> list[int]:
        response = await self.session.uid_search(criteria)
        uids = parse_search(response.lines)
        if all(a < b for a, b in zip(uids, islice(uids, 1, None))):
            return uids  # already ascending and unique (as servers send them)
        return sorted(set(uids))

    # --- incremental -------------------------------------------------------------------

    async def _incremental(self) -> AsyncIterator[Step]:
        f = self.folder
        info = self.select_info
        assert info is not None and f.synced_high_uid is not None
        high = f.synced_high_uid
        if info.uidnext is not None and info.uidnext - 1 <= high:
            return
        new = [u for u in await self._search(f"UID {high + 1}:*") if u > high]
        batch_size = self.batch_size

        async def write(batch: list[int], metas: list[MessageMeta], last: bool) -> tuple[int, int]:
            cursor = batch[-1]
            added, changed = await message_store.upsert(
                self.db, f.account_id, f.id, metas, emit_events=True,
                folder_set="synced_high_uid = {}", folder_args=(cursor,))
            self.folder = replace(self.folder, synced_high_uid=cursor)
            return added, changed

        batches = (new[start:start + batch_size] for start in range(0, len(new), batch_size))
        async for _batch, defects, (added, changed) in self._pipeline(batches, write):
            f = self.folder
            yield Step(f.name, "incremental", added=added, changed=changed, defects=defects, total=info.exists)
        f = self.folder
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
        # the UIDs still to fetch, compactly (8 bytes each: no int objects for big folders)
        remaining = array("q", [u for u in remaining if u < low] if remaining and remaining[-1] >= low else remaining)
        if remaining:
            # message_count is kept exact by adding each batch's inserts to one count
            # taken here (instead of count(*) per batch, which is quadratic in the folder)
            await self.db.execute(
                "UPDATE folders SET message_count = (SELECT count(*) FROM messages WHERE folder_id = $1) "
                "WHERE id = $1", f.id)
        batch_size = self.batch_size

        def batches() -> Iterator[list[int]]:
            while remaining:
                batch = remaining[-batch_size:].tolist()
                del remaining[-batch_size:]
                yield batch

        async def write(batch: list[int], metas: list[MessageMeta], last: bool) -> tuple[int, int, int]:
            new_low = 1 if last else batch[0]
            added, changed, synced = await message_store.upsert(  # type: ignore[misc]
                self.db, f.account_id, f.id, metas, emit_events=False,
                folder_set="initial_low_uid = {}, initial_sync_complete = {}, "
                           "message_count = message_count + {added}",
                folder_args=(new_low, last), returning="message_count")
            self.folder = replace(self.folder, initial_low_uid=new_low, initial_sync_complete=last)
            return added, changed, int(synced)

        async for _batch, defects, (added, changed, synced) in self._pipeline(batches(), write):
            yield Step(f.name, "initial", added=added, changed=changed, defects=defects,
                       synced=synced, total=info.exists)
        f = self.folder
        if not f.initial_sync_complete:
            await self.db.execute(
                "UPDATE folders SET initial_low_uid = 1, initial_sync_complete = true WHERE id = $1", f.id)
            self.folder = replace(f, initial_low_uid=1, initial_sync_complete=True)

    # --- reconcile: flags and deletes of the mirrored range ----------------------------

    async def _repair(self) -> Step | None:
        """Fetch again the rows stored as placeholders (their FETCH response could not be
        read), at most once per REPAIR_INTERVAL, and overwrite those that now parse.

        The rows are rewritten by UID under the same UIDVALIDITY; no cursor moves."""
        f = self.folder
        now = self.now()
        if f.last_repair_at is not None and now - f.last_repair_at < REPAIR_INTERVAL:
            return None
        uids = [r["uid"] for r in await self.db.fetch(
            "SELECT uid FROM messages WHERE folder_id = $1 AND size_bytes IS NULL ORDER BY uid LIMIT $2",
            f.id, self.batch_size)]
        if not uids:
            return None
        metas, _defects = await self._fetch_meta(uids)  # counted when first stored
        readable = [m for m in metas if m.size_bytes is not None]
        added, changed = await message_store.upsert(
            self.db, f.account_id, f.id, readable, emit_events=True,
            folder_set="last_repair_at = {}, message_count = message_count + {added}", folder_args=(now,))
        self.folder = replace(self.folder, last_repair_at=now)
        log.info("folder %r: %d of %d unreadable row(s) read again", f.name, len(readable), len(uids))
        return Step(f.name, "repair", added=added, changed=changed,
                    detail=f"{len(readable)} of {len(uids)} unreadable row(s) read again")

    async def _reconcile(self) -> Step:
        """Flags and deletes of the mirrored range (see `mailbridge.sync.reconcile`)."""
        outcome = await reconcile(self, prev_modseq=self.prev_modseq, flag_scan=self.flag_scan,
                                  full=self.full_reconcile)
        return Step(self.folder.name, "reconcile", added=outcome.added, changed=outcome.changed,
                    removed=outcome.removed)

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

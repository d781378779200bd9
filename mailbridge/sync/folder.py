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
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from operator import attrgetter
from typing import AsyncIterator, Awaitable, Callable, Iterator, TypeVar

import trio

from mailbridge.aio.imap import ImapSession
from mailbridge.errors import root_cause
from mailbridge.imap.models import MessageMeta, SelectInfo
from mailbridge.imap.responses import parse_search, parse_select
from mailbridge.store import events as event_store
from mailbridge.store import folders as folder_store
from mailbridge.store import messages as message_store
from mailbridge.store import moves as move_store
from mailbridge.store.db import Db
from mailbridge.store.folders import Folder, load_folder, load_folders
from mailbridge.store.messages import EncodedRows, FolderUpdate, encode_rows, search_documents
from mailbridge.sync.fetching import META_ITEMS, META_ITEMS_MODSEQ, PARSE_SLICE, FolderReader, RawFetch
from mailbridge.sync.reconcile import reconcile
from mailbridge.sync.salvage import write_batch

log = logging.getLogger(__name__)

MAX_UIDS_PER_FETCH = 10_000  # UIDs one initial-sync FETCH command may cover (one batch at least)
RESET_WINDOW = timedelta(hours=24)
REPAIR_INTERVAL = timedelta(minutes=10)  # least time between refetches of a folder's unreadable rows
Written = TypeVar("Written")
Prepared = TypeVar("Prepared")
_uid = attrgetter("uid")


def resume_command(account_id: int, folder_name: str) -> str:
    """The command that un-parks a folder (its name quoted for a POSIX shell)."""
    return f"mailbridge accounts reset {account_id} --folder {shlex.quote(folder_name)}"


def parked_problem(account_id: int, folder_name: str) -> str:
    """What an account's health says about a parked folder, and how to resume it."""
    return (f"folder {folder_name!r} is parked after repeated UIDVALIDITY resets; "
            f"`{resume_command(account_id, folder_name)}` resumes it")


def batches_per_fetch(uids: int, batch_size: int, fetch_budget: int | None) -> int:
    """How many write batches of `batch_size` one initial-sync FETCH command covers, for a
    folder with `uids` still to fetch: 1, or as many more as keep the FETCH commands
    within `fetch_budget` (the throttle's burst; its refill pays for the other commands),
    so a big folder's first sync does not wait on the throttle; never more than
    MAX_UIDS_PER_FETCH UIDs' worth (nor fewer than one batch).  A command's size costs
    the server nothing more than the same messages in smaller commands; what one holds in
    memory (its responses, parsed) is bounded by the cap whatever the folder's size."""
    if not fetch_budget or uids <= batch_size * fetch_budget:
        return 1
    batches = -(-uids // batch_size)
    return max(1, min(MAX_UIDS_PER_FETCH // batch_size, -(-batches // fetch_budget)))


async def encoded(metas: list[MessageMeta]) -> EncodedRows:
    """`encode_rows` of `metas`, their search documents built PARSE_SLICE rows at a time
    between checkpoints (as parsing goes), so the fetch and write beside it keep moving."""
    documents: list[str | None] = []
    for start in range(0, len(metas), PARSE_SLICE):
        documents += search_documents(metas[start:start + PARSE_SLICE])
        await trio.sleep(0)
    return encode_rows(metas, documents)


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

    def __init__(self, db: Db, session: ImapSession, folder: Folder, *, batch_size: int,
                 retention_days: int | None = None, reset_limit: int = 3, flag_scan: bool = True,
                 full_reconcile: bool = False, move_window: float | None = None,
                 fetch_budget: int | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.db = db
        self.session = session
        self.folder = folder
        self.batch_size = batch_size
        self.retention_days = retention_days
        self.reset_limit = reset_limit
        self.flag_scan = flag_scan
        self.full_reconcile = full_reconcile
        self.move_window = move_window  # seconds held move sides wait (None: not flushed here)
        self.fetch_budget = fetch_budget  # FETCH commands an initial sync aims to take (None: one per batch)
        self.now = now
        self.reader = FolderReader(session, folder.name, retention_days=retention_days, now=now)
        self.select_info: SelectInfo | None = None
        # HIGHESTMODSEQ stored by the last visit: CHANGEDSINCE starts there (None after a reset)
        self.prev_modseq: int | None = folder.highestmodseq if folder.initial_top_uid is not None else None

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
        repaired = await self._repair()
        if repaired is not None:
            yield repaired
        yield await self._reconcile()
        yield await self._finish()

    # --- select and UIDVALIDITY --------------------------------------------------------

    async def _select(self) -> Step:
        response = await self.session.select(self.folder.raw_name, condstore=True)
        info = parse_select(response.lines_and_text)
        self.select_info = info
        f = self.folder
        if f.uidvalidity is None or (info.uidvalidity is not None and info.uidvalidity != f.uidvalidity):
            # where the sync starts: a steady visit needs no top (Courier's SELECT has no UIDNEXT)
            top = (info.uidnext - 1) if info.uidnext else await self._max_uid()
            if f.uidvalidity is None:
                await self._init_cursors(info, top)
                return Step(f.name, "select", total=info.exists, detail="first sync")
            return await self._reset(info, top)
        return Step(f.name, "select", total=info.exists)

    async def _max_uid(self) -> int:
        response = await self.session.uid_search("ALL")
        uids = parse_search(response.lines)
        return max(uids, default=0)

    async def _init_cursors(self, info: SelectInfo, top: int) -> None:
        async with self.db.transaction() as tx:
            await folder_store.start_cursors(tx, self.folder.id, info, top)
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
        reason = (f"UIDVALIDITY changed {len(recent)} times in 24 h (limit {self.reset_limit}); "
                  f"`{resume_command(f.account_id, f.name)}` resumes it") if park else None
        async with self.db.transaction() as tx:
            removed = await message_store.remove_all(tx, f.id)
            await folder_store.restart_cursors(tx, f.id, info, top, resets=recent, parked_reason=reason)
            await event_store.folder_reset(tx, f.account_id, f.id, folder=f.name, old_uidvalidity=f.uidvalidity,
                                           new_uidvalidity=info.uidvalidity, removed=removed, parked=park)
        log.warning("folder %r: UIDVALIDITY %s -> %s; %d rows dropped, re-syncing%s", f.name,
                    f.uidvalidity, info.uidvalidity, removed, " (parked)" if park else "")
        self.folder = replace(f, uidvalidity=info.uidvalidity, uidnext=info.uidnext,
                              highestmodseq=info.highestmodseq, initial_top_uid=top, initial_low_uid=top + 1,
                              synced_high_uid=top, initial_sync_complete=False, parked=park,
                              parked_reason=reason, uidvalidity_resets=recent)
        self.prev_modseq = info.highestmodseq  # as after a first SELECT
        return Step(f.name, "parked" if park else "reset", removed=removed, total=info.exists,
                    detail=f"UIDVALIDITY {f.uidvalidity} -> {info.uidvalidity}")

    # --- fetching (through `self.reader`) ----------------------------------------------

    async def _pipeline(self, batches: Iterator[list[int]],
                        prepare: Callable[[list[int], list[MessageMeta]], Awaitable[Prepared]],
                        write: Callable[[list[int], Prepared, bool], Awaitable[Written]],
                        ) -> AsyncIterator[tuple[list[int], int, Written]]:
        """Fetch, parse and write `batches` in order, overlapped: while batch k is written,
        k+1 is parsed and prepared for its write and k+2 fetched (the server prepares its
        response while we parse; the database writes while we parse and encode).

        `prepare(batch, metas)` turns the parsed messages into what `write` takes (the
        statements' parameters: `message_store.encode_rows`), so the write of the next
        batch starts the moment this one commits.
        `write(batch, prepared, last)` writes one batch and its cursor in one transaction
        (one statement: see `message_store.upsert`'s FolderUpdate); this yields (batch,
        defects, write's result) after each commit, outside any concurrent work, so a
        cursor never covers rows that are not committed and the session is idle at every
        yield.  At most three batches are held at a time.  A failed fetch does not drop
        what was fetched before it: those batches are parsed and written first, and the
        error is raised after the last of them has been yielded.  A failed write is
        raised at once (the fetch and parse it overlapped are cancelled).
        """
        fetch_next = next(batches, None)     # the batch to fetch next
        fetched: tuple[list[int], list[RawFetch]] | None = None            # to parse
        parsed: tuple[list[int], Prepared, int] | None = None     # to write
        failure: BaseException | None = None  # of a fetch: raised once the batches before it are written
        while fetch_next is not None or fetched is not None or parsed is not None:
            got_raw: list[list[RawFetch] | Exception] = []
            got_metas: list[tuple[Prepared, int]] = []
            got_result: list[Written] = []

            async def fetch(uids: list[int]) -> None:
                try:
                    got_raw.append(await self.reader.fetch_raw(uids))
                except Exception as exc:  # noqa: BLE001 - raised after the earlier batches are written
                    got_raw.append(exc)

            async def parse(uids: list[int], responses: list[RawFetch]) -> None:
                metas, defects = await self.reader.parse_meta(uids, responses)
                got_metas.append((await prepare(uids, metas), defects))

            async def store(uids: list[int], prepared: Prepared, last: bool) -> None:
                got_result.append(await write(uids, prepared, last))

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
                leaf = root_cause(group)
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

    # --- incremental -------------------------------------------------------------------

    async def _incremental(self) -> AsyncIterator[Step]:
        f = self.folder
        info = self.select_info
        assert info is not None and f.synced_high_uid is not None
        high = f.synced_high_uid
        if info.uidnext is not None and info.uidnext - 1 <= high:
            return
        new = [u for u in await self.reader.search(f"UID {high + 1}:*") if u > high]
        batch_size = self.batch_size

        async def prepare(_batch: list[int], metas: list[MessageMeta]) -> EncodedRows:
            return await encoded(metas)

        async def write(batch: list[int], rows: EncodedRows, last: bool) -> tuple[int, int, int]:
            cursor = batch[-1]
            done = await write_batch(self.db, f.account_id, f.id, rows, emit_events=True,
                                     folder=FolderUpdate(synced_high_uid=cursor))
            self.folder = replace(self.folder, synced_high_uid=cursor)
            return done.written.added, done.written.changed, len(done.unstorable)

        batches = (new[start:start + batch_size] for start in range(0, len(new), batch_size))
        async for _batch, defects, (added, changed, unstorable) in self._pipeline(batches, prepare, write):
            f = self.folder
            yield Step(f.name, "incremental", added=added, changed=changed, defects=defects + unstorable,
                       total=info.exists)
        f = self.folder
        final = max(f.synced_high_uid or 0, (info.uidnext - 1) if info.uidnext else 0)
        if final != f.synced_high_uid:
            await folder_store.set_synced_high_uid(self.db, f.id, final)
            self.folder = replace(f, synced_high_uid=final)

    # --- initial, newest first ---------------------------------------------------------

    async def _initial(self) -> AsyncIterator[Step]:
        f = self.folder
        if f.initial_sync_complete:
            return
        info = self.select_info
        assert info is not None and f.initial_low_uid is not None
        low = f.initial_low_uid
        found = await self.reader.search(f"UID 1:{low - 1}{self.reader.retention_criterion()}") if low > 1 else []
        # the UIDs still to fetch, compactly (8 bytes each: no int objects for big folders)
        remaining = array("q", [u for u in found if u < low] if found and found[-1] >= low else found)
        del found
        if remaining:
            # message_count is kept exact by adding each batch's inserts to one count
            # taken here (instead of count(*) per batch, which is quadratic in the folder)
            await folder_store.recount_messages(self.db, f.id)
        batch_size = self.batch_size
        # one FETCH covers `per_fetch` write batches where one each would wait on the throttle
        per_fetch = batches_per_fetch(len(remaining), batch_size, self.fetch_budget) * batch_size

        def batches() -> Iterator[list[int]]:
            while remaining:
                batch = remaining[-per_fetch:].tolist()
                del remaining[-per_fetch:]
                yield batch

        async def prepare(fetched: list[int], metas: list[MessageMeta]) -> list[tuple[list[int], EncodedRows]]:
            """The write batches of `fetched` (ascending UIDs), newest first, each with its
            rows encoded: (its UIDs, its rows)."""
            prepared = []
            for end in range(len(fetched), 0, -batch_size):
                batch = fetched[max(0, end - batch_size):end]
                rows = metas[bisect_left(metas, batch[0], key=_uid):bisect_right(metas, batch[-1], key=_uid)]
                prepared.append((batch, await encoded(rows)))
                await trio.sleep(0)
            return prepared

        async def write(_fetched: list[int], prepared: list[tuple[list[int], EncodedRows]],
                        last: bool) -> tuple[int, int, int, int]:
            """Write `prepare`'s batches in order, each with its cursor in its own
            statement: a cancellation between them leaves the cursor at the last one
            committed."""
            added = changed = synced = unstorable = 0
            for i, (batch, rows) in enumerate(prepared):
                final = last and i == len(prepared) - 1
                new_low = 1 if final else batch[0]
                done = await write_batch(
                    self.db, f.account_id, f.id, rows, emit_events=False,
                    folder=FolderUpdate(initial_low_uid=new_low, initial_sync_complete=final, count_added=True))
                self.folder = replace(self.folder, initial_low_uid=new_low, initial_sync_complete=final)
                written = done.written
                added += written.added
                changed += written.changed
                synced = int(written.message_count or 0)
                unstorable += len(done.unstorable)
            return added, changed, synced, unstorable

        async for _batch, defects, (added, changed, synced, unstorable) in self._pipeline(batches(), prepare, write):
            yield Step(f.name, "initial", added=added, changed=changed, defects=defects + unstorable,
                       synced=synced, total=info.exists)
        f = self.folder
        if not f.initial_sync_complete:
            await folder_store.complete_initial(self.db, f.id)
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
        uids = await message_store.unreadable_uids(self.db, f.id, self.batch_size)
        if not uids:
            return None
        metas, _defects = await self.reader.fetch_meta(uids)  # counted when first stored
        readable = [m for m in metas if m.size_bytes is not None]
        done = await write_batch(self.db, f.account_id, f.id, readable, emit_events=True,
                                 folder=FolderUpdate(last_repair_at=now, count_added=True))
        self.folder = replace(self.folder, last_repair_at=now)
        repaired = len(readable) - len(done.unstorable)  # the others stay placeholders
        log.info("folder %r: %d of %d unreadable row(s) read again", f.name, repaired, len(uids))
        return Step(f.name, "repair", added=done.written.added, changed=done.written.changed,
                    defects=len(done.unstorable),
                    detail=f"{repaired} of {len(uids)} unreadable row(s) read again")

    async def _reconcile(self) -> Step:
        """Flags and deletes of the mirrored range (see `mailbridge.sync.reconcile`)."""
        assert self.select_info is not None
        outcome = await reconcile(self.db, self.reader, self.folder, self.select_info,
                                  prev_modseq=self.prev_modseq, flag_scan=self.flag_scan, full=self.full_reconcile)
        return Step(self.folder.name, "reconcile", added=outcome.added, changed=outcome.changed,
                    removed=outcome.removed)

    async def _finish(self) -> Step:
        f = self.folder
        info = self.select_info
        assert info is not None
        synced = await folder_store.finish_visit(self.db, f.id, info)
        if self.move_window is not None:
            # what waited longer for the other side of a move is a plain remove or add
            await move_store.flush_due(self.db, f.account_id, self.move_window)
        return Step(f.name, "done", synced=synced, total=info.exists)


__all__ = ["META_ITEMS", "META_ITEMS_MODSEQ", "REPAIR_INTERVAL", "Folder", "FolderParked",
           "FolderSync", "Step", "load_folder", "load_folders", "parked_problem", "resume_command"]

"""`mailbridge verify ID`: the mirror compared with the server.

An admin diagnostic.  It opens its own IMAP connection and only ever EXAMINEs (read-only),
so it may run while `serve` owns the account (the one sanctioned second connection); it
takes no advisory lock and never writes to the database (every mirror read runs in a
READ ONLY transaction).

Per folder of the mirror that is not excluded or parked (nor a Gmail label view: the
mirrored folders only, see `mailbridge.sync.discover`):

- UIDVALIDITY on the server differs from the stored one → drift (UIDs not compared);
- the folder's UIDs are walked in UID ranges sized for about `CHUNK` messages each
  (memory stays bounded): ``UID SEARCH UID a:b`` gives the server's UIDs,
  ``UID FETCH a:b (UID FLAGS)`` their flags, and only then the mirror's rows of that range
  are read (so a row `serve` writes meanwhile is seen, not reported);
- a server UID inside the mirrored range (the cursors: ``[initial_low_uid, synced_high_uid]``,
  see `mailbridge.sync.folder`) that the mirror lacks is *missing*; one above
  ``synced_high_uid`` is *pending* (new mail the next cycle fetches: not drift, a note); one
  below ``initial_low_uid`` while the initial sync runs is *not mirrored yet* (a note);
- a mirror row whose UID the server does not have is *extra*;
- flags are compared as sets, ``\\Recent`` ignored.

A mirrored folder the server no longer lists, and a selectable server folder that discovery
would include but the mirror lacks, are drift too.  Drift is reported only if a second look,
`RECHECK_DELAY` seconds later, sees it again (restricted to the suspect folders and UIDs):
`serve` may be writing while verify reads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Awaitable, Callable, Concatenate, Iterable, ParamSpec, Sequence, TypeVar

import trio

from mailbridge.aio.imap import ImapSession
from mailbridge.config import Settings
from mailbridge.errors import ImapCommandError
from mailbridge.imap.models import FlagUpdate, MessageMeta
from mailbridge.imap.fetch import parse_fetch
from mailbridge.imap.responses import parse_list, parse_search, parse_select
from mailbridge.imap.uidset import chunk_uids, compress_uids
from mailbridge.store import folders as folder_store
from mailbridge.store import messages as message_store
from mailbridge.store.accounts import Account
from mailbridge.store.db import Db, Tx, read_only
from mailbridge.store.folders import Folder
from mailbridge.sync.discover import FolderPlan, plan_folders
from mailbridge.sync.fetching import since_criterion

log = logging.getLogger(__name__)

CHUNK = 10_000  # messages per UID range read from the server and the mirror
RECHECK_DELAY = 2.0  # seconds before drift is looked at a second time
SHOW = 20  # UIDs shown per kind of drift

P = ParamSpec("P")
T = TypeVar("T")


# --- the report ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FolderDrift:
    """What differs between the mirror and the server in one folder."""

    folder: str
    missing_uids: tuple[int, ...] = ()  # on the server (inside the mirrored range), not in the mirror
    extra_uids: tuple[int, ...] = ()  # in the mirror, not on the server
    flag_mismatches: tuple[tuple[int, tuple[str, ...], tuple[str, ...]], ...] = ()  # uid, mirror, server
    uidvalidity_mismatch: tuple[int | None, int | None] | None = None  # (mirror, server)
    note: str = ""  # folder-level drift (gone from the server, not in the mirror), pending counts


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of one `verify`: drift per folder, and what was not compared."""

    account_id: int
    folders_checked: int
    drift: tuple[FolderDrift, ...]
    skipped: tuple[tuple[str, str], ...]  # (folder, reason)
    email: str = ""
    checked: tuple[str, ...] = ()  # names of the folders compared, in display order
    notes: tuple[tuple[str, str], ...] = ()  # (folder, note) for folders without drift

    @property
    def clean(self) -> bool:
        return not self.drift


# --- one look at one folder ------------------------------------------------------------


@dataclass
class _Look:
    """What one look at one folder found (mutable while it is filled)."""

    folder: str
    missing: set[int] = field(default_factory=set)
    extra: set[int] = field(default_factory=set)
    flags: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)
    uidvalidity: tuple[int | None, int | None] | None = None
    structural: str = ""  # folder-level drift: gone from the server, not in the mirror
    skipped: str = ""  # not compared, and why
    stored_uidvalidity: int | None = None
    pending: int = 0
    not_yet: int = 0  # below initial_low_uid while the initial sync runs
    outside_retention: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def is_drift(self) -> bool:
        return bool(self.missing or self.extra or self.flags or self.uidvalidity or self.structural)

    def suspects(self) -> list[int]:
        return sorted(self.missing | self.extra | set(self.flags))

    def note_text(self) -> str:
        parts = []
        if self.structural:
            parts.append(self.structural)
        if self.pending:
            parts.append(f"{self.pending} new message(s) pending above the mirrored range, "
                         "not drift: the next sync fetches them")
        if self.not_yet:
            parts.append(f"initial sync in progress: {self.not_yet} older message(s) not mirrored yet")
        if self.outside_retention:
            parts.append(f"{self.outside_retention} message(s) older than MAILBRIDGE_RETENTION_DAYS not mirrored")
        parts.extend(self.notes)
        return "; ".join(parts)


def _clean_flags(flags: Iterable[str]) -> frozenset[str]:
    return frozenset(f for f in flags if f.lower() != "\\recent")


class _Verifier:
    """Looks at an account's folders, on the server and in the mirror."""

    def __init__(self, db: Db, session: ImapSession, settings: Settings, account: Account) -> None:
        self.db = db
        self.session = session
        self.settings = settings
        self.account = account

    # --- database reads, all read-only ---------------------------------------------------

    async def _read(self, query: Callable[Concatenate[Tx, P], Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """`query` (a store read) in a READ ONLY transaction of its own."""
        async with read_only(self.db) as tx:
            return await query(tx, *args, **kwargs)

    # --- server reads ---------------------------------------------------------------------

    async def _server_folders(self) -> dict[str, FolderPlan]:
        response = await self.session.list("", "*")
        plans = plan_folders(parse_list(response.lines), self.account.excluded_folders,
                             gmail=self.session.has("X-GM-EXT-1"))
        return {p.name: p for p in plans}

    def _since(self) -> str:
        return since_criterion(self.settings.retention_days, datetime.now(timezone.utc))

    async def _server_chunk(self, uid_set: str, lo: int, hi: int
                            ) -> tuple[set[int], dict[int, frozenset[str]], set[int] | None]:
        """(UIDs, flags by UID, UIDs inside the retention window or None) of `uid_set`."""
        uids = {u for u in parse_search((await self.session.uid_search(f"UID {uid_set}")).lines)
                if lo <= u <= hi}
        flags: dict[int, frozenset[str]] = {}
        if uids:
            response = await self.session.uid_fetch(uid_set, "(UID FLAGS)")
            for item in parse_fetch(response.lines):
                if isinstance(item, (FlagUpdate, MessageMeta)) and item.uid in uids:
                    flags[item.uid] = _clean_flags(item.flags)
        recent: set[int] | None = None
        since = self._since()
        if since and uids:
            recent = set(parse_search((await self.session.uid_search(f"UID {uid_set}{since}")).lines))
        return uids, flags, recent

    # --- one folder -----------------------------------------------------------------------

    async def look(self, row: Folder, plan: FolderPlan, only: Sequence[int] | None = None,
                   expect_uidvalidity: int | None = None) -> _Look:
        """Compare one folder (all of it, or only the UIDs `only`)."""
        look = _Look(row.name)
        if row.gmail_view is not None:
            look.skipped = "a Gmail label view (its messages are mirrored from All Mail)"
            return look
        if row.excluded:
            look.skipped = "excluded"
            return look
        if row.parked:
            look.skipped = f"parked ({row.parked_reason or 'repeated UIDVALIDITY resets'})"
            return look
        if row.uidvalidity is None or row.synced_high_uid is None or row.initial_low_uid is None:
            look.skipped = "not synced yet"
            return look
        look.stored_uidvalidity = row.uidvalidity
        if expect_uidvalidity is not None and row.uidvalidity != expect_uidvalidity:
            # the mirror re-synced the folder meanwhile: what the first look saw is moot
            look.notes.append("the mirror reset this folder during the check")
            return look
        try:
            response = await self.session.select(plan.raw_name, readonly=True)
        except ImapCommandError as exc:
            if exc.command in ("EXAMINE", "SELECT"):
                look.structural = f"listed by the server but cannot be examined ({exc})"
                return look
            raise
        info = parse_select(response.lines_and_text)
        if info.uidvalidity is not None and info.uidvalidity != row.uidvalidity:
            look.uidvalidity = (row.uidvalidity, info.uidvalidity)
            look.notes.append("UIDs not compared")
            return look

        low = int(row.initial_low_uid)
        high = int(row.synced_high_uid)
        if only is not None:
            # 500 UIDs make at most 500 × 11 characters: one command line
            for group in chunk_uids(sorted(only), 500):
                await self._compare(look, row.id, compress_uids(group), group[0], group[-1], low, high,
                                    restrict=group)
            return look

        mirror_top = await self._read(message_store.max_uid, row.id) or 0
        if info.uidnext:
            server_top = info.uidnext - 1
        else:
            server_top = max(parse_search((await self.session.uid_search("ALL")).lines), default=0)
        top = max(server_top, int(mirror_top), high)
        if top < 1:
            return look
        width = max(CHUNK, -(-CHUNK * top // max(info.exists, 1)))
        lo = 1
        while lo <= top:
            hi = min(top, lo + width - 1)
            seen = await self._compare(look, row.id, f"{lo}:{hi}", lo, hi, low, high)
            lo = hi + 1
            # keep about CHUNK messages per range however the UIDs are spread
            if seen > 2 * CHUNK and width > 1:
                width = max(1, width // 2)
            elif seen < CHUNK // 2:
                width *= 2
        return look

    async def _compare(self, look: _Look, folder_id: int, uid_set: str, lo: int, hi: int,
                       low: int, high: int, restrict: Sequence[int] | None = None) -> int:
        """Compare the UIDs `uid_set` (within lo..hi): the server first, then the mirror."""
        server, server_flags, recent = await self._server_chunk(uid_set, lo, hi)
        if restrict is None:
            rows = await self._read(message_store.flags_between, folder_id, lo, hi)
        else:
            rows = await self._read(message_store.flags_of, folder_id, restrict)
            wanted = set(restrict)
            server &= wanted
        mirror = {uid: _clean_flags(flags) for uid, flags in rows.items()}
        for uid in server:
            if uid in mirror:
                theirs = server_flags.get(uid)
                if theirs is not None and theirs != mirror[uid]:
                    look.flags[uid] = (tuple(sorted(mirror[uid])), tuple(sorted(theirs)))
            elif uid > high:
                look.pending += 1
            elif uid < low:
                look.not_yet += 1
            elif recent is not None and uid not in recent:
                look.outside_retention += 1
            else:
                look.missing.add(uid)
        for uid in mirror:
            if uid not in server:
                look.extra.add(uid)
        return len(server) + len(mirror)

    # --- the whole account ----------------------------------------------------------------

    async def look_all(self, only: dict[str, _Look] | None = None) -> tuple[list[str], dict[str, _Look]]:
        """One look at every folder (or only at the folders, and UIDs, of `only`).

        Returns the folder names in display order and a look per name.
        """
        server = await self._server_folders()
        mirror = await self._read(folder_store.load_folders, self.account.id)
        order: list[str] = []
        looks: dict[str, _Look] = {}
        mirrored_names = set()
        for row in mirror:
            name = row.name
            mirrored_names.add(name)
            if only is not None and name not in only:
                continue
            order.append(name)
            plan = server.get(name)
            if plan is None and not row.excluded:
                count = await self._read(message_store.count_in_folder, row.id)
                looks[name] = _Look(name, structural=f"gone from the server; the mirror still has it "
                                                     f"({count} message(s))")
                continue
            if plan is None:
                looks[name] = _Look(name, skipped="excluded")
                continue
            before = only.get(name) if only is not None else None
            if before is not None and (before.structural or before.uidvalidity):
                subset: Sequence[int] | None = None  # look at the folder as a whole again
            elif before is not None:
                subset = before.suspects()
            else:
                subset = None
            expect = before.stored_uidvalidity if before is not None else None
            looks[name] = await self.look(row, plan, subset, expect)
        for name, plan in server.items():
            if plan.excluded or name in mirrored_names or (only is not None and name not in only):
                continue
            order.append(name)
            looks[name] = _Look(name, structural="on the server, not in the mirror (not discovered yet)")
        return order, looks


def _confirm(first: _Look, second: _Look | None) -> _Look | None:
    """The drift both looks saw (None if the second look did not find the folder)."""
    if second is None:
        return None
    if not first.is_drift:
        return first
    both = _Look(first.folder, stored_uidvalidity=second.stored_uidvalidity,
                 pending=first.pending, not_yet=first.not_yet, outside_retention=first.outside_retention)
    both.notes = [n for n in second.notes if n not in both.notes]
    if second.skipped:
        both.skipped = second.skipped
        return both
    both.structural = second.structural if first.structural else ""
    both.uidvalidity = second.uidvalidity if first.uidvalidity else None
    if first.structural or first.uidvalidity:
        # the second look examined the whole folder: keep what it found only where the
        # first look found the same kind of trouble (here: none at UID level)
        if not both.structural and not both.uidvalidity and not second.is_drift:
            both.notes.append("consistent on a second look")
        return both
    both.missing = first.missing & second.missing
    both.extra = first.extra & second.extra
    both.flags = {u: second.flags[u] for u in first.flags if u in second.flags}
    if not both.is_drift:
        both.notes.append("differences seen at first were gone on a second look (sync in progress)")
    return both


def _to_drift(look: _Look) -> FolderDrift:
    return FolderDrift(
        folder=look.folder,
        missing_uids=tuple(sorted(look.missing)),
        extra_uids=tuple(sorted(look.extra)),
        flag_mismatches=tuple((u, m, s) for u, (m, s) in sorted(look.flags.items())),
        uidvalidity_mismatch=look.uidvalidity,
        note=look.note_text(),
    )


async def verify_account(db: Db, settings: Settings, account_id: int) -> VerifyReport:
    """Compare account `account_id`'s mirror with its server (read-only on both sides).

    Raises AccountNotFound, SecretError and the IMAP error types (auth, connect, ...).
    """
    from mailbridge.imap.throttle import Throttle
    from mailbridge.oauth2.signin import signed_in
    from mailbridge.store import accounts as account_store

    account = await account_store.get(db, account_id)
    throttle = Throttle(settings.commands_per_minute)
    # the password or an OAuth2 access token (refreshed when due)
    async with signed_in(db, settings, account, gate=throttle) as session:
        verifier = _Verifier(db, session, settings, account)
        order, looks = await verifier.look_all()
        suspects = {name: look for name, look in looks.items() if look.is_drift}
        if suspects:
            log.info("account %d: drift in %d folder(s); looking again in %g s", account_id,
                     len(suspects), RECHECK_DELAY)
            await trio.sleep(RECHECK_DELAY)
            _, second = await verifier.look_all(suspects)
            for name, first in suspects.items():
                confirmed = _confirm(first, second.get(name))
                if confirmed is None:
                    looks.pop(name, None)
                    order.remove(name)
                else:
                    looks[name] = confirmed

    drift: list[FolderDrift] = []
    skipped: list[tuple[str, str]] = []
    notes: list[tuple[str, str]] = []
    checked: list[str] = []
    for name in order:
        look = looks[name]
        if look.skipped:
            skipped.append((name, look.skipped))
            continue
        checked.append(name)
        if look.is_drift:
            drift.append(_to_drift(look))
        elif look.note_text():
            notes.append((name, look.note_text()))
    return VerifyReport(account_id=account.id, folders_checked=len(checked), drift=tuple(drift),
                        skipped=tuple(skipped), email=account.email, checked=tuple(checked),
                        notes=tuple(notes))


# --- output ----------------------------------------------------------------------------


def _some(values: Sequence[T], show: Callable[[T], str] = str) -> str:
    head = ", ".join(show(v) for v in values[:SHOW])
    more = len(values) - SHOW
    return head + (f" … and {more} more" if more > 0 else "")


def _flag_text(flags: tuple[str, ...]) -> str:
    return " ".join(flags) if flags else "(none)"


def format_report(report: VerifyReport) -> list[str]:
    """Human lines: per folder `ok` or its drift, skipped folders, then a summary line."""
    lines: list[str] = []
    drift = {d.folder: d for d in report.drift}
    notes = dict(report.notes)
    for name in report.checked:
        d = drift.get(name)
        if d is None:
            note = notes.get(name)
            lines.append(f"{name}: ok" + (f"; {note}" if note else ""))
            continue
        lines.append(f"{name}: DRIFT" + (f": {d.note}" if d.note else ""))
        if d.uidvalidity_mismatch is not None:
            mine, theirs = d.uidvalidity_mismatch
            lines.append(f"  UIDVALIDITY differs: mirror {mine}, server {theirs}")
        if d.missing_uids:
            lines.append(f"  {len(d.missing_uids)} UID(s) on the server missing from the mirror: "
                         + _some(d.missing_uids))
        if d.extra_uids:
            lines.append(f"  {len(d.extra_uids)} UID(s) in the mirror not on the server: " + _some(d.extra_uids))
        if d.flag_mismatches:
            lines.append(f"  {len(d.flag_mismatches)} UID(s) with different flags: " + _some(
                d.flag_mismatches,
                lambda m: f"{m[0]} (mirror {_flag_text(m[1])}; server {_flag_text(m[2])})"))
    for d in report.drift:  # any not in `checked` (defensive)
        if d.folder not in report.checked:
            lines.append(f"{d.folder}: DRIFT: {d.note}")
    for name, reason in report.skipped:
        lines.append(f"{name}: skipped ({reason})")
    who = f"account {report.account_id}" + (f" ({report.email})" if report.email else "")
    if report.clean:
        lines.append(f"no drift: {report.folders_checked} folder(s) of {who} match the server"
                     + (f", {len(report.skipped)} skipped" if report.skipped else ""))
    else:
        missing = sum(len(d.missing_uids) for d in report.drift)
        extra = sum(len(d.extra_uids) for d in report.drift)
        flags = sum(len(d.flag_mismatches) for d in report.drift)
        uv = sum(d.uidvalidity_mismatch is not None for d in report.drift)
        other = sum(not (d.missing_uids or d.extra_uids or d.flag_mismatches or d.uidvalidity_mismatch)
                    for d in report.drift)
        parts = [text for n, text in (
            (missing, f"{missing} UID(s) missing from the mirror"),
            (extra, f"{extra} extra UID(s) in the mirror"),
            (flags, f"{flags} flag mismatch(es)"),
            (uv, f"{uv} UIDVALIDITY mismatch(es)"),
            (other, f"{other} folder(s) on one side only"),
        ) if n]
        lines.append(f"DRIFT in {len(report.drift)} of {report.folders_checked} folder(s) of {who}: "
                     + ", ".join(parts))
    return lines


__all__ = ["FolderDrift", "VerifyReport", "format_report", "verify_account"]

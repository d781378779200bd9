"""Answering a write request (flags, move, delete) over the owning actor's session.

Every write is answered only after the server confirmed it (tagged OK), with the mirror
updated before the reply goes out (`mailbridge.store.writeback`, events of origin api),
so a read right after the answer sees the change.  Its commands go through the session's
gate like any other: the account's throttle counts them.

Moves use UID MOVE (RFC 6851) where offered, else UID COPY + STORE \\Deleted + UID
EXPUNGE (UIDPLUS).  A server with neither MOVE nor UIDPLUS can only EXPUNGE every
message marked \\Deleted: mailbridge does that only when no other message of the folder
is marked \\Deleted (checked just before), and refuses otherwise (`WriteRefused`), so it
never expunges a message nobody asked it to.  The same holds for a permanent delete.

A new UID comes from the server's COPYUID (UIDPLUS); without it the moved rows leave the
mirror and the destination's next visit brings them as new.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from actors.messages import ExpungeMessages, MoveMessages, StoreFlags, Target, Write
from mailbridge.aio.imap import ImapResponse, ImapSession
from mailbridge.errors import MessageGone, WriteRefused
from mailbridge.imap.fetch import parse_fetch
from mailbridge.imap.models import FlagUpdate
from mailbridge.imap.responses import parse_search, parse_select
from mailbridge.imap.uidset import compress_uids
from mailbridge.store import folders as folder_store
from mailbridge.store import writeback as store
from mailbridge.store.db import Db

SYSTEM_FLAGS = {f.lower(): f for f in ("\\Seen", "\\Flagged", "\\Answered", "\\Draft", "\\Deleted")}
MAX_FLAGS = 50
MAX_KEYWORD = 200
# RFC 3501 atom: CHARs but atom-specials ( ) { SP CTL % * " \ ]
_ATOM = re.compile(r'^[\x21\x23\x24\x26-\x27\x2b-\x5b\x5e-\x7a\x7c\x7e]+$')
_COPYUID = re.compile(rb"\[COPYUID (\d+) ([0-9:,]+) ([0-9:,]+)\]", re.IGNORECASE)


def check_flags(field_name: str, flags: object) -> tuple[tuple[str, ...], dict[str, str]]:
    """The flags of a request, system flags in their canonical case, and the problems
    (field → text) naming each bad one: \\Recent (the server's alone), an unknown
    backslash flag, a keyword that is not an IMAP atom."""
    if flags is None:
        return (), {}
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        return (), {field_name: "must be a list of flag names"}
    if len(flags) > MAX_FLAGS:
        return (), {field_name: f"at most {MAX_FLAGS} flags"}
    out: list[str] = []
    problems: dict[str, str] = {}
    for i, flag in enumerate(flags):
        where = f"{field_name}[{i}]"
        if flag.lower() == "\\recent":
            problems[where] = "\\Recent is set by the server alone and cannot be changed"
        elif flag.startswith("\\"):
            canonical = SYSTEM_FLAGS.get(flag.lower())
            if canonical is None:
                problems[where] = (f"{flag!r} is not a system flag (\\Seen \\Flagged \\Answered \\Draft \\Deleted); "
                                   "a keyword has no backslash")
            elif canonical not in out:
                out.append(canonical)
        elif not flag or len(flag) > MAX_KEYWORD or not _ATOM.match(flag):
            problems[where] = (f"{flag[:80]!r} is not a valid keyword: 1 to {MAX_KEYWORD} ASCII characters "
                               "without spaces, controls or ( ) { } % * \" \\ ]")
        elif flag not in out:
            out.append(flag)
    return tuple(out), problems


@dataclass
class Outcome:
    """What a write did, for the API's answer (read the rows back by id after it)."""

    changed: int = 0  # rows whose flags changed
    missing: list[tuple[int, int]] = field(default_factory=list)  # (folder id, uid) no longer on the server
    moved: dict[int, int] = field(default_factory=dict)  # message id → new UID (same id, new folder)
    removed: list[int] = field(default_factory=list)  # message ids that left the mirror
    new_uid_unknown: bool = False  # moved without COPYUID: the destination's next visit brings them


async def perform(session: ImapSession, db: Db, req: Write) -> Outcome:
    """Do `req` folder by folder; raises our errors (ImapCommandError for a server's NO)."""
    account_id = req.account_id
    outcome = Outcome()
    for target in req.targets:
        if not target.uids:
            continue
        if isinstance(req, StoreFlags):
            await _store_flags(session, db, account_id, req, target, outcome)
        elif isinstance(req, MoveMessages):
            await _move(session, db, account_id, req, target, outcome)
        else:
            assert isinstance(req, ExpungeMessages)
            await _expunge(session, db, account_id, target, outcome)
    return outcome


async def _select(session: ImapSession, db: Db, target: Target) -> None:
    """The target's folder selected read-write, with the UIDVALIDITY its UIDs belong to."""
    if session.selected == target.folder_raw_name and not session.selected_readonly:
        current = await folder_store.get_uidvalidity(db, target.folder_id)
    else:
        response = await session.select(target.folder_raw_name, condstore=True)
        current = parse_select(response.lines_and_text).uidvalidity
    if target.uidvalidity is not None and current != target.uidvalidity:
        raise MessageGone("the folder was reset on the server (UIDVALIDITY changed); its messages' UIDs are void")


async def _store_flags(session: ImapSession, db: Db, account_id: int, req: StoreFlags, target: Target,
                       outcome: Outcome) -> None:
    """One UID STORE per change, the last one not silent: its untagged FETCH replies
    give each message's flags as the server now holds them (with MODSEQ under CONDSTORE);
    a UID FETCH asks only for those it did not name."""
    await _select(session, db, target)
    uid_set = compress_uids(target.uids)
    wanted = set(target.uids)
    changes = [("+FLAGS", req.add), ("-FLAGS", req.remove)]
    changes = [(item, flags) for item, flags in changes if flags]
    response = None
    for i, (item, flags) in enumerate(changes):
        last = i == len(changes) - 1
        response = await session.uid_store(uid_set, item if last else item + ".SILENT", flags)
    assert response is not None, "the caller gives flags to add or remove"
    found: dict[int, FlagUpdate] = {}
    for update in parse_fetch(response.lines):
        if isinstance(update, FlagUpdate) and update.uid in wanted:
            found[update.uid] = update
    unnamed = sorted(wanted - found.keys())
    if unnamed:
        items = "(UID FLAGS MODSEQ)" if session.condstore else "(UID FLAGS)"
        fetched = await session.uid_fetch(compress_uids(unnamed), items)
        for update in parse_fetch(fetched.lines):
            if isinstance(update, FlagUpdate) and update.uid in wanted and update.uid not in found:
                found[update.uid] = update
    updates = list(found.values())
    seen = set(found)
    outcome.missing.extend((target.folder_id, uid) for uid in target.uids if uid not in seen)
    outcome.changed += await store.set_flags(db, account_id, target.folder_id, updates)


async def _no_other_deleted(session: ImapSession, uids: Sequence[int], what: str) -> None:
    """Without UIDPLUS an EXPUNGE removes every \\Deleted message: refuse when one we were
    not asked about is marked so.

    A NOOP first brings the session's view up to date: a server answers SEARCH from the
    view as of the command's start (Dovecot sends another client's new \\Deleted as a
    FETCH after the search result), and flags reported along the way count too."""
    noop = await session.noop()
    search = await session.uid_search("DELETED")
    others = set(parse_search(search.lines))
    for update in parse_fetch([*noop.lines, *search.lines]):
        if isinstance(update, FlagUpdate) and "\\Deleted" in update.flags:
            others.add(update.uid)
    others -= set(uids)
    if others:
        raise WriteRefused(
            f"the server has no UIDPLUS (UID EXPUNGE), and {len(others)} other message(s) of this folder are "
            f"marked \\Deleted: an EXPUNGE would remove them too, so mailbridge did not {what} (nothing changed)")


def _copyuid(response: ImapResponse, dest_uidvalidity: int | None) -> dict[int, int]:
    """{source UID: destination UID} from a COPYUID response code (untagged or tagged);
    empty without one, or when it names another UIDVALIDITY than the mirrored one."""
    for line in [*response.lines, response.text.encode("utf-8", "replace")]:
        m = _COPYUID.search(bytes(line))
        if m is None:
            continue
        if dest_uidvalidity is not None and int(m.group(1)) != dest_uidvalidity:
            return {}
        sources = _expand(m.group(2).decode())
        dests = _expand(m.group(3).decode())
        return dict(zip(sources, dests)) if len(sources) == len(dests) else {}
    return {}


def _expand(text: str) -> list[int]:
    """A COPYUID set in its order (RFC 4315: the n-th source goes with the n-th destination)."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        first, last = int(lo), int(hi or lo)
        step = 1 if last >= first else -1
        out.extend(range(first, last + step, step))
    return out


async def _move(session: ImapSession, db: Db, account_id: int, req: MoveMessages, target: Target,
                outcome: Outcome) -> None:
    if target.folder_id == req.dest_folder_id:
        return  # already there
    await _select(session, db, target)
    uid_set = compress_uids(target.uids)
    if session.has("MOVE"):
        response = await session.uid_move(uid_set, req.dest_raw_name)
    else:
        if not session.has("UIDPLUS"):
            await _no_other_deleted(session, target.uids, f"move to {req.dest_name!r}")
        response = await session.uid_copy(uid_set, req.dest_raw_name)
        await session.uid_store(uid_set, "+FLAGS.SILENT", ("\\Deleted",))
        if session.has("UIDPLUS"):
            await session.uid_expunge(uid_set)
        else:
            await session.expunge()
    dest_uidvalidity = await folder_store.get_uidvalidity(db, req.dest_folder_id)
    # a destination never visited has no UIDVALIDITY to tie the new UIDs to: its first visit brings them
    mapping = _copyuid(response, dest_uidvalidity) if dest_uidvalidity is not None else {}
    if req.dest_mirrored and not mapping:
        outcome.new_uid_unknown = True
    source = await folder_store.load_folder(db, target.folder_id)
    source_name = source.name if source is not None else str(target.folder_id)
    moved = await store.move_rows(db, account_id, target.folder_id, source_name, req.dest_folder_id,
                                  req.dest_name, target.uids, mapping, dest_mirrored=req.dest_mirrored)
    outcome.moved.update(moved.moved)
    outcome.removed.extend(moved.removed)


async def _expunge(session: ImapSession, db: Db, account_id: int, target: Target, outcome: Outcome) -> None:
    await _select(session, db, target)
    uid_set = compress_uids(target.uids)
    uidplus = session.has("UIDPLUS")
    if not uidplus:
        await _no_other_deleted(session, target.uids, "delete permanently")
    await session.uid_store(uid_set, "+FLAGS.SILENT", ("\\Deleted",))
    if uidplus:
        await session.uid_expunge(uid_set)
    else:
        await session.expunge()
    outcome.removed.extend(await store.remove_rows(db, account_id, target.folder_id, target.uids))


__all__ = ["MAX_FLAGS", "Outcome", "SYSTEM_FLAGS", "check_flags", "perform"]

"""Folder discovery: LIST → the folders table (priority, exclusions, gone folders).

Special-use attributes (RFC 6154) decide Sent/Trash/Junk when the server sends them;
otherwise well-known and localized names do.  `\\Noselect` and `\\NonExistent` entries
are skipped, and so are names that cannot be used safely (CR, LF or NUL inside: no
command can name them, Postgres cannot store NUL): `discover_folders` reports those, and
the account's health names them (degraded, as a parked folder: mail there is not
mirrored until the folder is renamed on the server).  A folder that left the server
leaves the mirror with its messages.

Gmail (the server offers X-GM-EXT-1) shows every message in ``[Gmail]/All Mail`` (\\All)
and again in a folder per label.  Only \\All, \\Trash and \\Junk are mirrored there
(Trash and Junk excluded by default, as everywhere); every other folder is a *view*: its
row is kept, excluded, with what it shows in ``gmail_view`` (`gmail_view_of`), so the API
can answer for it from All Mail's rows and their labels, and no cycle selects it or asks
its STATUS.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mailbridge.imap.models import ListEntry
from mailbridge.imap.responses import parse_list
from mailbridge.store import folders as folder_store
from mailbridge.store.db import Tx
from mailbridge.store.folders import Folder, FolderPlan

log = logging.getLogger(__name__)
UNUSABLE_CHARACTERS = ("\r", "\n", "\x00")

SENT_NAMES = {"sent", "sent items", "sent messages", "sent mail", "gesendet", "gesendete objekte",
              "gesendete elemente", "envoyés", "éléments envoyés", "enviados", "inviati", "verzonden",
              "[gmail]/sent mail", "inbox.sent", "inbox/sent"}
TRASH_NAMES = {"trash", "deleted items", "deleted messages", "bin", "papierkorb", "gelöschte objekte",
               "gelöschte elemente", "corbeille", "papelera", "cestino", "prullenbak", "[gmail]/trash",
               "inbox.trash", "inbox/trash"}
JUNK_NAMES = {"junk", "spam", "junk e-mail", "junk email", "bulk mail", "spam-verdacht", "courrier indésirable",
              "indésirables", "[gmail]/spam", "inbox.junk", "inbox.spam", "inbox/junk", "inbox/spam"}


def special_use_of(entry: ListEntry) -> str | None:
    """The entry's special use, from its attributes or, failing that, its name."""
    if entry.special_use:
        return entry.special_use
    lowered = entry.name.lower()
    leaf = lowered.rsplit(entry.delimiter, 1)[-1] if entry.delimiter else lowered
    for names, use in ((SENT_NAMES, "\\Sent"), (TRASH_NAMES, "\\Trash"), (JUNK_NAMES, "\\Junk")):
        if lowered in names or leaf in names:
            return use
    return None


# Gmail's special-use folders that are views, and the label (or, for Starred, the flag) they show
GMAIL_VIEWS = {"\\Sent": "\\Sent", "\\Drafts": "\\Draft", "\\Important": "\\Important",
               "\\Flagged": "\\Flagged"}
GMAIL_MIRRORED = ("\\All", "\\Trash", "\\Junk")  # the folders Gmail's messages are stored from


def gmail_view_of(entry: ListEntry, name: str) -> str | None:
    """On Gmail, what the folder `entry` (named `name`) shows: ``\\Inbox`` for INBOX, the
    system label of a special-use folder (``\\Flagged``, a flag, for Starred), else the
    user label it is named after; None for a folder that is mirrored (All Mail, Trash,
    Spam)."""
    if entry.special_use in GMAIL_MIRRORED:
        return None
    if name == "INBOX":
        return "\\Inbox"
    attrs = {a.lower() for a in entry.flags} | ({entry.special_use.lower()} if entry.special_use else set())
    for attr, shows in GMAIL_VIEWS.items():  # \\Important (RFC 8457) is not a special use here
        if attr.lower() in attrs:
            return shows
    if special_use_of(entry) in ("\\Trash", "\\Junk"):  # a server without special-use attributes (by name)
        return None
    return name if entry.delimiter in (None, "/") else name.replace(entry.delimiter, "/")


def unusable(entry: ListEntry) -> bool:
    """The entry's name holds a character no command or row can carry safely."""
    return any(c in entry.raw_name or c in entry.name for c in UNUSABLE_CHARACTERS)


def unusable_names(entries: Iterable[ListEntry]) -> list[str]:
    """The names of the entries `plan_folders` skips as unusable, escaped for display."""
    return sorted({repr(e.name) for e in entries if unusable(e)})


def skipped_problem(names: Sequence[str]) -> str:
    """The health reason for folders skipped as unusable (what and how to fix it)."""
    listed = ", ".join(names)
    return (f"{len(names)} folder(s) skipped: their names hold CR, LF or NUL, which mailbridge cannot use "
            f"safely ({listed}); rename them on the server to mirror them")


def plan_folders(entries: Iterable[ListEntry], excluded_names: Iterable[str] | None = None, *,
                 gmail: bool = False) -> list[FolderPlan]:
    """Classify LIST entries; `excluded_names` (account setting) replaces the default
    exclusions (Trash, Junk/Spam) when given.  Unusable names are left out.  With `gmail`
    (X-GM-EXT-1), the label folders are views (excluded, `gmail_view` set; see the module
    doc) and All Mail is the priority folder."""
    custom = {n.lower() for n in excluded_names} if excluded_names is not None else None
    plans: dict[str, FolderPlan] = {}
    for entry in entries:
        if not entry.selectable or unusable(entry):
            continue
        use = special_use_of(entry)
        name = "INBOX" if entry.name.upper() == "INBOX" else entry.name
        if custom is None:
            excluded = use in ("\\Trash", "\\Junk")
        else:
            excluded = name.lower() in custom
        priority = name == "INBOX" or use == "\\Sent"
        view = gmail_view_of(entry, name) if gmail else None
        if gmail:
            priority = use == "\\All"
            excluded = excluded or view is not None
        plans[name] = FolderPlan(name, entry.raw_name, entry.delimiter, use, priority, excluded, view)
    return sorted(plans.values(), key=lambda p: (not p.is_priority, p.name != "INBOX", p.name))


async def apply_plan(tx: Tx, account_id: int, plans: Sequence[FolderPlan]) -> tuple[int, int]:
    """Upsert the planned folders and drop those the server no longer lists (with their
    messages), in the caller's transaction.  Returns (added, removed)."""
    added = await folder_store.upsert_listed(tx, account_id, plans)
    removed = await folder_store.remove_unlisted(tx, account_id, [p.name for p in plans])
    if any(p.gmail_view is not None for p in plans):
        dropped = await folder_store.clear_views(tx, account_id)
        if dropped:
            log.info("account %d: %d row(s) of Gmail label folders dropped (mirrored from All Mail now)",
                     account_id, dropped)
    return added, removed


@dataclass(frozen=True, slots=True)
class Discovery:
    """What a LIST found: the account's folders as stored now, and the names skipped."""

    folders: list[Folder]
    skipped: tuple[str, ...] = ()


async def discover_folders(db: Any, session: Any, account_id: int,
                           excluded_names: tuple[str, ...] | None) -> Discovery:
    """LIST the server's folders into the folders table (unusable names skipped and
    logged); the account's folders and the skipped names."""
    entries = parse_list((await session.list("", "*")).lines)
    skipped = tuple(unusable_names(entries))
    if skipped:
        log.warning("account %d: %s", account_id, skipped_problem(skipped))
    plans = plan_folders(entries, excluded_names, gmail=session.has("X-GM-EXT-1"))
    async with db.transaction() as tx:
        added, removed = await apply_plan(tx, account_id, plans)
    if added or removed:
        log.info("account %d: %d folder(s) added, %d removed", account_id, added, removed)
    return Discovery(await folder_store.load_folders(db, account_id), skipped)


__all__ = ["Discovery", "FolderPlan", "UNUSABLE_CHARACTERS", "apply_plan", "discover_folders", "gmail_view_of",
           "plan_folders",
           "skipped_problem", "special_use_of", "unusable", "unusable_names"]

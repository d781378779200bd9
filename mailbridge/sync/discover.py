"""Folder discovery: LIST → the folders table (priority, exclusions, gone folders).

Special-use attributes (RFC 6154) decide Sent/Trash/Junk when the server sends them;
otherwise well-known and localized names do.  `\\Noselect` and `\\NonExistent` entries
are skipped.  A folder that left the server leaves the mirror with its messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mailbridge.imap.models import ListEntry
from mailbridge.store import folders as folder_store
from mailbridge.store.db import Tx
from mailbridge.store.folders import FolderPlan

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


def plan_folders(entries: Iterable[ListEntry], excluded_names: Iterable[str] | None = None) -> list[FolderPlan]:
    """Classify LIST entries; `excluded_names` (account setting) replaces the default
    exclusions (Trash, Junk/Spam) when given."""
    custom = {n.lower() for n in excluded_names} if excluded_names is not None else None
    plans: dict[str, FolderPlan] = {}
    for entry in entries:
        if not entry.selectable:
            continue
        use = special_use_of(entry)
        name = "INBOX" if entry.name.upper() == "INBOX" else entry.name
        if custom is None:
            excluded = use in ("\\Trash", "\\Junk")
        else:
            excluded = name.lower() in custom
        priority = name == "INBOX" or use == "\\Sent"
        plans[name] = FolderPlan(name, entry.raw_name, entry.delimiter, use, priority, excluded)
    return sorted(plans.values(), key=lambda p: (not p.is_priority, p.name != "INBOX", p.name))


async def apply_plan(tx: Tx, account_id: int, plans: Sequence[FolderPlan]) -> tuple[int, int]:
    """Upsert the planned folders and drop those the server no longer lists (with their
    messages), in the caller's transaction.  Returns (added, removed)."""
    added = await folder_store.upsert_listed(tx, account_id, plans)
    removed = await folder_store.remove_unlisted(tx, account_id, [p.name for p in plans])
    return added, removed


__all__ = ["FolderPlan", "apply_plan", "plan_folders", "special_use_of"]

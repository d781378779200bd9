"""Folder discovery: LIST → the folders table (priority, exclusions, gone folders).

Special-use attributes (RFC 6154) decide Sent/Trash/Junk when the server sends them;
otherwise well-known and localized names do.  `\\Noselect` and `\\NonExistent` entries
are skipped.  A folder that left the server leaves the mirror with its messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from mailbridge.imap.models import ListEntry

SENT_NAMES = {"sent", "sent items", "sent messages", "sent mail", "gesendet", "gesendete objekte",
              "gesendete elemente", "envoyés", "éléments envoyés", "enviados", "inviati", "verzonden",
              "[gmail]/sent mail", "inbox.sent", "inbox/sent"}
TRASH_NAMES = {"trash", "deleted items", "deleted messages", "bin", "papierkorb", "gelöschte objekte",
               "gelöschte elemente", "corbeille", "papelera", "cestino", "prullenbak", "[gmail]/trash",
               "inbox.trash", "inbox/trash"}
JUNK_NAMES = {"junk", "spam", "junk e-mail", "junk email", "bulk mail", "spam-verdacht", "courrier indésirable",
              "indésirables", "[gmail]/spam", "inbox.junk", "inbox.spam", "inbox/junk", "inbox/spam"}


@dataclass(frozen=True, slots=True)
class FolderPlan:
    """How discovery classifies one selectable mailbox."""

    name: str
    raw_name: str
    delimiter: str | None
    special_use: str | None
    is_priority: bool
    excluded: bool


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


async def apply_plan(tx: Any, account_id: int, plans: list[FolderPlan]) -> tuple[int, int]:
    """Upsert the planned folders and drop those the server no longer lists (with their
    messages).  Returns (added, removed)."""
    names = [p.name for p in plans]
    added = int(await tx.fetchval(
        """WITH src AS (
               SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bool[], $7::bool[])
                   AS s(name, raw_name, delimiter, special_use, is_priority, excluded)
           ), up AS (
               INSERT INTO folders (account_id, name, raw_name, delimiter, special_use, is_priority, excluded)
               SELECT $1, name, raw_name, delimiter, special_use, is_priority, excluded FROM src
               ON CONFLICT (account_id, name) DO UPDATE SET
                   raw_name = EXCLUDED.raw_name, delimiter = EXCLUDED.delimiter,
                   special_use = EXCLUDED.special_use, is_priority = EXCLUDED.is_priority,
                   excluded = EXCLUDED.excluded, exists_on_server = true
               RETURNING (xmax = 0) AS inserted, id, name
           ), ev AS (
               INSERT INTO events (account_id, folder_id, kind, payload)
               SELECT $1, id, 'folder_added', jsonb_build_object('folder', name) FROM up WHERE inserted
           )
           SELECT count(*) FILTER (WHERE inserted) FROM up""",
        account_id, names, [p.raw_name for p in plans], [p.delimiter for p in plans],
        [p.special_use for p in plans], [p.is_priority for p in plans], [p.excluded for p in plans],
    ))
    removed = int(await tx.fetchval(
        """WITH gone AS (
               DELETE FROM folders WHERE account_id = $1 AND NOT (name = ANY($2::text[]))
               RETURNING id, name
           ), ev AS (
               INSERT INTO events (account_id, folder_id, kind, payload)
               SELECT $1, id, 'folder_removed', jsonb_build_object('folder', name) FROM gone
           )
           SELECT count(*) FROM gone""",
        account_id, names,
    ))
    return added, removed

"""Gmail's model, the pure parts: which folders are mirrored and which are label views,
the folder IDLE watches, and the FETCH items asked of each kind of server."""

from __future__ import annotations

from dataclasses import dataclass, replace

from actors.visits import watched_folder
from mailbridge.imap.models import ListEntry
from mailbridge.sync.discover import plan_folders
from mailbridge.sync.fetching import flag_items, meta_items
from tests.support.folders import folder


def entry(name: str, *flags: str, special: str | None = None) -> ListEntry:
    return ListEntry(flags=tuple(flags), delimiter="/", raw_name=name, name=name, special_use=special,
                     selectable="\\Noselect" not in flags)


GMAIL_LIST = [
    entry("INBOX", "\\HasNoChildren"), entry("[Gmail]", "\\Noselect"),
    entry("[Gmail]/All Mail", "\\All", special="\\All"), entry("[Gmail]/Sent Mail", "\\Sent", special="\\Sent"),
    entry("[Gmail]/Drafts", "\\Drafts", special="\\Drafts"), entry("[Gmail]/Important", "\\Important"),
    entry("[Gmail]/Starred", "\\Flagged", special="\\Flagged"), entry("[Gmail]/Trash", "\\Trash", special="\\Trash"),
    entry("[Gmail]/Spam", "\\Junk", special="\\Junk"), entry("Work", "\\HasChildren"), entry("Work/Clients"),
]


def test_gmail_mirrors_all_mail_trash_and_spam_and_keeps_label_folders_as_views():
    plans = {p.name: p for p in plan_folders(GMAIL_LIST, gmail=True)}
    assert {n: p.gmail_view for n, p in plans.items()} == {
        "INBOX": "\\Inbox", "[Gmail]/All Mail": None, "[Gmail]/Sent Mail": "\\Sent", "[Gmail]/Drafts": "\\Draft",
        "[Gmail]/Important": "\\Important", "[Gmail]/Starred": "\\Flagged", "[Gmail]/Trash": None,
        "[Gmail]/Spam": None, "Work": "Work", "Work/Clients": "Work/Clients"}
    assert [n for n, p in plans.items() if not p.excluded] == ["[Gmail]/All Mail"]
    assert [n for n, p in plans.items() if p.is_priority] == ["[Gmail]/All Mail"]
    # the account's own exclusions decide Trash and Spam; views stay views
    custom = {p.name: p for p in plan_folders(GMAIL_LIST, ["work"], gmail=True)}
    assert not custom["[Gmail]/Trash"].excluded and custom["INBOX"].excluded and custom["Work"].excluded


def test_without_gmail_nothing_is_a_view():
    plans = plan_folders(GMAIL_LIST)
    assert all(p.gmail_view is None for p in plans)
    assert {p.name for p in plans if p.is_priority} == {"INBOX", "[Gmail]/Sent Mail"}


def test_watched_folder_is_inbox_or_gmails_all_mail():
    inbox, other = folder(1, "INBOX"), folder(2, "Archive")
    assert watched_folder([other, inbox]) == inbox
    gmail = [replace(folder(1, "INBOX", excluded=True), gmail_view="\\Inbox"),
             replace(folder(2, "[Gmail]/All Mail"), special_use="\\All")]
    assert watched_folder(gmail) == gmail[1]
    assert watched_folder([gmail[0], replace(gmail[1], parked=True)]) is None


@dataclass
class _Session:
    caps: frozenset[str]
    condstore: bool

    def has(self, capability: str) -> bool:
        return capability in self.caps


def test_fetch_items_follow_the_capabilities():
    plain = meta_items(_Session(frozenset(), False))  # type: ignore[arg-type]
    assert "X-GM" not in plain and "EMAILID" not in plain and "MODSEQ" not in plain
    gmail = meta_items(_Session(frozenset({"X-GM-EXT-1"}), True))  # type: ignore[arg-type]
    assert gmail.startswith("(UID FLAGS INTERNALDATE RFC822.SIZE MODSEQ X-GM-MSGID X-GM-THRID X-GM-LABELS BODY.PEEK[")
    cyrus = meta_items(_Session(frozenset({"OBJECTID"}), True))  # type: ignore[arg-type]
    assert "MODSEQ EMAILID THREADID BODY.PEEK[HEADER.FIELDS (" in cyrus and cyrus.endswith(")])")
    assert flag_items(_Session(frozenset({"X-GM-EXT-1"}), True)) == "(UID FLAGS X-GM-LABELS)"  # type: ignore[arg-type]
    assert flag_items(_Session(frozenset(), True)) == "(UID FLAGS)"  # type: ignore[arg-type]

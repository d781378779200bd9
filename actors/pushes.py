"""What NOTIFY (RFC 5465) pushes say about an account's other folders: the actor's
bookkeeping of them, with no I/O.

A push names a mailbox the way the server chose to write it (modified UTF-7, or decoded
as Dovecot does); a LIST push says a mailbox was created, renamed or deleted.  Pushes
arrive during IDLE, and also inside other commands' responses or between commands; the
folders those name wait here until the actor's next IDLE round visits them.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from mailbridge.imap.models import ServerPush
from mailbridge.imap.responses import parse_exists_expunge
from mailbridge.imap.utf7 import decode_mailbox_name
from mailbridge.sync.folder import Folder

# what NOTIFY asks for, once per session: the selected mailbox as plain IMAP does, a STATUS
# whenever another personal mailbox gains, loses or re-flags a message, and a LIST when one
# is created, renamed or deleted
NOTIFY_EVENTS = ("(selected (MessageNew MessageExpunge FlagChange)) "
                 "(personal (MessageNew MessageExpunge FlagChange MailboxName))")

Pushed = Folder | None  # None: a mailbox no folder row knows (created since the last LIST)


class NotifyPushes:
    """The account's folders by every name a push may use for them, and the pushed
    folders no visit has taken yet.  Inactive (ignoring everything) until `watch`."""

    def __init__(self) -> None:
        self.active = False
        self._by_name: dict[str, Folder] = {}
        self._pending: list[Pushed] = []

    def watch(self, folders: Iterable[Folder]) -> None:
        """Map pushes onto `folders` (the account's current folder rows)."""
        self.active = True
        self._by_name = {}
        for folder in folders:
            self._by_name.setdefault(folder.raw_name, folder)
            self._by_name.setdefault(folder.name, folder)

    def folders_in(self, push: ServerPush, *, but: Folder | None = None) -> tuple[Pushed, ...]:
        """The included folders other than INBOX (and `but`) that `push` names, each once;
        None once for a LIST push or a name no folder has."""
        if not self.active:
            return ()
        out: list[Pushed] = [None] if push.mailboxes_changed else []
        for name in push.elsewhere:
            if name.upper() == "INBOX":
                continue  # the selected mailbox: its own pushes say what changed
            folder = self._by_name.get(name) or self._by_name.get(decode_mailbox_name(name))
            if folder is not None and (folder.excluded or folder.parked or folder.name == "INBOX"
                                       or (but is not None and folder.id == but.id)):
                continue
            _add(out, folder)
        return tuple(out)

    def note(self, lines: Sequence[bytes | bytearray], *, but: Folder | None = None) -> None:
        """Keep the folders the push lines among `lines` name (`but`: the folder whose own
        STATUS answer they are) for `take`."""
        if self.active and lines:
            for folder in self.folders_in(parse_exists_expunge(lines), but=but):
                _add(self._pending, folder)

    def take(self) -> tuple[Pushed, ...]:
        """The folders noted since the last call."""
        pending, self._pending = self._pending, []
        return tuple(pending)


def _add(out: list[Pushed], folder: Pushed) -> None:
    key = None if folder is None else folder.id
    if all((None if f is None else f.id) != key for f in out):
        out.append(folder)


__all__ = ["NOTIFY_EVENTS", "NotifyPushes", "Pushed"]

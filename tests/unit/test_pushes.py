"""NotifyPushes: which folders NOTIFY's STATUS and LIST pushes name (pure, no I/O)."""

from __future__ import annotations

from dataclasses import replace

from actors.pushes import NotifyPushes
from mailbridge.imap.models import ServerPush
from tests.support.folders import folder

INBOX, ARCHIVE, TRIP, TRASH = (folder(1, "INBOX"), folder(2, "Archive"),
                               replace(folder(3, "Reise & Urlaub"), raw_name="Reise &- Urlaub"),
                               folder(4, "Trash", excluded=True))


def watching() -> NotifyPushes:
    pushes = NotifyPushes()
    pushes.watch([INBOX, ARCHIVE, TRIP, TRASH])
    return pushes


def test_names_as_written_or_decoded_map_to_included_folders_once():
    push = ServerPush(elsewhere=("Archive", "Reise & Urlaub", "Reise &- Urlaub", "Trash", "inbox"))
    assert watching().folders_in(push) == (ARCHIVE, TRIP)


def test_a_list_push_or_an_unknown_name_means_a_new_look_at_the_folder_list():
    assert watching().folders_in(ServerPush(mailboxes_changed=True)) == (None,)
    assert watching().folders_in(ServerPush(elsewhere=("Projects", "Plans", "Archive"))) == (None, ARCHIVE)


def test_noted_lines_wait_for_take_and_a_status_answer_is_not_its_own_push():
    pushes = watching()
    pushes.note([b"STATUS Archive (MESSAGES 3)", b"STATUS Archive (HIGHESTMODSEQ 9)"], but=ARCHIVE)
    assert pushes.take() == ()
    pushes.note([b"STATUS Archive (MESSAGES 3)", b'LIST () "." Projects'])
    pushes.note([b"STATUS Archive (UNSEEN 1)"])
    assert pushes.take() == (None, ARCHIVE)
    assert pushes.take() == ()


def test_inactive_until_it_watches():
    pushes = NotifyPushes()
    pushes.note([b"STATUS Archive (MESSAGES 3)"])
    assert pushes.folders_in(ServerPush(elsewhere=("Archive",))) == () and pushes.take() == ()

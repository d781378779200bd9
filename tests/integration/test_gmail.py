"""mailbridge's own IMAP session against the Gmail-behaving test server
(`mailbridge.testing.gmail`): a real TCP peer, no mocks."""

from __future__ import annotations

from datetime import datetime, timezone

import trio

from mailbridge.aio.imap import ImapEndpoint, ImapSession
from mailbridge.imap.fetch import parse_fetch
from mailbridge.imap.models import MessageMeta
from mailbridge.imap.responses import parse_list, parse_select
from mailbridge.sync.fetching import FolderReader
from mailbridge.testing.gmail import GmailServer, running_gmail

RAW = (b"Message-ID: <one@example.org>\r\nSubject: hello\r\nFrom: Ann <Ann@example.org>\r\n"
       b"To: bob@example.org\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nbody\r\n")


def test_session_lists_views_and_fetches_all_mail() -> None:
    from mailbridge.aio.loop import run as run_with_loop

    with running_gmail() as gmail:
        run_with_loop(_session_against, gmail)


async def _session_against(gmail: GmailServer) -> None:
    if True:
        inbox = gmail.add_message(RAW, ("\\Inbox", "Work/Clients"))
        gmail.add_message(RAW.replace(b"one@", b"two@"), ("\\Sent",), ("\\Seen",))
        gmail.add_message(RAW.replace(b"one@", b"three@"), ("\\Trash",))
        endpoint = ImapEndpoint("127.0.0.1", gmail.port, "none", gmail.user)
        async with ImapSession.open(endpoint, gmail.password) as session:
            assert session.has("X-GM-EXT-1")
            await session.enable("CONDSTORE", "QRESYNC")
            assert session.condstore
            entries = parse_list((await session.list()).lines)
            names = {e.name: e.special_use for e in entries if e.selectable}
            assert names["[Gmail]/All Mail"] == "\\All" and names["[Gmail]/Trash"] == "\\Trash"
            assert "Work/Clients" in names and "INBOX" in names
            info = parse_select((await session.select("[Gmail]/All Mail")).lines_and_text)
            assert info.exists == 2 and info.highestmodseq
            reader = FolderReader(session, "[Gmail]/All Mail", now=lambda: datetime.now(timezone.utc))
            uids = list(await reader.search("ALL"))
            assert uids == [1, 2]
            metas, defects = await reader.fetch_meta(uids)
            assert defects == 0
            assert [m.message_id for m in metas] == ["one@example.org", "two@example.org"]
            assert metas[0].from_email == "ann@example.org" and metas[1].flags == ("\\Seen",)
            assert all(isinstance(m, MessageMeta) and m.modseq for m in metas)
            gm = await session.uid_fetch("1:2", "(UID FLAGS INTERNALDATE RFC822.SIZE X-GM-MSGID X-GM-THRID X-GM-LABELS)")
            gmetas = [m for m in parse_fetch(gm.lines) if isinstance(m, MessageMeta)]
            assert gmetas[0].email_id == str(inbox) and gmetas[0].thread_id == str(inbox)
            assert gmetas[0].labels is not None and set(gmetas[0].labels) == {"\\Inbox", "Work/Clients"}
            # the folder reader asks Gmail's items itself on a server with X-GM-EXT-1
            assert gmetas[1].labels == ("\\Sent",) and metas[0].labels == gmetas[0].labels
            assert metas[0].email_id == str(inbox)
            # a label change bumps MODSEQ and reaches a CHANGEDSINCE fetch
            gmail.add_label(inbox, "Later")
            changed = await session.uid_fetch("1:*", f"(UID FLAGS) (CHANGEDSINCE {info.highestmodseq})")
            updates = [u for u in parse_fetch(changed.lines) if getattr(u, "uid", None) == 1]
            assert updates and b"Later" in b"".join(bytes(x) for x in changed.lines if isinstance(x, (bytes, bytearray)))
            # the INBOX view drops a message whose \Inbox label goes, and IDLE says so
            await session.select("INBOX")
            async with session.idle() as stream:
                gmail.remove_label(inbox, "\\Inbox")
                with trio.fail_after(5):
                    push = await stream.next_push()
                assert any(b"EXPUNGE" in bytes(line) for line in push), push

"""News about the selected mailbox that comes after IDLE's DONE (before its tagged OK:
how Cyrus and Courier report, only when polled) is kept for `take_selected_news`, never
dropped; news left untaken when another mailbox is SELECTed is kept per mailbox
(`take_left_news`: a FETCH FLAGS a re-SELECT would not repeat without CONDSTORE); the
session knows its server's quirks by greeting.  Real servers."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import trio

from mailbridge.aio.imap import ImapEndpoint, ImapSession
from mailbridge.aio.loop import run as run_with_loop
from mailbridge.testing.imapctl import MailboxClient
from mailbridge.testing.mailgen import make_message
from mailbridge.testing.servers import CourierServer, CyrusServer
from tests.integration.test_other_servers import _running


@pytest.fixture(scope="module")
def cyrus() -> Iterator[CyrusServer | CourierServer]:
    yield from _running(CyrusServer)


async def test_news_after_done_is_kept_and_quirks_are_known(cyrus):
    user = cyrus.add_user()
    endpoint = ImapEndpoint("127.0.0.1", cyrus.port, "none", user.username)
    async with ImapSession.open(endpoint, user.password, timeout=10) as session:
        assert session.quirks.name == "cyrus" and session.quirks.reports_only_on_poll
        await session.select("INBOX")
        async with session.idle() as stream:
            def append() -> None:
                with MailboxClient(cyrus, user) as client:
                    client.append("INBOX", make_message(1, rng=random.Random(1)))
            await trio.to_thread.run_sync(append)
            with trio.move_on_after(1.5):
                pushed = await stream.next_push()
                pytest.fail(f"Cyrus without idled pushed {pushed!r}")  # it should only tell with DONE
        assert session.has_selected_news  # DONE's `* 1 EXISTS`
        assert session.take_selected_news()
        assert not session.take_selected_news()


def test_news_left_by_a_select_is_kept_for_that_mailbox(dovecot, mail_user):
    from tests.support.hostile_imap import TellWith, running_hostile

    async def check(hostile) -> None:
        endpoint = ImapEndpoint("127.0.0.1", hostile.port, "none", mail_user.username)
        async with ImapSession.open(endpoint, mail_user.password) as session:
            assert session.quirks.name == "generic"
            await session.command("CREATE", "Elsewhere", check=False)
            await session.select("INBOX")
            hostile.fault = TellWith("STATUS", b"* 1 FETCH (FLAGS (\\Flagged))\r\n")
            await session.status("INBOX", ["MESSAGES"])
            hostile.fault = None
            await session.select("Elsewhere", readonly=True)
            assert session.take_left_news("INBOX")
            assert not session.take_left_news("INBOX")  # told once
            assert not session.take_left_news("Elsewhere")

    with running_hostile("127.0.0.1", dovecot.port) as hostile:
        run_with_loop(check, hostile)


def test_news_beside_a_fetch_or_search_answer_is_kept_and_a_select_reply_tells_of_the_mailbox_left(
        dovecot, mail_user):
    """A visit's UID SEARCH or UID FETCH reply may carry news besides its own answer (an
    EXISTS, a FETCH without UID): kept for `take_selected_news`, never dropped; the
    visit's own answer is not news.  An EXPUNGE or FETCH before a SELECT's reply is news
    about the mailbox left (`take_left_news`)."""
    from tests.support.hostile_imap import TellWith, running_hostile

    async def check(hostile) -> None:
        endpoint = ImapEndpoint("127.0.0.1", hostile.port, "none", mail_user.username)
        async with ImapSession.open(endpoint, mail_user.password) as session:
            await session.command("CREATE", "Elsewhere", check=False)
            await session.select("INBOX")
            await session.uid_search("ALL")
            await session.uid_fetch("1:*", "(UID FLAGS)")
            assert not session.take_selected_news()  # their own answers
            for command, line in (("UID SEARCH", b"* 9 EXISTS\r\n"),
                                  ("UID FETCH", b"* 1 FETCH (FLAGS (\\Flagged))\r\n"),
                                  ("UID SEARCH", b"* 1 EXPUNGE\r\n")):
                hostile.fault = TellWith(command, line)
                if command == "UID SEARCH":
                    await session.uid_search("ALL")
                else:
                    await session.uid_fetch("1:*", "(UID FLAGS)")
                assert session.take_selected_news(), line
            hostile.fault = TellWith("SELECT", b"* 1 FETCH (FLAGS (\\Seen))\r\n")
            await session.select("Elsewhere")
            assert session.take_left_news("INBOX")
            assert not session.take_selected_news()  # about INBOX, not Elsewhere

    with MailboxClient(dovecot, mail_user) as client:
        client.append("INBOX", make_message(1, rng=random.Random(2)))
    with running_hostile("127.0.0.1", dovecot.port) as hostile:
        run_with_loop(check, hostile)

"""The IMAP session's own promises against Dovecot (through a proxy that can hold replies)."""

from __future__ import annotations

import pytest
import trio

from mailbridge.aio.imap import ImapEndpoint, ImapSession, quote
from mailbridge.errors import ImapCommandError
from tests.support.imap_proxy import ImapProxy


async def test_cancelled_while_idle_starts_leaves_no_idle_pending(dovecot, mail_user):
    """A stop that lands between IDLE and the server's `+ idling` ends that IDLE too.

    Otherwise the IDLE stays pending, the next command and LOGOUT queue behind it, and
    closing the session takes the whole cleanup bound (an actor's lock stays held so long).
    """
    proxy = ImapProxy("127.0.0.1", dovecot.port, stall_on="IDLE")
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        endpoint = ImapEndpoint("127.0.0.1", proxy.port, "none", mail_user.username)
        async with ImapSession.open(endpoint, mail_user.password) as session:
            await session.select("INBOX")
            with trio.CancelScope() as idle_scope:
                async def stop_while_idle_starts() -> None:
                    await proxy.stalled.wait()
                    idle_scope.cancel()
                    await trio.sleep(0.2)
                    proxy.resume()

                nursery.start_soon(stop_while_idle_starts)
                async with session.idle():
                    raise AssertionError("IDLE cannot have started: its answer was held back")
            assert idle_scope.cancelled_caught
            with trio.fail_after(2):
                assert (await session.noop()).status == "OK"  # the session is still usable
            closing = trio.current_time()
        took = trio.current_time() - closing
        assert took < 1, f"closing took {took:.1f} s"
        assert proxy.count("LOGOUT") == 1
        nursery.cancel_scope.cancel()


async def test_the_session_knows_its_selected_mailbox(dovecot, mail_user):
    """`selected` is the raw name the last successful SELECT or EXAMINE chose; nothing is
    selected before any, after a refused SELECT (RFC 3501; the server agrees), after
    UNSELECT or CLOSE, or once the session is closed."""
    endpoint = ImapEndpoint("127.0.0.1", dovecot.port, "none", mail_user.username)
    raw_name = "&AMQ-rger"  # "Ärger" in modified UTF-7: the wire name, not the decoded one
    sent: list[str] = []
    async with ImapSession.open(endpoint, mail_user.password, on_command=sent.append) as session:
        assert session.selected is None and not session.selected_readonly
        await session.command("CREATE", quote(raw_name))

        await session.select("INBOX", condstore=True)
        assert session.selected == "INBOX" and not session.selected_readonly
        await session.select(raw_name, readonly=True)
        assert session.selected == raw_name and session.selected_readonly

        with pytest.raises(ImapCommandError):
            await session.select("No such folder")
        assert session.selected is None and not session.selected_readonly
        assert (await session.command("CHECK", check=False)).status != "OK"  # "no mailbox selected"

        await session.select("INBOX")
        await session.unselect()
        assert session.selected is None and sent[-1] == "UNSELECT"
        await session.unselect()  # nothing selected: nothing to do
        assert sent[-1] == "UNSELECT"

        await session.select(raw_name, readonly=True)
        session.capabilities -= {"UNSELECT"}  # a server without UNSELECT: CLOSE, which expunges nothing here
        await session.unselect()
        assert session.selected is None and sent[-1] == "CLOSE"

        await session.select("INBOX")
    assert session.selected is None

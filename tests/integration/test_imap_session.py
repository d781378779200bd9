"""The IMAP session's own promises against Dovecot (through a proxy that can hold replies)."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from functools import partial
from typing import AsyncIterator, Callable

import pytest
import trio

from mailbridge.aio.imap import ImapEndpoint, ImapSession, quote
from mailbridge.errors import (
    ImapAuthError,
    ImapCommandError,
    ImapProtocolError,
    ImapResponseTooLarge,
    ImapThrottled,
    ImapUnavailable,
    UnusableMailboxName,
)
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


# --- servers that misbehave: each fails its own session with a typed error, in bounded time ---

PASSWORD = 'Zq9p "wi7h" \\Xk7q'
CAPS = b"* CAPABILITY IMAP4rev1 IDLE UNSELECT\r\n"
Reply = Callable[[bytes, bytes], bytes]  # (tag, command line) -> what the server answers
_DEFAULTS: dict[str, Reply] = {
    "CAPABILITY": lambda tag, _: CAPS + tag + b" OK done\r\n",
    "LOGIN": lambda tag, _: tag + b" OK logged in\r\n",
    "NOOP": lambda tag, _: tag + b" OK done\r\n",
    "SELECT": lambda tag, _: b"* 1 EXISTS\r\n* OK [UIDVALIDITY 7] x\r\n" + tag + b" OK [READ-WRITE] done\r\n",
    "LOGOUT": lambda tag, _: b"* BYE bye\r\n" + tag + b" OK done\r\n",
}


@asynccontextmanager
async def scripted_server(greeting: bytes, replies: dict[str, Reply] | None = None,
                          log: list[bytes] | None = None) -> AsyncIterator[int]:
    """A one-purpose IMAP peer on 127.0.0.1 (its port) that greets with `greeting` and
    answers each command with `replies` (else a plain OK); it closes after LOGOUT."""
    answers = {**_DEFAULTS, **(replies or {})}

    async def handle(stream: trio.SocketStream) -> None:
        buffer = b""
        try:
            await stream.send_all(greeting)
            while True:
                while b"\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                line, _, buffer = buffer.partition(b"\r\n")
                if log is not None:
                    log.append(line)
                tag, _, rest = line.partition(b" ")
                words = rest.split(b" ")
                name = (b" ".join(words[:2]) if words[0].upper() == b"UID" else words[0]).decode().upper()
                await stream.send_all(answers.get(name, lambda t, _: t + b" OK done\r\n")(tag, line))
                if name == "LOGOUT":
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


def _endpoint(port: int) -> ImapEndpoint:
    return ImapEndpoint("127.0.0.1", port, "none", "ann")


@pytest.mark.parametrize(("greeting", "replies", "error_type", "words"), [
    (b"* BYE too many connections\r\n", None, ImapUnavailable, "refused the connection (BYE too many connections)"),
    (b"SSH-2.0-OpenSSH_9.6\r\n", None, ImapProtocolError, "did not greet as an IMAP server (it said 'SSH-2.0-"),
    (b"220 mx.example.org ESMTP Postfix\r\n", None, ImapProtocolError, "check the host and port (993"),
    (b"* OK hi\r\n", {"CAPABILITY": lambda tag, _: b"* CAPABILITY SMTPUTF8\r\n" + tag + b" OK done\r\n"},
     ImapProtocolError, "does not offer IMAP4rev1"),
    (b"* OK hi\r\n", {"LOGIN": lambda tag, _: b"XY99 OK logged in\r\n"},
     ImapProtocolError, "answered with tag 'XY99'"),
    (b"* OK hi\r\n", {"LOGIN": lambda tag, _: tag + b" NO [UNAVAILABLE] backend down\r\n"},
     ImapUnavailable, "refused LOGIN ([UNAVAILABLE] backend down)"),
    (b"* OK hi\r\n", {"LOGIN": lambda tag, _: tag + b" NO Request is throttled. Suggested Backoff Time: 2500 milliseconds\r\n"},
     ImapThrottled, "throttles us"),
])
async def test_a_misbehaving_server_fails_its_session_with_a_typed_error(
        greeting, replies, error_type, words, dovecot, mail_user, caplog):
    caplog.set_level(logging.DEBUG)
    async with scripted_server(greeting, replies) as port:
        with trio.fail_after(5):
            with pytest.raises(error_type) as caught:
                async with ImapSession.open(_endpoint(port), PASSWORD, connect_timeout=3, timeout=3):
                    raise AssertionError("the session cannot have opened")
    error = caught.value
    assert words in str(error), str(error)
    assert str(error).startswith("127.0.0.1:") and "\n" not in str(error)
    if isinstance(error, ImapThrottled):
        assert error.retry_after == 2.5
    if isinstance(error, ImapUnavailable):
        assert error.reason_code in ("TOOMANYCONNECTIONS", "UNAVAILABLE")
    for text in [str(error), *(r.getMessage() for r in caplog.records)]:
        assert "Zq9p" not in text and "wi7h" not in text and "Xk7q" not in text, text
    # the process is unharmed: a session to the real server works
    async with ImapSession.open(ImapEndpoint("127.0.0.1", dovecot.port, "none", mail_user.username),
                                mail_user.password) as session:
        assert (await session.noop()).status == "OK"


async def test_login_refusals_carry_their_rfc5530_code():
    replies = {"LOGIN": lambda tag, _: tag + b" NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"}
    async with scripted_server(b"* OK hi\r\n", replies) as port:
        with pytest.raises(ImapAuthError) as caught:
            async with ImapSession.open(_endpoint(port), PASSWORD, connect_timeout=3, timeout=3):
                pass
    assert caught.value.code == "AUTHENTICATIONFAILED"


async def test_a_throttled_command_waits_and_the_session_stays_usable():
    answered = 0

    def noop(tag: bytes, _: bytes) -> bytes:
        nonlocal answered
        answered += 1
        if answered == 1:
            return tag + b" NO Request is throttled. Suggested Backoff Time: 1500 milliseconds\r\n"
        return tag + b" OK done\r\n"

    replies = {"NOOP": noop, "SELECT": lambda tag, _: tag + b" NO [LIMIT] too many folders open\r\n"}
    async with scripted_server(b"* OK hi\r\n", replies) as port:
        async with ImapSession.open(_endpoint(port), PASSWORD, connect_timeout=3, timeout=3) as session:
            with pytest.raises(ImapThrottled) as caught:
                await session.noop()
            assert caught.value.retry_after == 1.5 and caught.value.command == "NOOP"
            throttled_at = trio.current_time()
            assert (await session.noop()).status == "OK"
            assert trio.current_time() - throttled_at >= 1.4  # the next command waited for the hint
            with pytest.raises(ImapCommandError) as refused:
                await session.select("INBOX")
            assert refused.value.code == "LIMIT" and refused.value.status == "NO"
            assert (await session.noop()).status == "OK"


async def test_an_endless_line_ends_the_connection_within_a_bound(dovecot, mail_user):
    endless = b"* 1 FETCH (UID 1 X " + b"x" * (3 << 20)
    async with scripted_server(b"* OK hi\r\n", {"NOOP": lambda tag, _: endless}) as port:
        async with ImapSession.open(_endpoint(port), PASSWORD, connect_timeout=3, timeout=3) as session:
            with trio.fail_after(5):
                with pytest.raises(ImapResponseTooLarge) as caught:
                    await session.noop()
            assert "sent a line over 1048576 bytes" in str(caught.value)
            assert session.closed or session._lost
    async with ImapSession.open(ImapEndpoint("127.0.0.1", dovecot.port, "none", mail_user.username),
                                mail_user.password) as session:
        assert (await session.noop()).status == "OK"


async def test_a_huge_literal_is_refused_before_it_is_read_or_cut_in_a_header_fetch():
    header = b"Subject: " + b"s" * (2 << 20) + b"\r\n\r\n"

    def fetch(tag: bytes, line: bytes) -> bytes:
        if b"BODY.PEEK[]" in line:  # a body: announced as 10 GB, never sent
            return b"* 1 FETCH (UID 1 BODY[] {10000000000}\r\n"
        return (b"* 1 FETCH (UID 1 BODY[HEADER] {%d}\r\n" % len(header) + header + b")\r\n"
                + tag + b" OK done\r\n")

    async with scripted_server(b"* OK hi\r\n", {"UID FETCH": fetch}) as port:
        async with ImapSession.open(_endpoint(port), PASSWORD, connect_timeout=3, timeout=3) as session:
            await session.select("INBOX")
            with trio.fail_after(5):
                response = await session.uid_fetch("1", "(UID BODY.PEEK[HEADER])")
            assert response.cut_literals == 1 and len(response.lines[1]) == 1 << 20
            with trio.fail_after(5):
                with pytest.raises(ImapResponseTooLarge) as caught:
                    await session.uid_fetch("1", "(UID BODY.PEEK[])", max_literal=1000)
            assert "announced a message body (MAILBRIDGE_BODY_MAX_BYTES) of 10000000000 bytes" in str(caught.value)


async def test_a_mailbox_name_with_a_line_break_is_refused_before_anything_is_sent():
    sent: list[bytes] = []
    async with scripted_server(b"* OK hi\r\n", log=sent) as port:
        async with ImapSession.open(_endpoint(port), PASSWORD, connect_timeout=3, timeout=3) as session:
            for name in ("Bad\r\nA1 DELETE INBOX", "nul\x00", "lf\n"):
                with pytest.raises(UnusableMailboxName) as caught:
                    await session.select(name)
                assert caught.value.name == name and isinstance(caught.value, ImapCommandError)
                with pytest.raises(UnusableMailboxName):
                    await session.status(name, ["MESSAGES"])
            assert (await session.noop()).status == "OK"
    assert not any(b"DELETE" in line or b"Bad" in line for line in sent)


async def test_a_bye_mid_command_fails_it_at_once_with_its_reason():
    async with scripted_server(b"* OK hi\r\n", {"NOOP": lambda tag, _: b"* BYE [UNAVAILABLE] shutting down\r\n"}) as port:
        async with ImapSession.open(_endpoint(port), PASSWORD, connect_timeout=3, timeout=3) as session:
            with trio.fail_after(5):
                with pytest.raises(ImapUnavailable) as caught:
                    # the peer keeps the socket open after its BYE: the command's bound ends it
                    await session.noop()
            assert caught.value.reason_code == "UNAVAILABLE"


def test_news_about_the_selected_mailbox_in_a_status_reply_is_not_lost(dovecot, mail_user):
    """A server that tells the selected mailbox's news with whatever command completes
    next (Dovecot waits for a NOOP; others do not): after a STATUS carried it, a NOOP says
    nothing, so the session remembers it for the caller."""
    from mailbridge.aio.loop import run as run_with_loop
    from tests.support.hostile_imap import TellWith, running_hostile

    with running_hostile("127.0.0.1", dovecot.port) as hostile:
        run_with_loop(_news_with_status, hostile, mail_user, TellWith)


async def _news_with_status(hostile, mail_user, TellWith) -> None:
    endpoint = ImapEndpoint("127.0.0.1", hostile.port, "none", mail_user.username)
    async with ImapSession.open(endpoint, mail_user.password) as session:
        await session.select("INBOX")
        assert not session.take_selected_news()
        hostile.fault = TellWith("STATUS", b"* 99 EXISTS\r\n")
        await session.status("INBOX", ["MESSAGES"])
        assert session.take_selected_news()
        assert not session.take_selected_news()  # told once
        await session.select("INBOX")
        assert not session.take_selected_news()

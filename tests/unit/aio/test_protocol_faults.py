"""What a server sends can fail one connection, never the process (`_imapproto`, `loop`).

Pure: the protocol is fed bytes on a private asyncio loop with a recording transport.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import pytest
import trio
from aioimaplib import aioimaplib as aio

from mailbridge.aio import loop as seam_loop
from mailbridge.aio._imapproto import HEADER_LITERAL_MAX, LINE_MAX, LinearFetchCommand, LinearProtocol
from mailbridge.aio.redact import holding, redact
from mailbridge.errors import ImapProtocolError, ImapResponseTooLarge, ImapUnavailable

PASSWORD = 'c0rrect "horse" battery'


class Transport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


def protocol(loop: asyncio.AbstractEventLoop, state: str = aio.SELECTED) -> tuple[LinearProtocol, Transport]:
    proto = LinearProtocol(loop)
    proto.where = "imap.example.org:993 (tls)"
    transport = Transport()
    proto.connection_made(transport)
    proto.state = state
    return proto, transport


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def feed(proto: LinearProtocol, data: bytes, chunk: int) -> None:
    for start in range(0, len(data), chunk):
        proto.data_received(data[start:start + chunk])  # never raises, whatever the data


def pending_fetch(proto: LinearProtocol, loop) -> LinearFetchCommand:
    cmd = LinearFetchCommand("A1", "1:*", "(UID BODY.PEEK[HEADER])", prefix="UID", loop=loop)
    proto.pending_async_commands["FETCH"] = cmd
    return cmd


# --- the greeting ----------------------------------------------------------------------------


@pytest.mark.parametrize(("greeting", "error_type", "words"), [
    (b"* BYE too many connections\r\n", ImapUnavailable, "refused the connection (BYE too many connections)"),
    (b"* BYE [UNAVAILABLE] down for maintenance\r\n", ImapUnavailable, "mailbridge retries later"),
    (b"SSH-2.0-OpenSSH_9.6\r\n", ImapProtocolError, "did not greet as an IMAP server (it said 'SSH-2.0-OpenSSH_9.6')"),
    (b"220 mx.example.org ESMTP ready\r\n", ImapProtocolError, "check the host and port"),
    (b"\x16\x03\x01\x00\xa5\x01\x00\r\n", ImapProtocolError, "did not greet as an IMAP server"),
])
def test_a_bad_greeting_fails_the_greeting_and_drops_only_that_connection(loop, greeting, error_type, words):
    proto, transport = protocol(loop, aio.CONNECTED)
    proto.data_received(greeting)
    assert transport.aborted
    error = proto.greeted.exception()
    assert type(error) is error_type and words in str(error)
    assert str(error).startswith("imap.example.org:993 (tls) ")
    proto.data_received(b"* OK more\r\n")  # after the failure: ignored
    if error_type is ImapUnavailable:
        assert error.reason_code in ("TOOMANYCONNECTIONS", "UNAVAILABLE")


def test_a_capability_without_imap4rev1_fails_the_greeting(loop):
    proto, transport = protocol(loop, aio.CONNECTED)

    async def scenario() -> BaseException | None:
        proto.data_received(b"* OK ready\r\n")
        await asyncio.sleep(0)  # the CAPABILITY goes out
        tag = bytes(transport.written).split(b" ")[0]
        proto.data_received(b"* CAPABILITY IDLE NAMESPACE\r\n" + tag + b" OK done\r\n")
        try:
            await asyncio.wait_for(proto.greeted, 1)
        except Exception as exc:
            return exc
        return None

    error = loop.run_until_complete(scenario())
    assert isinstance(error, ImapProtocolError)
    assert "does not offer IMAP4rev1" in str(error) and transport.aborted


def test_a_good_greeting_and_capability(loop):
    proto, transport = protocol(loop, aio.CONNECTED)

    async def scenario() -> None:
        proto.data_received(b"* OK [CAPABILITY IMAP4rev1] ready\r\n")
        await asyncio.sleep(0)
        tag = bytes(transport.written).split(b" ")[0]
        proto.data_received(b"* CAPABILITY IMAP4rev1 IDLE\r\n" + tag + b" OK done\r\n")
        await asyncio.wait_for(proto.greeted, 1)

    loop.run_until_complete(scenario())
    assert proto.state == aio.NONAUTH and proto.capabilities == {"IMAP4rev1", "IDLE"} and not transport.aborted


def test_a_connection_closed_before_greeting_fails_the_greeting(loop):
    proto, _ = protocol(loop, aio.CONNECTED)
    proto.connection_lost(None)
    assert "closed the connection before greeting" in str(proto.greeted.exception())


# --- wrong tags, LOGIN and the password -------------------------------------------------------


def test_a_wrong_tag_during_login_fails_login_without_showing_the_password(loop, caplog):
    caplog.set_level(logging.DEBUG)
    proto, transport = protocol(loop, aio.NONAUTH)

    async def scenario() -> BaseException:
        login = asyncio.ensure_future(proto.login("ann", PASSWORD))
        await asyncio.sleep(0)
        assert repr(proto.pending_sync_command).endswith("LOGIN ann ***")
        assert PASSWORD not in str(proto.pending_sync_command)
        proto.data_received(b"ZZZ9 OK welcome\r\n")
        with pytest.raises(ImapProtocolError) as caught:
            await asyncio.wait_for(login, 1)
        return caught.value

    error = loop.run_until_complete(scenario())
    assert "answered with tag 'ZZZ9'" in str(error) and "check the host and port" in str(error)
    assert transport.aborted
    assert b'LOGIN ann "c0rrect \\"horse\\" battery"\r\n' in transport.written  # the wire has it
    quoted = aio.quoted(PASSWORD)
    for text in [str(error), repr(error), *(r.getMessage() for r in caplog.records)]:
        assert PASSWORD not in text and quoted not in text and "horse" not in text


def test_redact_hides_login_arguments_and_open_sessions_secrets():
    text = 'unexpected tagged response with pending sync command (DKAB3 LOGIN ann "p\\"w d") response: x'
    assert redact(text) == "unexpected tagged response with pending sync command (DKAB3 LOGIN ann ***) response: x"
    assert redact("ABC12 AUTHENTICATE PLAIN AGFubgBzZWNyZXQ=") == "ABC12 AUTHENTICATE PLAIN ***"
    assert redact("LOGIN got no answer from h in 60 s") == "LOGIN got no answer from h in 60 s"
    with holding("hunter22"):
        assert redact("x hunter22 y \"hunter22\"") == "x *** y ***"
    assert redact("x hunter22") == "x hunter22"  # only while a session holds it
    assert redact("a secret here", "secret") == "a *** here"


# --- bounds ------------------------------------------------------------------------------------


def test_an_endless_line_ends_the_connection_at_the_line_bound(loop):
    proto, transport = protocol(loop)
    cmd = pending_fetch(proto, loop)
    feed(proto, b"* 1 FETCH (UID 1 X " + b"x" * (LINE_MAX + 1000), 65536)
    assert transport.aborted and cmd._event.is_set()
    assert isinstance(cmd._exception, ImapResponseTooLarge)
    assert f"sent a line over {LINE_MAX} bytes" in str(cmd._exception)
    assert len(proto._partial) == 0  # nothing kept


def test_a_long_line_in_small_chunks_is_scanned_once(loop):
    proto, transport = protocol(loop)
    cmd = pending_fetch(proto, loop)
    line = b"* 1 FETCH (UID 1 X-LONG \"" + b"y" * (LINE_MAX - 100) + b"\")\r\nA1 OK done\r\n"
    started = time.perf_counter()
    feed(proto, line, 64)  # ~16,000 chunks: a re-copy and re-scan per chunk takes minutes
    took = time.perf_counter() - started
    assert cmd._event.is_set() and cmd._exception is None and not transport.aborted
    assert bytes(cmd._resp_lines[0]) == line.split(b"\r\n")[0][2:]
    assert took < 2.0, f"{took:.1f} s"


@pytest.mark.parametrize("chunk", [1 << 16, 4093])
def test_a_huge_header_literal_is_cut_and_the_rest_of_the_response_read(loop, chunk):
    proto, transport = protocol(loop)
    cmd = pending_fetch(proto, loop)
    size = HEADER_LITERAL_MAX * 2 + 17
    data = (b"* 1 FETCH (UID 7 BODY[HEADER] {%d}\r\n" % size + b"h" * size + b" FLAGS (\\Seen))\r\n"
            b"* 2 FETCH (UID 8 BODY[HEADER] {5}\r\nabcde FLAGS ())\r\nA1 OK done\r\n")
    feed(proto, data, chunk)
    assert cmd._exception is None and not transport.aborted
    lines = cmd._resp_lines
    assert len(lines[1]) == HEADER_LITERAL_MAX and bytes(lines[2]) == b" FLAGS (\\Seen))"
    assert bytes(lines[4]) == b"abcde" and proto.cut_literals == 1


def test_a_cut_literal_on_the_generic_path(loop):
    proto, transport = protocol(loop)
    cmd = aio.Command("LIST", "A1", '""', '"*"', loop=loop)
    proto.pending_sync_command = cmd
    size = HEADER_LITERAL_MAX + 10
    data = b'* LIST () "/" {%d}\r\n' % size + b"n" * size + b"\r\n* LIST () \"/\" INBOX\r\nA1 OK done\r\n"
    feed(proto, data, 50_000)
    assert cmd._event.is_set() and cmd._exception is None and not transport.aborted
    assert [len(x) if isinstance(x, bytearray) else bytes(x) for x in cmd._resp_lines] == [
        b'LIST () "/" {%d}' % size, HEADER_LITERAL_MAX, b'LIST () "/" INBOX', b"done"]


def test_a_literal_over_a_hard_bound_ends_the_connection_before_it_is_read(loop):
    proto, transport = protocol(loop)
    cmd = pending_fetch(proto, loop)
    proto.literal_limit, proto.literal_cut, proto.literal_what = 1000, False, "a message body (MAILBRIDGE_BODY_MAX_BYTES)"
    proto.data_received(b"* 1 FETCH (UID 7 BODY[] {5000000000}\r\n")
    assert transport.aborted and isinstance(cmd._exception, ImapResponseTooLarge)
    assert str(cmd._exception) == ("imap.example.org:993 (tls) announced a message body (MAILBRIDGE_BODY_MAX_BYTES) "
                                   "of 5000000000 bytes, over the limit of 1000 bytes; the connection was dropped "
                                   "before reading it")


def test_garbage_never_raises_out_of_the_protocol(loop):
    import random

    rng = random.Random(5)
    for _ in range(200):
        proto, _ = protocol(loop, rng.choice([aio.CONNECTED, aio.NONAUTH, aio.SELECTED]))
        if rng.random() < 0.5:
            pending_fetch(proto, loop)
        blob = bytes(rng.choice(b"* {}()\r\n0123456789ABOKNOBYEFETCH \"\\x") for _ in range(rng.randint(1, 400)))
        feed(proto, blob, rng.randint(1, 50))


# --- the asyncio loop --------------------------------------------------------------------------


def test_errors_nothing_awaits_are_logged_redacted_and_the_process_goes_on(caplog):
    caplog.set_level(logging.DEBUG)

    async def main() -> str:
        with holding(PASSWORD):
            async def unawaited() -> None:
                raise aio.Abort(f"pending sync command (AB1 LOGIN ann {aio.quoted(PASSWORD)})")

            async def schedule() -> None:
                running = asyncio.get_running_loop()
                running.call_soon(lambda: 1 / 0)
                running.create_task(unawaited())
                await asyncio.sleep(0.01)

            await seam_loop.call(schedule)
            gc.collect()  # the task's unretrieved exception is reported when it is collected
            await trio.sleep(0.05)
        return "still running"

    assert seam_loop.run(main) == "still running"
    messages = [r.getMessage() for r in caplog.records if r.name == "mailbridge.aio"]
    assert any("ZeroDivisionError" in m for m in messages)
    for message in (r.getMessage() for r in caplog.records):
        assert "horse" not in message

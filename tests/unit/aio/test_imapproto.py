"""aioimaplib's response handling, made linear inside the seam (`_imapproto`).

Cost is counted, not timed: the number of Python-level calls the protocol makes while
it digests a FETCH response of n messages (a deterministic measure).  The shipped
protocol grows ~n²; ours grows ~n.  Both must produce the same response lines.
"""

from __future__ import annotations

import asyncio
import sys

from aioimaplib import aioimaplib as aio

from mailbridge.aio._imapproto import LinearFetchCommand, LinearProtocol

HEADER = (b"Message-ID: <m{i}@example.com>\r\nSubject: Message (number) {i}\r\n"
          b"From: Someone <someone{i}@example.com>\r\nTo: you@example.com\r\n"
          b"Date: Mon, 02 Oct 2023 10:00:00 +0000\r\n\r\n")


def fetch_response(n: int, tag: bytes = b"A1") -> bytes:
    out = bytearray()
    for i in range(1, n + 1):
        header = HEADER.replace(b"{i}", str(i).encode())
        out += (b"* %d FETCH (UID %d FLAGS (\\Seen) RFC822.SIZE 1234 "
                b"BODY[HEADER.FIELDS (MESSAGE-ID SUBJECT FROM TO DATE)] {%d}\r\n" % (i, i * 3, len(header)))
        out += header + b" MODSEQ (%d))\r\n" % (i + 10)
    out += tag + b" OK Fetch completed.\r\n"
    return bytes(out)


class _Transport:
    def write(self, data):  # pragma: no cover - nothing is sent in these tests
        pass

    def is_closing(self):
        return False


def digest(protocol_cls, command_cls, data: bytes, *, chunk: int = 65536, count_calls: bool = False):
    loop = asyncio.new_event_loop()
    try:
        proto = protocol_cls(loop)
        proto.connection_made(_Transport())
        proto.state = aio.SELECTED
        cmd = command_cls("A1", "1:*", "(UID FLAGS)", prefix="UID", loop=loop)
        proto.pending_async_commands["FETCH"] = cmd
        calls = 0

        def profiler(frame, event, arg):
            nonlocal calls
            if event in ("call", "c_call"):
                calls += 1

        if count_calls:
            sys.setprofile(profiler)
        try:
            for start in range(0, len(data), chunk):
                proto.data_received(data[start:start + chunk])
        finally:
            sys.setprofile(None)
        assert cmd._event.is_set(), "the command did not complete"
        return cmd.response, calls
    finally:
        loop.close()


def original_fetch_command(tag, *args, **kwargs):
    return aio.FetchCommand(tag, *args, **kwargs)


def test_same_lines_as_aioimaplib_for_every_chunking():
    data = fetch_response(40)
    expected, _ = digest(aio.IMAP4ClientProtocol, original_fetch_command, data)
    for chunk in (1, 7, 64, 333, 4096, len(data)):
        ours, _ = digest(LinearProtocol, LinearFetchCommand, data, chunk=chunk)
        assert ours.result == expected.result == "OK"
        assert [bytes(x) for x in ours.lines] == [bytes(x) for x in expected.lines]
    literals = [x for x in expected.lines if isinstance(x, bytearray)]
    assert len(literals) == 40 and literals[0].startswith(b"Message-ID: <m1@")


def test_fetch_cost_grows_linearly():
    small, large = 500, 2000
    _, ours_small = digest(LinearProtocol, LinearFetchCommand, fetch_response(small), count_calls=True)
    _, ours_large = digest(LinearProtocol, LinearFetchCommand, fetch_response(large), count_calls=True)
    ratio = ours_large / ours_small
    assert 3.5 < ratio < 4.5, f"4x the messages cost {ratio:.1f}x the calls"


def test_the_shipped_protocol_is_quadratic():
    # the reason for _imapproto: prove the measure would catch a regression
    small, large = 150, 600
    _, small_calls = digest(aio.IMAP4ClientProtocol, original_fetch_command, fetch_response(small), count_calls=True)
    _, large_calls = digest(aio.IMAP4ClientProtocol, original_fetch_command, fetch_response(large), count_calls=True)
    assert large_calls / small_calls > 10


def test_literal_split_across_chunks_and_zero_length_literal():
    data = (b"* 1 FETCH (UID 5 BODY[HEADER.FIELDS (SUBJECT)] {0}\r\n)\r\n"
            b"* 2 FETCH (UID 6 BODY[HEADER.FIELDS (SUBJECT)] {10}\r\nSubject: x)\r\n"
            b"A1 OK done\r\n")
    for chunk in (1, 2, 3, 5, len(data)):
        response, _ = digest(LinearProtocol, LinearFetchCommand, data, chunk=chunk)
        lines = [bytes(x) for x in response.lines]
        assert lines == [b"1 FETCH (UID 5 BODY[HEADER.FIELDS (SUBJECT)] {0}", b"", b")",
                         b"2 FETCH (UID 6 BODY[HEADER.FIELDS (SUBJECT)] {10}", b"Subject: x", b")",
                         b"done"]


def test_unclaimed_untagged_responses_reach_the_single_pending_command():
    data = (b"* VANISHED (EARLIER) 1:3,7\r\n* 4 FETCH (UID 9 FLAGS (\\Seen) MODSEQ (12))\r\n"
            b"* 3 EXISTS\r\nA1 OK done\r\n")
    response, _ = digest(LinearProtocol, LinearFetchCommand, data)
    assert [bytes(x) for x in response.lines] == [
        b"VANISHED (EARLIER) 1:3,7", b"4 FETCH (UID 9 FLAGS (\\Seen) MODSEQ (12))", b"3 EXISTS", b"done"]


def test_only_the_leading_star_is_stripped():
    data = b'* 1 FETCH (UID 2 X-GM-LABELS ("* important"))\r\nA1 OK done\r\n'
    response, _ = digest(LinearProtocol, LinearFetchCommand, data)
    assert bytes(response.lines[0]) == b'1 FETCH (UID 2 X-GM-LABELS ("* important"))'

"""News about the selected mailbox among a FETCH's, SEARCH's or SELECT's own answer."""

from __future__ import annotations

from mailbridge.aio.imap import _STRAY_NEWS_CARRIERS, _stray_news


def test_news_beside_a_commands_own_answer():
    own = [b"3 FETCH (UID 7 FLAGS (\\Seen))", b"SEARCH 1 2 3", b"4 FETCH (FLAGS (\\Seen) UID 8)",
           b"5 FETCH (UID 9 BODY[HEADER.FIELDS (SUBJECT)] {20}", bytearray(b"Subject: x\r\n\r\n"),
           b"VANISHED (EARLIER) 3:4", "OK done"]
    assert not _stray_news(own)
    for stray in (b"12 EXISTS", b"3 EXPUNGE", b"7 FETCH (FLAGS (\\Flagged))", b"VANISHED 5",
                  b"2 fetch (flags ())"):
        assert _stray_news(own + [stray]), stray
    # a SELECT's own EXISTS is its answer; an EXPUNGE or FETCH before it is about the mailbox left
    assert not _stray_news([b"5 EXISTS", b"0 RECENT", b"FLAGS (\\Seen)"], exists=False)
    assert _stray_news([b"2 EXPUNGE", b"4 EXISTS"], exists=False)
    assert _stray_news([b"3 FETCH (FLAGS (\\Seen))", b"4 EXISTS"], exists=False)


def test_the_commands_a_visit_or_a_write_sends_carry_stray_news():
    # a visit's FETCH and SEARCH; the API's write-back's STORE (its own FETCH replies name
    # their UID) and COPY (no answer of its own)
    assert {"FETCH", "SEARCH", "STORE", "COPY"} == _STRAY_NEWS_CARRIERS

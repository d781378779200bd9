"""News about the selected mailbox in replies that do not carry it to their caller."""

from __future__ import annotations

from mailbridge.aio.imap import _NEWS_CARRIERS, _SELECTED_NEWS


def test_what_counts_as_news_about_the_selected_mailbox():
    for line in (b"12 EXISTS", b"3 EXPUNGE", b"7 FETCH (FLAGS (\\Seen))", b"VANISHED 4:6", b"vanished (EARLIER) 3"):
        assert _SELECTED_NEWS.match(line), line
    for line in (b"STATUS INBOX (MESSAGES 3)", b'LIST () "." INBOX', b"OK Still here", b"3 RECENT",
                 b"FLAGS (\\Seen)", b"CAPABILITY IMAP4rev1"):
        assert not _SELECTED_NEWS.match(line), line


def test_the_selected_mailbox_commands_are_not_carriers():
    # their callers read what they return; counting it as news would visit after every visit
    assert not {"FETCH", "SEARCH", "STORE", "EXPUNGE", "SELECT", "EXAMINE", "NOOP"} & _NEWS_CARRIERS
    assert {"LIST", "STATUS"} <= _NEWS_CARRIERS

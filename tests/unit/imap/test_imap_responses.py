"""SELECT, LIST, STATUS, SEARCH, VANISHED, CAPABILITY, body FETCH and IDLE pushes."""

from __future__ import annotations

from array import array

import pytest
from imap_wire import lines_from_wire, literal

from mailbridge.errors import ImapProtocolError
from mailbridge.imap.models import FlagUpdate, ListEntry, SelectInfo, ServerPush, StatusInfo
from mailbridge.imap.fetch import parse_body_fetch
from mailbridge.imap.responses import (
    parse_capabilities,
    parse_exists_expunge,
    parse_list,
    parse_search,
    parse_select,
    parse_status,
    parse_vanished,
)

# --- SELECT / EXAMINE ------------------------------------------------------------------

DOVECOT_SELECT = (
    b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded Junk)\r\n"
    b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded Junk \\*)] Flags permitted.\r\n"
    b"* 172 EXISTS\r\n"
    b"* 1 RECENT\r\n"
    b"* OK [UNSEEN 12] First unseen.\r\n"
    b"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"
    b"* OK [UIDNEXT 4392] Predicted next UID\r\n"
    b"* OK [HIGHESTMODSEQ 715194045007] Highest\r\n"
    b"A001 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).\r\n"
)


def test_select_dovecot():
    info = parse_select(lines_from_wire(DOVECOT_SELECT))
    assert info == SelectInfo(
        exists=172, uidvalidity=3857529045, uidnext=4392, highestmodseq=715194045007, nomodseq=False,
        flags=("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "$Forwarded", "Junk"),
        permanent_flags=("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "$Forwarded", "Junk", "\\*"),
        vanished=(), read_only=False)


def test_examine_gmail_read_only_nomodseq():
    wire = (b"* FLAGS (\\Answered \\Flagged \\Draft \\Deleted \\Seen $NotPhishing $Phishing)\r\n"
            b"* OK [PERMANENTFLAGS ()] Flags permitted.\r\n"
            b"* OK [UIDVALIDITY 1] UIDs valid.\r\n"
            b"* 0 EXISTS\r\n* 0 RECENT\r\n"
            b"* OK [UIDNEXT 1] Predicted next UID.\r\n"
            b"* OK [NOMODSEQ] No permanent modsequences\r\n"
            b"A001 OK [READ-ONLY] [Gmail]/All Mail selected. (Success)\r\n")
    info = parse_select(lines_from_wire(wire, completion=True))
    assert (info.exists, info.uidvalidity, info.uidnext, info.highestmodseq) == (0, 1, 1, None)
    assert info.nomodseq and info.read_only and info.permanent_flags == ()


def test_select_qresync_with_vanished_and_fetches_after_closed():
    wire = (b"* 3 EXPUNGE\r\n"  # the previous mailbox, before [CLOSED]
            b"* OK [CLOSED] Previous mailbox closed.\r\n"
            b"* 314 EXISTS\r\n"
            b"* OK [UIDVALIDITY 67890007] UIDVALIDITY\r\n"
            b"* OK [UIDNEXT 567] Predicted next UID\r\n"
            b"* OK [HIGHESTMODSEQ 90060115205545359] Highest mailbox mod-sequence\r\n"
            b"* VANISHED (EARLIER) 41,43:116,118,120:211,214:540\r\n"
            b"* 49 FETCH (UID 117 FLAGS (\\Seen \\Answered) MODSEQ (90060115194045001))\r\n"
            b"* 50 FETCH (UID 119 FLAGS (\\Draft $MDNSent) MODSEQ (90060115194045308))\r\n"
            b"A001 OK [READ-WRITE] mailbox selected\r\n")
    info = parse_select(lines_from_wire(wire))
    assert info.exists == 314 and info.highestmodseq == 90060115205545359
    assert info.vanished[:3] == (41, 43, 44) and len(info.vanished) == 1 + 74 + 1 + 92 + 327
    assert info.flag_updates == (FlagUpdate(117, ("\\Seen", "\\Answered"), 90060115194045001),
                                 FlagUpdate(119, ("\\Draft", "$MDNSent"), 90060115194045308))


def test_select_without_codes():
    info = parse_select([b"2 EXISTS", b"FLAGS ()", b"Select completed."])
    assert info == SelectInfo(exists=2)


def test_select_bad_uidvalidity_raises():
    with pytest.raises(ImapProtocolError):
        parse_select([b"OK [UIDVALIDITY abc] x", b"done"])


# --- LIST ------------------------------------------------------------------------------


def entry(lines):
    (e,) = parse_list(lines)
    return e


def test_list_dovecot_and_special_use():
    wire = (b'* LIST (\\HasNoChildren) "." INBOX\r\n'
            b'* LIST (\\HasNoChildren \\Sent) "." Sent\r\n'
            b'* LIST (\\HasChildren \\Noselect) "." Lists\r\n'
            b'* LIST (\\HasNoChildren) "." "Lists.python-dev"\r\n'
            b'* LIST (\\HasNoChildren \\UnMarked \\Junk) "." "Spam Folder"\r\n'
            b'* LIST (\\HasNoChildren) "." "Reise &- Urlaub.&ZeVnLIqe-"\r\n'
            b"A001 OK List completed (0.001 + 0.000 secs).\r\n")
    entries = parse_list(lines_from_wire(wire))
    assert [e.name for e in entries] == ["INBOX", "Sent", "Lists", "Lists.python-dev", "Spam Folder",
                                         "Reise & Urlaub.日本語"]
    assert entries[5].raw_name == "Reise &- Urlaub.&ZeVnLIqe-"
    assert [e.special_use for e in entries] == [None, "\\Sent", None, None, "\\Junk", None]
    assert [e.selectable for e in entries] == [True, True, False, True, True, True]
    assert entries[0] == ListEntry(flags=("\\HasNoChildren",), delimiter=".", raw_name="INBOX", name="INBOX",
                                   special_use=None, selectable=True)


def test_list_gmail():
    wire = (b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n'
            b'* LIST (\\HasChildren \\Noselect) "/" "[Gmail]"\r\n'
            b'* LIST (\\All \\HasNoChildren) "/" "[Gmail]/All Mail"\r\n'
            b'* LIST (\\Drafts \\HasNoChildren) "/" "[Gmail]/Drafts"\r\n'
            b'* LIST (\\HasNoChildren \\Important) "/" "[Gmail]/Important"\r\n'
            b'* LIST (\\HasNoChildren \\Sent) "/" "[Gmail]/Sent Mail"\r\n'
            b'* LIST (\\HasNoChildren \\Trash) "/" "[Gmail]/Trash"\r\n'
            b'* LIST (\\Flagged \\HasNoChildren) "/" "[Gmail]/Starred"\r\n'
            b"A001 OK Success\r\n")
    entries = parse_list(lines_from_wire(wire))
    assert {e.name: e.special_use for e in entries} == {
        "INBOX": None, "[Gmail]": None, "[Gmail]/All Mail": "\\All", "[Gmail]/Drafts": "\\Drafts",
        "[Gmail]/Important": None, "[Gmail]/Sent Mail": "\\Sent", "[Gmail]/Trash": "\\Trash",
        "[Gmail]/Starred": "\\Flagged"}
    assert not entries[1].selectable


def test_list_literal_names_nil_delimiter_atoms_with_brackets():
    wire = (b"* LIST () \"/\" " + literal(b"Reise \"Urlaub\" 2024") + b"\r\n"
            b"* LIST (\\NonExistent) NIL " + literal(b"Odd\\Name") + b"\r\n"
            b"* LIST (\\HasNoChildren) \"/\" [Gmail]/Drafts\r\n"
            b"* LIST (\\HasNoChildren) \"\\\\\" \"Back\\\\slash \\\"q\\\"\"\r\n"
            b"* LIST (\\Subscribed) \"/\" \"Archive/2024\" (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n"
            b"* LIST (\\HasNoChildren) \"/\" inbox\r\n"
            b"* LSUB () \".\" Sent\r\n"
            b"A001 OK done\r\n")
    lines = lines_from_wire(wire)
    assert type(lines[1]) is bytearray and lines[2].startswith(b"LIST")
    entries = parse_list(lines)
    assert [(e.raw_name, e.delimiter) for e in entries] == [
        ('Reise "Urlaub" 2024', "/"), ("Odd\\Name", None), ("[Gmail]/Drafts", "/"),
        ('Back\\slash "q"', "\\"), ("Archive/2024", "/"), ("inbox", "/"), ("Sent", ".")]
    assert not entries[1].selectable
    assert entries[5].name == "INBOX" and entries[5].raw_name == "inbox"


def test_list_non_ascii_names():
    wire = (b'* LIST (\\HasNoChildren \\Trash) "/" "Gel&APY-schte Elemente"\r\n'
            b'* LIST (\\HasNoChildren) "/" "&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-"\r\n'
            b'* LIST (\\HasNoChildren) "/" "Gr\xc3\xbc\xc3\x9fe"\r\n'  # UTF8=ACCEPT server
            b'* LIST () "/" "Broken &Ze!-"\r\n'
            b"A001 OK\r\n")
    entries = parse_list(lines_from_wire(wire))
    assert [e.name for e in entries] == ["Gelöschte Elemente", "Отправленные", "Grüße", "Broken &Ze!-"]
    assert entries[0].special_use == "\\Trash"


def test_list_ignores_others_and_raises_on_garbage():
    assert parse_list([b"OK [ALERT] hi", b"3 EXISTS", b"done"]) == []
    with pytest.raises(ImapProtocolError):
        parse_list([b'LIST (\\HasNoChildren "/" INBOX', b"done"])
    with pytest.raises(ImapProtocolError):
        parse_list([b'LIST (\\HasNoChildren) "/"', b"done"])


# --- STATUS / SEARCH / VANISHED --------------------------------------------------------


def test_status():
    wire = b'* STATUS "INBOX" (MESSAGES 231 UIDNEXT 44292 UIDVALIDITY 1 UNSEEN 0 HIGHESTMODSEQ 7)\r\nA001 OK\r\n'
    assert parse_status(lines_from_wire(wire)) == StatusInfo(231, 44292, 1, 0, 7)
    wire = b"* STATUS " + literal(b"Reise Urlaub") + b" (MESSAGES 3 UIDNEXT 4)\r\nA001 OK\r\n"
    lines = lines_from_wire(wire)
    assert lines[2] == b" (MESSAGES 3 UIDNEXT 4)"
    assert parse_status(lines) == StatusInfo(messages=3, uidnext=4)
    with pytest.raises(ImapProtocolError):
        parse_status([b"Status completed."])
    with pytest.raises(ImapProtocolError):
        parse_status([b"STATUS INBOX (MESSAGES)", b"ok"])


def test_status_picks_the_mailbox_asked_about_among_notify_pushes():
    wire = (b'* STATUS Archive (MESSAGES 9 UIDNEXT 10)\r\n'
            b'* STATUS "Reise &- Urlaub" (MESSAGES 3 UIDNEXT 4 HIGHESTMODSEQ 8)\r\nA001 OK\r\n')
    lines = lines_from_wire(wire)
    assert parse_status(lines, ("Reise &- Urlaub", "Reise & Urlaub")) == StatusInfo(3, 4, highestmodseq=8)
    assert parse_status(lines, ("Sent",)) == StatusInfo(messages=9, uidnext=10)  # none matches: the first
    assert parse_status(lines) == StatusInfo(messages=9, uidnext=10)


def test_notify_status_pushes_name_the_other_mailboxes():
    wire = (b'* STATUS Archive (MESSAGES 2 UIDNEXT 3 UNSEEN 2 HIGHESTMODSEQ 2)\r\n'
            b'* STATUS "Reise & Urlaub" (HIGHESTMODSEQ 3)\r\n'
            b'* STATUS Archive (HIGHESTMODSEQ 4)\r\n* OK Still here\r\n'
            b'* STATUS ' + literal(b"Lists.python-dev") + b' (MESSAGES 1)\r\n')
    push = parse_exists_expunge(lines_from_wire(wire))
    assert push.elsewhere == ("Archive", "Reise & Urlaub", "Lists.python-dev")
    assert not push.changed  # nothing about the selected mailbox
    assert parse_exists_expunge([b"STATUS (broken", b"3 EXISTS"]).exists == 3  # never raises


def search(lines) -> list[int]:
    found = parse_search(lines)
    assert isinstance(found, array) and found.typecode == "q"  # 8 bytes a UID
    return found.tolist()


def test_search():
    assert search(lines_from_wire(b"* SEARCH 2 84 882\r\nA001 OK\r\n")) == [2, 84, 882]
    assert search(lines_from_wire(b"* SEARCH\r\nA001 OK\r\n")) == []
    assert search([b"SEARCH 1 5 (MODSEQ 917162500)", b"ok"]) == [1, 5]
    assert search([b"search  3  1 (modseq 9) ", b"ok"]) == [3, 1]
    assert search([b"SEARCH 1", b"3 EXISTS", b"SEARCH 7", b"ok"]) == [1, 7]
    assert search([b'ESEARCH (TAG "A282") UID MIN 2 COUNT 6 ALL 1:5,7', b"ok"]) == [1, 2, 3, 4, 5, 7]
    assert search([b'ESEARCH (TAG "A283") UID ALL 9:7,1,3:4,8', b"ok"]) == [1, 3, 4, 7, 8, 9]
    assert search([b'ESEARCH (TAG "A283") UID COUNT 0', b"ok"]) == []
    assert search([b"SEARCHRES 1", b"ok"]) == []
    with pytest.raises(ImapProtocolError):
        parse_search([b"SEARCH 1 x", b"ok"])
    with pytest.raises(ImapProtocolError):
        parse_search([b"SEARCH 1 2 (MODSEQ 3) 4x", b"ok"])


def test_search_large():
    """Read a slice at a time: numbers cut by a slice boundary come out whole."""
    line = b"SEARCH " + b" ".join(b"%d" % i for i in range(1, 50_001))
    assert search([line, b"ok"]) == list(range(1, 50_001))
    assert search([line + b" (MODSEQ 77)", b"ok"]) == list(range(1, 50_001))
    assert search([b'ESEARCH (TAG "A1") UID ALL 1:1000000', b"ok"]) == list(range(1, 1_000_001))


def test_vanished():
    wire = b"* VANISHED (EARLIER) 41,43:46\r\n* 3 EXISTS\r\n* VANISHED 50\r\nA001 OK\r\n"
    assert parse_vanished(lines_from_wire(wire)) == [41, 43, 44, 45, 46, 50]
    assert parse_vanished([b"done"]) == []


# --- CAPABILITY ------------------------------------------------------------------------


def test_capabilities_all_forms():
    greeting = [b"OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN] Dovecot ready."]
    assert parse_capabilities(greeting) >= {"IMAP4REV1", "IDLE", "AUTH=PLAIN", "LITERAL+"}
    untagged = lines_from_wire(b"* CAPABILITY IMAP4rev1 condstore QRESYNC UIDPLUS MOVE\r\nA001 OK Pre-login capabilities listed.\r\n")
    assert parse_capabilities(untagged) == frozenset({"IMAP4REV1", "CONDSTORE", "QRESYNC", "UIDPLUS", "MOVE"})
    tagged = lines_from_wire(b"A001 OK [CAPABILITY IMAP4rev1 SPECIAL-USE ESEARCH] Logged in\r\n", completion=True)
    assert parse_capabilities(tagged) == frozenset({"IMAP4REV1", "SPECIAL-USE", "ESEARCH"})
    assert parse_capabilities([b"Logged in"]) == frozenset()


# --- body FETCH ------------------------------------------------------------------------


def test_body_fetch_exact_bytes():
    body = b"From: a@b.c\r\nSubject: x\r\n\r\nline with ) and ( and {5}\r\n\x00\xff\r\n"
    wire = (b"* 3 FETCH (FLAGS (\\Seen))\r\n"
            b"* 12 FETCH (UID 40 BODY[] " + literal(body) + b")\r\n"
            b"A001 OK Fetch completed.\r\n")
    assert parse_body_fetch(lines_from_wire(wire)) == (40, body)
    wire = b"* 12 FETCH (BODY[] " + literal(body) + b" UID 41 FLAGS (\\Seen))\r\nA001 OK\r\n"
    uid, got = parse_body_fetch(lines_from_wire(wire))
    assert (uid, got) == (41, body) and type(got) is bytes


def test_body_fetch_gone_or_nil():
    assert parse_body_fetch([b"Fetch completed."]) == (None, None)
    assert parse_body_fetch([b"1 FETCH (UID 5 FLAGS ())", b"ok"]) == (None, None)
    assert parse_body_fetch([b"1 FETCH (UID 5 BODY[] NIL)", b"ok"]) == (5, None)
    assert parse_body_fetch([b'1 FETCH (UID 5 BODY[] "")', b"ok"]) == (5, b"")
    with pytest.raises(ImapProtocolError):
        parse_body_fetch([b"1 FETCH (UID 5 BODY[] {10}", b"ok"])


# --- IDLE pushes -----------------------------------------------------------------------


def test_server_push():
    lines = [b"4 EXPUNGE", b"2 EXPUNGE", b"23 EXISTS", b"3 RECENT", b"24 EXISTS",
             b"5 FETCH (FLAGS (\\Seen \\Recent) UID 77 MODSEQ (12))",
             b"6 FETCH (FLAGS (\\Flagged))",
             b"7 FETCH (FLAGS (broken",
             b"VANISHED 9:10,12",
             b"VANISHED garbage",
             b"OK Still here"]
    assert parse_exists_expunge(lines) == ServerPush(
        exists=24, expunged_seqs=(4, 2), vanished_uids=(9, 10, 12),
        flag_updates=(FlagUpdate(77, ("\\Seen",), 12),), fetch_seqs_without_uid=(6, 7))
    assert parse_exists_expunge([]) == ServerPush()


# --- hostile values: ImapProtocolError or skipped, never another exception (test_fuzz_parsers) --

HUGE = b"9" * 5000  # int() refuses more than 4300 digits with a ValueError


@pytest.mark.parametrize("lines", [
    [b"SEARCH 1 " + HUGE, b"ok"],  # was ValueError
    [b"SEARCH 1 99999999999999999999", b"ok"],  # was OverflowError (array of int64)
    [b"SEARCH 1 -2", b"ok"],
    [b"ESEARCH (TAG \"A\") UID ALL 1:" + HUGE, b"ok"],
    [b"ESEARCH (TAG \"A\") UID ALL 9223372036854775808", b"ok"],
])
def test_search_numbers_out_of_range(lines):
    with pytest.raises(ImapProtocolError):
        parse_search(lines)


def test_search_at_the_edge_of_bigint():
    assert search([b"SEARCH 9223372036854775807 1", b"ok"]) == [2**63 - 1, 1]


def test_numbers_out_of_range_in_select_status_vanished_and_pushes():
    for bad in (HUGE, b"9223372036854775808", b"-1", b"+1", b"1_0"):
        with pytest.raises(ImapProtocolError):
            parse_select([b"%s EXISTS" % bad if bad.isdigit() else b"OK [UIDNEXT %s] x" % bad, b"done"])
        with pytest.raises(ImapProtocolError):
            parse_select([b"OK [UIDVALIDITY %s] x" % bad, b"done"])
        with pytest.raises(ImapProtocolError):
            parse_status([b"STATUS INBOX (MESSAGES %s)" % bad, b"ok"])
    with pytest.raises(ImapProtocolError):
        parse_vanished([b"VANISHED 1:" + HUGE, b"ok"])
    push = parse_exists_expunge([HUGE + b" EXISTS", HUGE + b" EXPUNGE", HUGE + b" FETCH (FLAGS ())",
                                 b"VANISHED " + HUGE, b"VANISHED 1:99999999999999999999", b"7 EXPUNGE"])
    assert push == ServerPush(expunged_seqs=(7,))


def test_uid_sets_of_one_command_are_capped_together(monkeypatch):
    from mailbridge.imap import responses
    monkeypatch.setattr(responses, "MAX_PARSED_UIDS", 100)
    assert len(parse_vanished([b"VANISHED 1:60", b"VANISHED 61:100"])) == 100
    with pytest.raises(ImapProtocolError):
        parse_vanished([b"VANISHED 1:60", b"VANISHED 61:101"])
    with pytest.raises(ImapProtocolError):
        parse_search([b"ESEARCH UID ALL 1:60", b"ESEARCH UID ALL 1:60", b"ok"])
    with pytest.raises(ImapProtocolError):
        parse_select([b"VANISHED (EARLIER) 1:60", b"OK [CLOSED] x", b"VANISHED (EARLIER) 1:60", b"ok"])
    assert parse_exists_expunge([b"VANISHED 1:60", b"VANISHED 1:60"]).vanished_uids == tuple(range(1, 61))


def test_many_notify_status_pushes_in_linear_time():
    lines = [b"STATUS f%d (MESSAGES 1)" % (i % 50_000) for i in range(100_000)]
    push = parse_exists_expunge(lines)
    assert push.elsewhere[:2] == ("f0", "f1") and len(push.elsewhere) == 50_000


@pytest.mark.parametrize("parse, head", [(parse_list, b"LIST () \"/\" "), (parse_status, b"STATUS "),
                                         (parse_select, b"FLAGS ("), (parse_vanished, b"VANISHED "),
                                         (parse_body_fetch, b"1 FETCH (UID 1 BODY[] ")])
def test_a_megabyte_of_brackets_or_escapes_is_read_quickly(parse, head):
    """A run of "[" (or of '"\\') made each one rescan the rest of the line: 6 s at 64 KB."""
    import time
    for body in (b"[" * 1_000_000, b'"\\' * 500_000, b"(" * 1_000_000):
        start = time.perf_counter()
        try:
            parse([head + body, b"ok"])  # "[[[..." is an atom: a LIST name, a STATUS mailbox
        except ImapProtocolError:
            pass
        assert time.perf_counter() - start < 1.0

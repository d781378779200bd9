"""parse_fetch on metadata FETCH responses shaped as the transport delivers them."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from imap_wire import lines_from_wire, literal

from mailbridge.errors import ImapProtocolError
from mailbridge.imap import fetch
from mailbridge.imap.models import FetchDefect, FlagUpdate, MessageMeta
from mailbridge.imap.fetch import parse_fetch, parse_fetch_uids, parse_internaldate

FIELDS = b"BODY[HEADER.FIELDS (MESSAGE-ID SUBJECT FROM TO CC DATE IN-REPLY-TO REFERENCES)]"
HDR = (b"Message-ID: <m1@example.com>\r\n"
       b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= aus Berlin\r\n"
       b"From: \"M\xc3\xbcller, J\xc3\xb6rg\" <Joerg@Example.DE>\r\n"
       b"To: a@example.com, B <B@Example.com>\r\n"
       b"Cc: c@example.com\r\n"
       b"Date: Wed, 17 Jul 2024 11:44:25 +0200\r\n"
       b"In-Reply-To: <p@example.com>\r\n"
       b"References: <r@example.com>\r\n <p@example.com>\r\n\r\n")


def only(items):
    items = list(items)
    assert len(items) == 1, items
    return items[0]


def test_dovecot_response():
    wire = (b"* 1 FETCH (UID 40 FLAGS (\\Seen \\Recent $Forwarded Junk) INTERNALDATE \"17-Jul-2024 02:44:25 -0700\" "
            b"RFC822.SIZE 4286 MODSEQ (7) " + FIELDS + b" " + literal(HDR) + b")\r\n"
            b"A001 OK Fetch completed (0.001 + 0.000 secs).\r\n")
    lines = lines_from_wire(wire, completion=True)
    assert type(lines[1]) is bytearray and lines[2] == b")" and lines[-1].startswith(b"Fetch completed")
    m = only(parse_fetch(lines))
    assert m == MessageMeta(
        uid=40, flags=("\\Seen", "$Forwarded", "Junk"),
        internal_date=datetime(2024, 7, 17, 2, 44, 25, tzinfo=timezone(timedelta(hours=-7))),
        size_bytes=4286, message_id="m1@example.com", subject="Grüße aus Berlin",
        from_name="Müller, Jörg", from_email="joerg@example.de",
        to_emails=("a@example.com", "b@example.com"), cc_emails=("c@example.com",),
        sent_at=datetime(2024, 7, 17, 9, 44, 25, tzinfo=timezone.utc), in_reply_to="p@example.com",
        references=("r@example.com", "p@example.com"), modseq=7, defects=())
    assert m.internal_date.utcoffset() == timedelta(hours=-7)


def test_gmail_response_with_extra_items_first():
    wire = (b"* 12 FETCH (X-GM-THRID 1801234567890123456 X-GM-MSGID 1801234567890123457 "
            b"X-GM-LABELS (\"\\\\Important\" \"\\\\Sent\" Work) UID 512 FLAGS (\\Seen) "
            b"INTERNALDATE \"01-Feb-2024 08:00:00 +0000\" RFC822.SIZE 12001 " + FIELDS + b" "
            + literal(b"Subject: hello\r\nFrom: a@gmail.com\r\n\r\n") + b")\r\nA001 OK Success\r\n")
    m = only(parse_fetch(lines_from_wire(wire)))
    assert (m.uid, m.flags, m.subject, m.from_email, m.size_bytes) == (512, ("\\Seen",), "hello", "a@gmail.com", 12001)
    assert m.internal_date == datetime(2024, 2, 1, 8, tzinfo=timezone.utc)
    assert m.message_id is None and m.modseq is None


def test_exchange_response_padded_day_and_quoted_field_names():
    wire = (b"* 3 FETCH (UID 7 FLAGS () INTERNALDATE \" 7-Jul-2024 02:44:25 +0000\" RFC822.SIZE 99 "
            b"BODY[HEADER.FIELDS (\"MESSAGE-ID\" \"SUBJECT\")] " + literal(b"Subject: x\r\n\r\n") + b")\r\n"
            b"A001 OK FETCH completed.\r\n")
    m = only(parse_fetch(lines_from_wire(wire)))
    assert m.internal_date == datetime(2024, 7, 7, 2, 44, 25, tzinfo=timezone.utc)
    assert m.subject == "x" and m.flags == ()


def test_items_in_odd_order_after_the_literal():
    wire = (b"* 3 FETCH (FLAGS (\\Flagged) " + FIELDS + b" " + literal(b"Subject: later\r\n\r\n")
            + b" MODSEQ (12) UID 42 RFC822.SIZE 10 INTERNALDATE \"01-Jan-2024 00:00:00 +0100\")\r\nA001 OK done\r\n")
    lines = lines_from_wire(wire)
    assert lines[2].startswith(b" MODSEQ")
    m = only(parse_fetch(lines))
    assert (m.uid, m.flags, m.modseq, m.size_bytes, m.subject) == (42, ("\\Flagged",), 12, 10, "later")


def test_subject_literal_inside_quoted_and_nil_header_forms():
    quoted = only(parse_fetch([b'1 FETCH (UID 1 RFC822.SIZE 5 BODY[HEADER.FIELDS (SUBJECT)] "Subject: \\"quoted\\"")', b"ok"]))
    assert quoted.subject == '"quoted"'
    nil = only(parse_fetch([b"2 FETCH (UID 2 FLAGS (\\Seen) RFC822.SIZE 5 " + FIELDS + b" NIL)", b"ok"]))
    assert nil.subject is None and nil.message_id is None and nil.to_emails == ()
    assert any("NIL" in d for d in nil.defects)
    empty = only(parse_fetch(lines_from_wire(b"* 3 FETCH (UID 3 " + FIELDS + b" " + literal(b"\r\n") + b")\r\nA001 OK x\r\n")))
    assert empty.subject is None and empty.defects == ()
    generic_nil = only(parse_fetch([b"4 FETCH (uid 4 body[header.fields (subject)] NIL)", b"ok"]))
    assert generic_nil.uid == 4 and generic_nil.subject is None


def test_flag_only_responses_are_flag_updates():
    wire = (b"* 1 FETCH (UID 10 FLAGS (\\Seen \\Recent) MODSEQ (100))\r\n"
            b"* 2 FETCH (FLAGS (\\Deleted) UID 11)\r\n"
            b"* 3 FETCH (UID 12 FLAGS ())\r\n"
            b"* 4 FETCH (UID 13 MODSEQ (5))\r\n"  # no FLAGS: not a flag update
            b"A001 OK Fetch completed.\r\n")
    assert list(parse_fetch(lines_from_wire(wire))) == [
        FlagUpdate(10, ("\\Seen",), 100), FlagUpdate(11, ("\\Deleted",), None), FlagUpdate(12, (), None)]


def test_interleaved_untagged_responses_are_skipped():
    hdr = b"Subject: s\r\n\r\n"
    wire = (b"* 5 EXISTS\r\n"
            b"* 1 FETCH (UID 1 FLAGS () RFC822.SIZE 1 " + FIELDS + b" " + literal(hdr) + b")\r\n"
            b"* 3 EXPUNGE\r\n"
            b"* VANISHED (EARLIER) 1:5\r\n"
            b"* OK [HIGHESTMODSEQ 12] Highest\r\n"
            b"* 2 RECENT\r\n"
            b"* 7 FETCH (FLAGS (\\Seen))\r\n"  # unsolicited, no UID: skipped
            b"* 2 FETCH (UID 2 FLAGS () RFC822.SIZE 2 " + FIELDS + b" " + literal(hdr) + b")\r\n"
            b"A001 OK Fetch completed.\r\n")
    out = list(parse_fetch(lines_from_wire(wire)))
    assert [type(o) for o in out] == [MessageMeta, MessageMeta]
    assert [o.uid for o in out] == [1, 2]


def test_a_bad_response_never_stops_the_others():
    good = b"Subject: fine\r\n\r\n"
    lines = lines_from_wire(
        b"* 1 FETCH (UID 1 RFC822.SIZE 1 " + FIELDS + b" " + literal(good) + b")\r\n"
        b"* 2 FETCH (UID 51 FLAGS (\\Seen) RFC822.SIZE abc)\r\n"
        b"* 3 FETCH (UID 52 FLAGS (\\Seen) INTERNALDATE \"unterminated)\r\n"
        b"* 4 FETCH (UID 53 FLAGS ((\\Seen) RFC822.SIZE 3)\r\n"
        b"* 5 FETCH UID 54\r\n"
        b"* 6 FETCH (UID 55 RFC822.SIZE 1 " + FIELDS + b" " + literal(good) + b")\r\n"
        b"A001 OK done\r\n")
    assert lines[2] == b")"
    lines[3:3] = [b"9 FETCH (UID 60 RFC822.SIZE 1 BODY[HEADER] {5}", b") ",  # literal missing
                  bytearray(b"stray")]  # literal nobody announced
    out = list(parse_fetch(lines))
    metas = [o for o in out if isinstance(o, MessageMeta)]
    defects = [o for o in out if isinstance(o, FetchDefect)]
    assert [m.uid for m in metas] == [1, 55]
    assert [d.uid for d in defects] == [60, None, 51, 52, 53, 54]
    assert all(d.reason for d in defects)


def test_recent_removed_and_keywords_kept_in_order():
    m = only(parse_fetch([b"1 FETCH (UID 1 FLAGS ($Forwarded \\RECENT Junk \\Answered NonJunk $label1) RFC822.SIZE 1)", b"ok"]))
    assert m.flags == ("$Forwarded", "Junk", "\\Answered", "NonJunk", "$label1")


def test_8bit_junk_and_broken_headers_in_literal():
    hdr = (b"Subject: caf\xe9 \x80\x00\r\nSubject: dup\r\nFrom: =?x-bogus?q?B=F6b?= <b@x.org>\r\n"
           b"Date: yesterday\r\nMessage-ID: no-brackets@x \r\n\r\n")
    m = only(parse_fetch(lines_from_wire(b"* 1 FETCH (UID 9 RFC822.SIZE 1 " + FIELDS + b" " + literal(hdr) + b")\r\nA001 OK\r\n")))
    assert m.subject == "café €"
    assert m.from_name == "Böb" and m.from_email == "b@x.org"
    assert m.sent_at is None and m.message_id == "no-brackets@x"
    assert len(m.defects) >= 4


def test_unparseable_internaldate_is_a_defect_not_a_failure():
    m = only(parse_fetch([b'1 FETCH (UID 1 INTERNALDATE "yesterday" RFC822.SIZE 3)', b"ok"]))
    assert m.internal_date is None and m.size_bytes == 3 and m.defects


def test_lowercase_and_unusual_spacing_take_the_generic_path():
    lines = [b"1 fetch (uid 5 flags (\\seen) rfc822.size 3  internaldate \"01-Jan-2024 00:00:00 +0000\"  modseq (4))", b"ok"]
    m = only(parse_fetch(lines))
    assert (m.uid, m.flags, m.size_bytes, m.modseq) == (5, ("\\seen",), 3, 4)


def test_leading_star_tolerated():
    assert only(parse_fetch([b"* 1 FETCH (UID 5 FLAGS ())", b"ok"])) == FlagUpdate(5, ())


def test_parse_fetch_uids():
    lines = lines_from_wire(b"* 1 FETCH (UID 4)\r\n* 2 FETCH (UID 9)\r\n* 3 EXISTS\r\n* 3 FETCH (FLAGS ())\r\nA001 OK\r\n")
    assert parse_fetch_uids(lines) == [4, 9]
    with pytest.raises(ImapProtocolError):
        parse_fetch_uids([b"1 FETCH (UID x)", b"ok"])


@pytest.mark.parametrize("text, want", [
    (b"17-Jul-1996 02:44:25 -0700", datetime(1996, 7, 17, 9, 44, 25, tzinfo=timezone.utc)),
    (b" 7-Jul-1996 02:44:25 +0000", datetime(1996, 7, 7, 2, 44, 25, tzinfo=timezone.utc)),
    (b"07-jul-1996 02:44:25 +0530", datetime(1996, 7, 6, 21, 14, 25, tzinfo=timezone.utc)),
    (b"31-Feb-1996 02:44:25 +0000", None),
    (b"17-Foo-1996 02:44:25 +0000", None),
    (b"17-Jul-1996 02:44:25 +9900", None),
    (b"17-Jul-1996", None),
])
def test_internaldate(text, want):
    got = parse_internaldate(text)
    assert got == want
    if got is not None:
        assert got.tzinfo is not None


# --- the fast item scanner agrees with the tokenizer -----------------------------------

@st.composite
def fetch_response(draw):
    items = []
    if draw(st.integers(0, 9)):
        items.append(b"UID %d" % draw(st.integers(1, 2**32 - 1)))
    if draw(st.booleans()):
        flags = draw(st.lists(st.sampled_from([b"\\Seen", b"\\Recent", b"$Forwarded", b"Junk", b"\\Flagged", b"$MDNSent"]), max_size=4))
        items.append(b"FLAGS (" + b" ".join(flags) + b")")
    if draw(st.booleans()):
        items.append(b'INTERNALDATE "%02d-Mar-20%02d 10:%02d:00 %s"' % (
            draw(st.integers(1, 31)), draw(st.integers(0, 99)), draw(st.integers(0, 59)),
            draw(st.sampled_from([b"+0000", b"-0700", b"+0530", b"+1400"]))))
    if draw(st.booleans()):
        items.append(b"RFC822.SIZE %d" % draw(st.integers(0, 10**9)))
    if draw(st.booleans()):
        items.append(b"MODSEQ (%d)" % draw(st.integers(1, 2**63)))
    header = draw(st.sampled_from([None, b"NIL", b"literal"]))
    if draw(st.booleans()):
        items.append(b"X-GM-THRID 123")
    order = draw(st.permutations(range(len(items) + (header is not None))))
    hdr = draw(st.sampled_from([b"Subject: a\r\n\r\n", b"", b"From: b@c.d\r\n\r\n"]))
    parts: list[bytes | bytearray] = [b"%d FETCH (" % draw(st.integers(1, 10**6))]
    for n, i in enumerate(order):
        sep = b" " if n else b""
        if i == len(items):
            if header == b"NIL":
                parts[-1] += sep + FIELDS + b" NIL"
            else:
                parts[-1] += sep + FIELDS + b" {%d}" % len(hdr)
                parts.append(bytearray(hdr))
                parts.append(b"")
        else:
            parts[-1] += sep + items[i]
    parts[-1] += b")"
    return parts


@settings(max_examples=300, deadline=None)
@given(fetch_response())
def test_fast_scanner_equals_tokenizer(resp):
    start = fetch.FETCH_HEAD.match(resp[0]).end()
    generic = fetch._fetch_fields_generic(resp, start)
    fast = fetch._fetch_fields_fast(resp, start)
    if b"X-GM" not in b"".join(p for p in resp if type(p) is bytes):
        assert fast is not None
    if fast is not None:
        assert fast == generic


# --- speed ---------------------------------------------------------------------------

def synthetic(n: int) -> list[bytes | bytearray]:
    lines: list[bytes | bytearray] = []
    for i in range(1, n + 1):
        hdr = (f"Message-ID: <{i}.x@mail.example.com>\r\nSubject: Re: [list] summary {i}\r\n"
               f"From: \"Sender {i % 50}\" <s{i % 50}@example.org>\r\nTo: list@example.org, Other <o@example.net>\r\n"
               f"Date: Mon, {1 + i % 28} Jun 2024 10:{i % 60:02d}:12 +0200\r\nReferences: <r.{i}@x>\r\n\r\n").encode()
        lines.append(b'%d FETCH (UID %d FLAGS (\\Seen) INTERNALDATE "01-Jun-2024 10:11:12 +0200" RFC822.SIZE %d '
                     % (i, i, 4000 + i) + FIELDS + b" {%d}" % len(hdr))
        lines.append(bytearray(hdr))
        lines.append(b")")
    lines.append(b"Fetch completed.")
    return lines


def test_parse_fetch_is_linear_and_fast():
    lines = synthetic(10_000)
    start = time.perf_counter()
    out = list(parse_fetch(lines))
    elapsed = time.perf_counter() - start
    assert len(out) == 10_000 and all(type(m) is MessageMeta and not m.defects for m in out)
    assert elapsed < 2.0, f"{elapsed / 10_000 * 1e6:.0f} µs per message"  # ~30 µs expected


# --- the common-shape shortcut in parse_fetch reads exactly what the item parser reads --

_header_blocks = st.sampled_from([
    HDR, b"", b"Subject: x\r\n\r\n", b"From: a@b.c (Bob)\r\nSubject: \x00odd\r\n\r\n",
    b"Date: not a date\r\nFrom: \"x\" <>\r\n\r\n", b"Subject: =?bogus?q?=FF?=\r\nTo: ;\r\n\r\n",
    b"Subject: caf\xe9\r\nFrom: Andr\xe9 <a@b.c>\r\n\r\n",
])
_flag_lists = st.sampled_from([b"", b"\\Seen", b"\\Seen \\Recent $Forwarded Junk", b"\\Recent", b"\\Flagged \\Answered"])
_idates = st.sampled_from([b"17-Jul-2024 02:44:25 -0700", b" 1-Jan-2000 00:00:00 +0000", b"31-Feb-2024 00:00:00 +0000",
                           b"17-Jul-2024 02:44:25 +9999", b"garbage"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 2**32 - 1), _flag_lists, _idates, st.integers(0, 10**9),
                          st.one_of(st.none(), st.integers(1, 2**63 - 1)), _header_blocks), min_size=1, max_size=5),
       st.booleans())
def test_common_shape_equals_item_parser(messages, full_fields):
    section = FIELDS if full_fields else b"BODY[HEADER]"
    wire = b""
    for seq, (uid, flags, idate, size, modseq, header) in enumerate(messages, 1):
        wire += (b"* %d FETCH (UID %d FLAGS (%s) INTERNALDATE \"%s\" RFC822.SIZE %d%s %s %s)\r\n"
                 % (seq, uid, flags, idate, size, b"" if modseq is None else b" MODSEQ (%d)" % modseq,
                    section, literal(header)))
    wire += b"A001 OK done\r\n"
    lines = lines_from_wire(wire)
    assert all(fetch._COMMON.match(line) for line in lines if type(line) is bytes and line != b")")
    # "fetch" in lower case is still a FETCH response but never the common shape
    generic = [line.replace(b" FETCH (", b" fetch (", 1) if type(line) is bytes else line for line in lines]
    assert not any(fetch._COMMON.match(line) for line in generic if type(line) is bytes)
    assert list(parse_fetch(lines)) == list(parse_fetch(generic))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 2**32 - 1), _flag_lists, st.one_of(st.none(), st.integers(1, 2**63 - 1))),
                min_size=1, max_size=6))
def test_common_flags_shape_equals_item_parser(messages):
    wire = b"".join(b"* %d FETCH (UID %d FLAGS (%s)%s)\r\n" % (seq, uid, flags, b"" if modseq is None else b" MODSEQ (%d)" % modseq)
                    for seq, (uid, flags, modseq) in enumerate(messages, 1)) + b"A001 OK done\r\n"
    lines = lines_from_wire(wire)
    assert all(fetch._COMMON_FLAGS.match(line) for line in lines)
    generic = [line.replace(b" FETCH (", b" fetch (", 1) for line in lines]
    got = list(parse_fetch(lines))
    assert got == list(parse_fetch(generic))
    assert all(type(item) is FlagUpdate for item in got)


# --- hostile values: a FetchDefect or a dropped item, never a crash (found by test_fuzz_parsers) --

def test_numbers_beyond_bigint_make_the_response_a_defect():
    huge = b"9" * 5000  # int() refuses more than 4300 digits with a ValueError
    lines = [b"1 FETCH (UID %s FLAGS (\\Seen))" % huge, b"2 FETCH (UID 9223372036854775808 FLAGS ())",
             b"3 FETCH (UID -5 FLAGS ())", b"4 FETCH (UID +5 FLAGS ())", b"5 FETCH (UID 1_000 FLAGS ())",
             b"6 FETCH (UID 60 RFC822.SIZE %s)" % huge, b"7 FETCH (UID 61 RFC822.SIZE 99999999999999999999)",
             b"8 FETCH (UID 9223372036854775807 FLAGS ())", b"ok"]
    out = list(parse_fetch(lines))
    assert [type(o) for o in out] == [FetchDefect] * 7 + [FlagUpdate]
    assert [o.uid for o in out] == [None, None, None, None, None, 60, 61, 2**63 - 1]
    assert all(len(o.reason) < 120 for o in out[:7])
    assert "out of range" in out[6].reason
    with pytest.raises(ImapProtocolError):
        parse_fetch_uids([b"1 FETCH (UID %s)" % huge, b"ok"])


def test_modseq_beyond_bigint_is_dropped_with_a_defect():
    big = b"9223372036854775808"
    meta = only(parse_fetch(lines_from_wire(
        b"* 1 FETCH (UID 40 FLAGS () INTERNALDATE \"17-Jul-2024 02:44:25 -0700\" RFC822.SIZE 42 MODSEQ (" + big
        + b") " + FIELDS + b" " + literal(b"Subject: x\r\n\r\n") + b")\r\nA001 OK\r\n")))
    assert (meta.uid, meta.size_bytes, meta.modseq, meta.subject) == (40, 42, None, "x")
    assert any("MODSEQ" in d for d in meta.defects)
    assert only(parse_fetch([b"1 FETCH (UID 4 FLAGS (\\Seen) MODSEQ (" + b"9" * 5000 + b"))", b"ok"])) == \
        FlagUpdate(4, ("\\Seen",), None)
    assert only(parse_fetch([b"1 FETCH (UID 4 FLAGS () MODSEQ (9223372036854775807))", b"ok"])).modseq == 2**63 - 1


@pytest.mark.parametrize("text", [b"31-Dec-9999 23:59:59 -2359", b"01-Jan-0001 00:00:00 +0100"])
def test_internaldate_that_leaves_utc_range_is_unparseable(text):
    assert parse_internaldate(text) is None
    m = only(parse_fetch([b'1 FETCH (UID 1 INTERNALDATE "%s" RFC822.SIZE 3)' % text, b"ok"]))
    assert m.internal_date is None and m.defects
    assert parse_internaldate(b"31-Dec-9999 23:59:59 +0000") == datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)


def test_deep_nesting_and_list_values_stay_short_defects():
    deep = b"(" * 5000 + b")" * 5000
    out = list(parse_fetch([b"1 FETCH (UID 7 FLAGS " + deep + b")", b"2 FETCH (UID 8 INTERNALDATE " + b"(x) " * 10_000
                            + b"RFC822.SIZE 1)", b"ok"]))
    assert type(out[0]) is FetchDefect and out[0].uid == 7 and "nested" in out[0].reason
    assert type(out[1]) is FetchDefect and out[1].uid == 8  # an item without a value: the list is odd
    m = only(parse_fetch([b"1 FETCH (UID 9 INTERNALDATE (" + b"x " * 10_000 + b") RFC822.SIZE 1)", b"ok"]))
    assert m.internal_date is None and len(m.defects[0]) <= 80 and "list" in m.defects[0]


@pytest.mark.parametrize("body", [b"[" * 1_000_000, b'"\\' * 500_000, b"(" * 1_000_000, b"[a" * 500_000,
                                  b'"' + b'\\"' * 500_000 + b'"'])
def test_a_megabyte_line_is_read_in_linear_time(body):
    """A run of "[" (or of '"\\') made each one rescan the rest of the line: 6 s at 64 KB."""
    start = time.perf_counter()
    out = list(parse_fetch([b"1 FETCH (UID 5 X " + body + b")", b"ok"]))
    assert time.perf_counter() - start < 1.0
    assert len(out) <= 1

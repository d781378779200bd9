"""The header fast paths change nothing: `mailbridge.imap.headers` gives exactly what its
version before them (`headers_reference`, a frozen copy) gives, fields and defects alike,
on the generated corpus, on hand-written edge cases and on generated header blocks."""

from __future__ import annotations

import random
from datetime import datetime

import headers_reference as reference
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_imap_headers import CORPUS, address_list, date_value, header_fields_section, msgid, subject_value

from mailbridge.imap import headers
from mailbridge.testing import mailgen


def outcome(f, *args):
    """What a call gives, or the exception it raises (never expected), to compare."""
    try:
        return ("ok", f(*args))
    except Exception as exc:  # noqa: BLE001
        return ("raised", type(exc), str(exc))


def identical(raw: bytes) -> None:
    got = outcome(headers.extract_header_fields, raw)
    want = outcome(reference.extract_header_fields, raw)
    assert got == want, raw
    if got[0] == "ok":
        assert got[1] is not None and got[1]._fields == want[1]._fields
        for a, b in zip(got[1], want[1]):
            assert type(a) is type(b)
            if isinstance(a, datetime):  # == ignores the zone: compare it too
                assert a.utcoffset() == b.utcoffset() and a.tzinfo == b.tzinfo, raw


def identical_value(value: str) -> None:
    """The value-level functions, with the defects they note."""
    for name in ("decode_header_value", "parse_addresses", "parse_date"):
        got_defects: list[str] = []
        want_defects: list[str] = []
        got = outcome(getattr(headers, name), value, got_defects)
        want = outcome(getattr(reference, name), value, want_defects)
        assert (got, got_defects) == (want, want_defects), (name, value)
        if got[0] == "ok" and isinstance(got[1], datetime):
            assert got[1].tzinfo == want[1].tzinfo, value
    assert outcome(headers._emails, value, [], "To") == outcome(reference._emails, value, [], "To")
    assert outcome(headers._addresses_fast, value) == outcome(reference._addresses_fast, value)


# --- the generated corpus --------------------------------------------------------------


def test_corpus_is_identical():
    for raw in mailgen.corpus(3000, seed=5, mix=(0.3, 0.2, 0.05)):
        identical(header_fields_section(raw))


def test_every_kind_is_identical():
    for kind in mailgen.KINDS:
        for i in range(300):
            identical(header_fields_section(mailgen.make_message(i, rng=random.Random(i), kind=kind)))


@pytest.mark.parametrize("raw", CORPUS, ids=range(len(CORPUS)))
def test_real_world_blocks_are_identical(raw):
    identical(raw)


def test_poison_headers_are_identical():
    for poison in mailgen.poison_messages():
        identical(poison.raw)
        identical(header_fields_section(poison.raw))


# --- hand-written edge cases -----------------------------------------------------------

EDGE_VALUES = [
    # encoded words: one charset, several, mixed with text, broken
    "=?UTF-8?B?w6k=?=",
    "=?utf-8?b?w6k?=",  # missing padding
    "=?utf-8?b?w6k===?=",
    "=?utf-8?b?@@@?=",
    "=?utf-8?b?w?=",  # one base64 character: binascii.Error
    "=?utf-8?q?caf=C3=A9?= =?utf-8?q?_au_lait?=",
    "=?utf-8?q?caf=C3?=  \t =?utf-8?q?=A9?=",
    "=?utf-8?q?caf=C3?==?utf-8?q?=A9?=",
    "=?utf-8?q?a?= =?UTF-8?Q?b?=",
    "=?utf-8?q?a?= =?utf8?q?b?=",
    "=?utf-8?q?a?= =?iso-8859-1?q?=E9?=",
    "=?utf-8?q?a?= x =?utf-8?q?b?=",
    "=?utf-8?q?a?= ",
    " =?utf-8?q?a?=",
    "\u3000=?utf-8?q?a?=\u3000=?utf-8?q?b?=",
    "=?utf-8?q?a?=\x0b=?utf-8?q?b?=",
    "=?utf-8?q?a?=\x85=?utf-8?q?b?=",
    "=?utf-8?q?a?=\r\n =?utf-8?q?b?=",
    "=?utf-8?q?=FF?=",  # not UTF-8
    "=?utf-8?q?=00x?=",
    "=?utf-8?q?=ZZ_=4?=",
    "=?utf-8?q??=",
    "=?utf-8?b??=",
    "=??q?a?=",
    "=?x-unknown?q?a?=",
    "=?unknown-8bit?q?=E9?=",
    "=?utf-7?q?+2D3cAA-?=",
    "=?unicode-escape?q?\\ud800?=",
    "=?ISO-2022-JP?B?GyRCJDMkcyRLJEEkTxsoQg==?=",
    "=?iso-8859-1*en?q?=E9?=",
    "=?utf-8?Q?a_b?= =?utf-8?B?w6k=?=",
    "=?utf-8?q?a?=\u00e9",
    "\u00e9 =?utf-8?q?a?=",
    "=?utf-8?q?\u00e9?=",
    "=?utf-8?b?\u00e9w6k=?=",
    "=?utf-8?q?a?=?=",
    "=?utf-8?q?a",
    "=?utf-8?x?a?=",
    # addresses: groups, quotes, comments, routes, literals, odd blanks
    'Alice Example <alice@example.com>',
    '"Example, Alice" <alice@example.com>',
    '"Alice \\"Al\\" Example" <alice@example.com>',
    '"a <b@c>" <d@e>',
    '"unterminated <a@b.c>',
    "a\"b <c@d.e>",
    "Alice  \t Example <a@b.c>",
    "  <a@b.c>  ",
    "<a@b.c>",
    "a@b.c",
    "a@b.c (Alice)",
    "a@b.c (Alice (nested))",
    "a@b.c ()",
    "friends: a@b.c, d@e.f;",
    "undisclosed-recipients:;",
    "<@route.example:a@b.c>",
    "a@[192.0.2.1]",
    "MAILER-DAEMON",
    "@",
    "a@",
    "@b",
    ",,,",
    " , ",
    "a@b.c,,d@e.f,",
    "=?utf-8?q?Fran=C3=A7ois?= <f@x.org>",
    '"=?utf-8?b?U8O4cmVu?=" <s@x.dk>',
    "=?utf-8?q?Fran=C3=A7ois_van_der_Be?= =?utf-8?q?rg?= <Newsletter@Example.ORG>",
    "Ünïcödé Nämé <u@x.org>",
    "A <a@b.c>, \"B, C\" <b@c.d>, e@f.g (E), <h@i.j>",
    "A\x00B <a@b.c>",
    "A <a@b.c",
    "A a@b.c>",
    "<<a@b.c>>",
    "A <a @ b.c>",
    "A <a@b.c> trailing",
    "x" * 5000 + " <a@b.c>",
    '"' + "x" * 5000 + '" <a@b.c>',
    "a" * 3000 + "@" + "b" * 3000,
    "Name (comment) <a@b.c>",
    "(comment) a@b.c",
    # dates
    "Fri, 7 Jun 2024 09:41:03 -0700",
    "7 Jun 2024 09:41 +0000",
    "Fri, 7 Jun 24 09:41:03 -0000",
    "Tue, 11 Jun 2024 10:00:00 -0400 (EDT)",
    "1 Jan 99 00:00 GMT",
    "31 Feb 2024 00:00:00 +0000",
    "1 Jan 0 00:00:00 +0000",
    "1 Jan 10000 00:00:00 +0000",
    "1 Jan 9999 23:59:59 -2359",
    "1 Jan 0001 00:00:00 +2359",
    "1 Jan 2024 00:00:00 +9999",
    "1 Foo 2024 00:00:00 +0000",
    "garbage",
    "",
    " ",
]


@pytest.mark.parametrize("value", EDGE_VALUES, ids=range(len(EDGE_VALUES)))
def test_edge_values_are_identical(value):
    identical_value(value)
    for name in ("Subject", "From", "To", "Cc", "Date", "Message-ID", "In-Reply-To", "References"):
        identical(f"{name}: {value}\r\n\r\n".encode("utf-8", "surrogatepass"))


EDGE_BLOCKS = [
    b"",
    b"\r\n",
    b"\r\n\r\n",
    b"Subject:\r\n\r\n",
    b"Subject: \t \r\nFrom:\r\nTo:\r\nCc:\r\nDate:\r\nMessage-ID:\r\nIn-Reply-To:\r\nReferences:\r\n\r\n",
    b"From: a@b.c\r\nFrom: d@e.f\r\nSUBJECT: one\r\nsubject: two\r\n\r\n",
    b"Subject: folded\r\n  across\r\n\tthree lines\r\nFrom: A\r\n <a@b.c>\r\n\r\n",
    b"Subject: lf only\n folded\nFrom: a@b.c\n\n",
    b"Subject: bare cr\r folded\rFrom: a@b.c\r\r",
    b"Subject: mixed\r\n folded\n again\r\nTo: a@b.c,\n d@e.f\r\n\r\n",
    b"Subject: one\r\nnot a header line\r\n continuation of nothing\r\nFrom: a@b.c\r\n\r\n",
    b" leading continuation\r\nSubject: x\r\n\r\n",
    b"Subject : spaced name\r\nFrom\t: a@b.c\r\n\r\n",
    b"Sub ject: not a name\r\n\r\n",
    b"Subject: nul\x00 inside\r\nFrom: a\x00@b.c\r\n\r\n",
    b"Subject: caf\xc3\xa9 raw utf-8\r\nFrom: J\xc3\xb6rg <j@x.de>\r\n\r\n",
    b"Subject: caf\xe9 latin-1\r\nFrom: J\xf6rg <j@x.de>\r\n\r\n",
    b"Subject: \x81\x8d\x8f\x90\x9d undefined in cp1252\r\n\r\n",
    b"Subject: \xff\xfe\r\nFrom: =?utf-8?q?a?= <a@b.c>\r\n\r\n",
    b"Subject: =?utf-8?q?caf=C3=A9?= \xc3\xa9\r\n\r\n",
    b"Subject: " + b"x" * 20000 + b"\r\n\r\n",
    b"Subject: " + b"=?utf-8?q?a?= " * 2000 + b"\r\n\r\n",
    b"To: " + b", ".join(b"u%d@x.org" % i for i in range(500)) + b"\r\n\r\n",
    b"Message-ID: <" + b"a" * 3000 + b"@x>\r\nIn-Reply-To: <" + b"b" * 3000 + b"@x>\r\n"
    b"References: <ok@x> <" + b"c" * 3000 + b"@x>\r\n\r\n",
    b"Message-ID: no brackets\r\nIn-Reply-To: bare@id other@id\r\nReferences: r1@x, r2@x\r\n\r\n",
    b"Message-ID: <>\r\nIn-Reply-To: <> <x@y>\r\nReferences: <  > <a@b>\r\n\r\n",
    b"To: group: a@b.c, \"Q, R\" <q@r.s>;, t@u.v\r\nCc: (only a comment)\r\n\r\n",
    b"From: \"Nobody\"\r\n\r\n",
    b"From: MAILER-DAEMON\r\n\r\n",
    b"From: , , a@b.c\r\n\r\n",
    b"From: undisclosed-recipients:;\r\n\r\n",
    b"Date: Fri, 7 Jun 2024 09:41:03 -0700\r\nDate: Sat, 8 Jun 2024 09:41:03 -0700\r\n\r\n",
]


@pytest.mark.parametrize("raw", EDGE_BLOCKS, ids=range(len(EDGE_BLOCKS)))
def test_edge_blocks_are_identical(raw):
    identical(raw)
    identical(bytearray(raw))
    if b"\r\n" in raw:
        identical(raw.replace(b"\r\n", b"\n"))


# --- generated header blocks -----------------------------------------------------------

# pieces that sit at the fast paths' edges, mixed with arbitrary text
_PIECES = st.sampled_from([
    "=?", "?=", "=?utf-8?q?", "=?UTF-8?B?", "=?iso-8859-1?q?", "=?utf8?b?", "=?koi8-r?b?", "=?x?q?",
    "=?utf-8?q?a_b=C3=A9?=", "=?utf-8?b?w6k=?=", "=?utf-8?b?w6k?=", "=C3", "=A9", "_", "w6k=",
    " ", "  ", "\t", "\r\n ", "\n\t", "\r", "\n", "\u3000", "\x0b", "\x85", "\u2028",
    '"', "\\", "<", ">", "@", ",", ";", ":", "(", ")", "[", "]", "\x00",
    "a@b.c", "<a@b.c>", "Name", "x", "é", "\udcff", "Fri, 7 Jun 2024 09:41:03 -0700", "+0000",
])
_VALUE = st.lists(st.one_of(_PIECES, st.text(max_size=6)), max_size=12).map("".join)
_NAMES = st.sampled_from(["Subject", "From", "To", "Cc", "Date", "Message-ID", "In-Reply-To", "References",
                          "SUBJECT", "from", "X-Other", "Bad Name", " Subject"])


@st.composite
def hostile_block(draw) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 9))):
        name = draw(_NAMES)
        value = draw(st.one_of(_VALUE, subject_value(), address_list(), date_value(), msgid))
        lines.append(f"{name}:{draw(st.sampled_from(['', ' ', '  ', chr(9)]))}{value}")
    text = draw(st.sampled_from(["\r\n", "\n"])).join(lines) + "\r\n\r\n"
    data = text.encode("utf-8", "surrogateescape" if draw(st.booleans()) else "surrogatepass")
    if draw(st.integers(0, 4)) == 0:  # 8-bit bytes that are not UTF-8
        pos = draw(st.integers(0, len(data)))
        data = data[:pos] + bytes(draw(st.lists(st.integers(0x80, 0xFF), min_size=1, max_size=3))) + data[pos:]
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # 1,500 each were run once, clean
@given(hostile_block())
@example(b"Subject: =?utf-8?q?a?= =?utf-8?q?b?=\r\nFrom: \"x\" <a@b.c>\r\n\r\n")
def test_generated_blocks_are_identical(raw):
    identical(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # 1,500 each were run once, clean
@given(st.one_of(_VALUE, subject_value(), address_list(), st.text(max_size=40)))
def test_generated_values_are_identical(value):
    identical_value(value)


def test_the_one_charset_shortcut_is_taken_and_declines_what_it_should():
    assert headers._decode_one_charset("=?utf-8?q?caf=C3?= \t=?UTF-8?B?qQ==?=") == "café"
    assert headers._decode_one_charset("=?utf-8?q?a?==?utf-8?q?b?=") == "ab"
    for value in ("Re: =?utf-8?q?a?=", "=?utf-8?q?a?= x", "=?utf-8?q?a?= =?latin-1?q?b?=", "=?utf-8?q?a?= ",
                  "=?utf-8?b?w?=", "=?utf-8?q?=FF?=", "=?x-unknown?q?a?="):
        assert headers._decode_one_charset(value) is None, value
    for value in EDGE_VALUES:  # where it answers, it answers as the general port does
        if headers._LINEBREAKS.search(value) is None and headers._ECRE.search(value) is not None:
            shortcut = headers._decode_one_charset(value)
            assert shortcut is None or shortcut == headers._decode_words(value, True), value

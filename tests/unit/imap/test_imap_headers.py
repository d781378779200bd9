"""Header field extraction: the fast path against the stdlib `email` package as oracle,
and the robustness rules for what the oracle cannot handle."""

from __future__ import annotations

import base64
import random
import re
from datetime import datetime, timedelta, timezone
from email import message_from_bytes
from email.header import decode_header, make_header
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailbridge.imap import headers
from mailbridge.imap.headers import (
    HeaderFields,
    decode_header_value,
    extract_header_fields,
    parse_addresses,
    parse_date,
)
from mailbridge.testing.mailgen import poison_messages

# --- the oracle: the email package (policy=compat32) plus the documented normalisation ---

_UNFOLD = re.compile(r"\r?\n(?=[ \t])")


def _field(msg, name: str) -> str | None:
    value = msg.get(name)  # the first of duplicates
    if value is None:
        return None
    return _UNFOLD.sub("", str(value)).strip(" \t\r\n")


def oracle_decode(value: str) -> str:
    return str(make_header(decode_header(value)))


def _ids(value: str) -> tuple[str, ...]:
    if "<" in value:
        return tuple(s.strip() for s in re.findall(r"<([^<>]*)>", value) if s.strip())
    return tuple(s for s in re.split(r"[\s,]+", value) if s)


def oracle_date(value: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(value)
    except (ValueError, TypeError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def is_address(addr: str) -> bool:
    local, at, domain = addr.partition("@")
    return bool(local and at and domain)


def oracle(raw: bytes) -> HeaderFields:
    msg = message_from_bytes(raw, policy=compat32)
    mid = _field(msg, "message-id")
    if mid is not None:
        mid = (mid.split("<", 1)[1].split(">", 1)[0] if "<" in mid else mid).strip() or None
    subject = _field(msg, "subject")
    from_name = from_email = None
    from_ = _field(msg, "from")
    if from_:
        pairs = [(n, a) for n, a in getaddresses([from_]) if a]
        with_at = [(n, a) for n, a in pairs if is_address(a)]
        if with_at:
            from_name = oracle_decode(with_at[0][0].strip(" \t")).strip() or None
            from_email = with_at[0][1].lower()
        elif pairs:
            name, addr = pairs[0]
            from_name = oracle_decode((name or ("" if "@" in addr else addr)).strip(" \t")).strip() or None
    to = _field(msg, "to")
    cc = _field(msg, "cc")
    date = _field(msg, "date")
    irt = _field(msg, "in-reply-to")
    refs = _field(msg, "references")
    return HeaderFields(
        message_id=mid,
        subject=oracle_decode(subject) if subject is not None else None,
        from_name=from_name,
        from_email=from_email,
        to_emails=tuple(a.lower() for _, a in getaddresses([to]) if is_address(a)) if to else (),
        cc_emails=tuple(a.lower() for _, a in getaddresses([cc]) if is_address(a)) if cc else (),
        sent_at=oracle_date(date) if date is not None else None,
        in_reply_to=(_ids(irt) or (None,))[0] if irt else None,
        references=_ids(refs) if refs else (),
    )


def same(got: HeaderFields, want: HeaderFields) -> None:
    """Field-by-field equality (defects aside); datetimes also by UTC offset."""
    for name in HeaderFields._fields:
        if name == "defects":
            continue
        a, b = getattr(got, name), getattr(want, name)
        assert a == b, (name, a, b)
        if isinstance(a, datetime):
            assert a.utcoffset() == b.utcoffset(), name


# --- generators ------------------------------------------------------------------------

CHARSETS = ("utf-8", "UTF-8", "iso-8859-1", "ISO-8859-15", "windows-1252", "us-ascii", "koi8-r",
            "iso-8859-2", "utf8", "latin-1")


def _alphabet(charset: str) -> str:
    if charset.lower() in ("utf-8", "utf8"):
        return ""
    chars = []
    for b in range(1, 256):
        try:
            chars.append(bytes([b]).decode(charset))
        except UnicodeDecodeError:
            pass
    return "".join(chars)


ALPHABETS = {cs: _alphabet(cs) for cs in CHARSETS}
UNICODE = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")


def _q(data: bytes, draw) -> str:
    out = []
    for b in data:
        c = chr(b)
        if c == " " and draw(st.booleans()):
            out.append("_")
        elif (c.isalnum() and c.isascii() or c in "!*+-/") and draw(st.booleans()):
            out.append(c)
        else:
            out.append(("={:02X}" if draw(st.booleans()) else "={:02x}").format(b))
    return "".join(out)


@st.composite
def encoded_run(draw) -> str:
    """1-3 adjacent encoded words of one text (split anywhere, even inside a character)."""
    cs = draw(st.sampled_from(CHARSETS))
    alphabet = ALPHABETS[cs]
    chars = UNICODE if not alphabet else st.sampled_from(alphabet)
    text = draw(st.text(alphabet=chars, max_size=14))
    data = text.encode(cs)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=2)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    words = []
    for piece in pieces:
        if draw(st.booleans()):
            words.append(f"=?{cs}?{draw(st.sampled_from('qQ'))}?{_q(piece, draw)}?=")
        else:
            b64 = base64.b64encode(piece).decode()
            if draw(st.booleans()):
                b64 = b64.rstrip("=")
            words.append(f"=?{cs}?{draw(st.sampled_from('bB'))}?{b64}?=")
    seps = st.sampled_from([" ", "  ", "\t", "\r\n ", "\r\n\t", ""])
    return "".join(w + (draw(seps) if i < len(words) - 1 else "") for i, w in enumerate(words))


plain_word = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="?"),
                     min_size=1, max_size=8)
SEP = st.sampled_from([" ", " ", " ", "  ", "\t", "\r\n ", "\r\n\t", ""])


@st.composite
def subject_value(draw) -> str:
    parts = draw(st.lists(st.one_of(plain_word, encoded_run()), max_size=5))
    out = ""
    for i, part in enumerate(parts):
        if i:
            sep = draw(SEP)
            if not sep and not (part.startswith("=?") or out.endswith("?=")):
                sep = " "  # two plain words glued are one word
            out += sep
        out += part
    return out


atom_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.'!#$%&*+-/=^_`{|}~",
                    min_size=1, max_size=8).filter(lambda w: "=?" not in w)
quoted_word = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters='"\\?'),
                      max_size=12).map(lambda s: f'"{s}"')


@st.composite
def utf8_encoded_name(draw) -> str:
    text = draw(st.text(alphabet=UNICODE, min_size=1, max_size=10))
    data = text.encode("utf-8")
    cut = draw(st.integers(0, len(data)))
    words = [f"=?utf-8?q?{_q(p, draw)}?=" if draw(st.booleans())
             else f"=?utf-8?b?{base64.b64encode(p).decode()}?=" for p in (data[:cut], data[cut:]) if p]
    joined = " ".join(words)
    return f'"{joined}"' if draw(st.booleans()) else joined


display_name = st.lists(st.one_of(atom_word, quoted_word, utf8_encoded_name()), min_size=1, max_size=3).map(" ".join)
local_part = st.from_regex(r"[A-Za-z0-9_%+\-]{1,8}(\.[A-Za-z0-9_%+\-]{1,6}){0,2}", fullmatch=True)
domain = st.from_regex(r"[A-Za-z0-9\-]{1,8}(\.[A-Za-z0-9\-]{1,6}){0,2}", fullmatch=True)
address = st.builds(lambda l, d: f"{l}@{d}", local_part, domain)


comment_text = st.text(alphabet="abcXYZ019 \t.'-_!?&=", max_size=12)


@st.composite
def mailbox(draw) -> str:
    addr = draw(address)
    form = draw(st.integers(0, 6))
    if form == 0:
        return addr
    if form >= 5:  # addr (comment): getaddresses takes the comment as the display name
        comment = draw(st.one_of(comment_text, utf8_encoded_name().map(lambda n: n.strip('"'))))
        return f"{addr}{draw(st.sampled_from(['', ' ', '  ', chr(9)]))}({comment})"
    if form == 1:
        return f"<{addr}>"
    name = draw(display_name)
    if form == 2:
        return f"{name} <{addr}>"
    if form == 3:
        return f"{name}<{addr}>"
    return f"{name}  <  {addr}  >"


@st.composite
def address_list(draw, min_size=1) -> str:
    items = draw(st.lists(mailbox(), min_size=min_size, max_size=4))
    out = ""
    for i, item in enumerate(items):
        if i:
            out += "," + draw(st.sampled_from(["", " ", "  ", "\r\n ", "\t", " , "]))
        out += item
    if draw(st.booleans()) and items:
        out += draw(st.sampled_from([",", ", ", ",,", " , ,"]))
    return out


DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@st.composite
def date_value(draw, numeric_zone: bool = False) -> str:
    d = draw(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2099, 12, 31)))
    day = draw(st.integers(1, 31)) if draw(st.integers(0, 20)) == 0 else d.day  # sometimes invalid
    out = f"{draw(st.sampled_from(DAYS))}," + draw(st.sampled_from([" ", "", "  "])) if draw(st.booleans()) else ""
    out += (f"{day:02d}" if draw(st.booleans()) else str(day)) + " "
    mon = MONTHS[d.month - 1]
    out += draw(st.sampled_from([mon, mon.upper(), mon.lower()])) + " "
    out += str(d.year) if draw(st.integers(0, 4)) else f"{d.year % 100:02d}"
    out += f" {d.hour:02d}:{d.minute:02d}" + (f":{d.second:02d}" if draw(st.booleans()) else "")
    zones = [st.integers(-14 * 60, 14 * 60).map(lambda m: f"{'-' if m < 0 else '+'}{abs(m) // 60:02d}{abs(m) % 60:02d}"),
             st.just("-0000"), st.just("+0000")]
    if not numeric_zone:
        zones.append(st.sampled_from(["GMT", "UT", "EST", "PDT", "Z", ""]))
    zone = draw(st.one_of(zones))
    if zone:
        out += " " + zone
    out += draw(st.sampled_from(["", " (CEST)", " (added by postmaster)", "   "]))
    return out


msgid = st.builds(lambda l, d: f"<{l}@{d}>", local_part, domain)


# --- the fast paths agree with the oracle ----------------------------------------------


def _unfolded(value: str) -> str:
    return _UNFOLD.sub("", value).strip(" \t\r\n")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject_value())
@example("=?utf-8?q?Fran=C3=A7ois_van_der_Be?= =?utf-8?q?rg?=")
@example("a =?us-ascii?q?b?= c")
@example("=?utf-8?q?a?==?utf8?q?b?=")
@example("(=?utf-8?q?a?=)x")
@example("=?utf-8?b?w6k?= =?iso-8859-1?q?=E9?=")
def test_fast_decoding_equals_email(value):
    value = _unfolded(value)
    fast = headers._decode_words(value, True)
    assert fast is not None, value  # well-formed words in these charsets never leave the fast path
    assert fast == oracle_decode(value)
    assert decode_header_value(value) == oracle_decode(value)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(address_list())
@example('"Van der, Berg" <Bob@X.com>, plain@example.org')
@example('"a <b@c>" <d@e>')
@example('J. Smith <js@x.org>,,')
@example("bob@example.com (Bob Smith), a@b.c(), x@y.z\t( Two  Words )")
@example("rupert.oneil@startup.example.io (Rupert O'Neil)")
def test_fast_addresses_equal_getaddresses(value):
    value = _unfolded(value)
    fast = headers._addresses_fast(value)
    assert fast is not None, value
    want = [(n, a.lower()) for n, a in getaddresses([value]) if a]
    assert [(oracle_decode(n).strip(), a.lower()) for n, a in fast] == [(oracle_decode(n.strip(" \t")).strip(), a) for n, a in want]


@settings(max_examples=400, deadline=None)
@given(date_value(numeric_zone=True))
def test_fast_dates_equal_parsedate(value):
    value = _unfolded(value)
    try:
        fast = headers._date_fast(value)
    except ValueError:  # out of range: the oracle fails the same way
        assert oracle_date(value) is None
        return
    assert fast is not None, value
    want = oracle_date(value)
    assert fast == want and fast.utcoffset() == want.utcoffset()


@settings(max_examples=300, deadline=None)
@given(date_value())
def test_dates_equal_oracle(value):
    got = parse_date(_unfolded(value), [])
    want = oracle_date(_unfolded(value))
    assert got == want
    if got is not None:
        assert got.tzinfo is not None and got.utcoffset() == want.utcoffset()


@st.composite
def header_block(draw) -> bytes:
    fields = []
    if draw(st.integers(0, 5)):
        fields.append(("Message-ID", draw(st.one_of(msgid, local_part))))
    if draw(st.integers(0, 5)):
        fields.append(("Subject", draw(subject_value())))
    if draw(st.integers(0, 8)):
        fields.append(("From", draw(address_list())))
    if draw(st.integers(0, 3)):
        fields.append(("To", draw(address_list())))
    if draw(st.booleans()):
        fields.append(("Cc", draw(address_list())))
    if draw(st.integers(0, 5)):
        fields.append(("Date", draw(date_value())))
    if draw(st.booleans()):
        fields.append(("In-Reply-To", draw(msgid)))
    if draw(st.booleans()):
        ids = draw(st.lists(msgid, min_size=1, max_size=5))
        fields.append(("References", "".join(i + draw(st.sampled_from([" ", "\r\n ", "\r\n\t", ""]))
                                             for i in ids).rstrip()))
    if fields and draw(st.integers(0, 5)) == 0:  # a duplicate
        name, _ = draw(st.sampled_from(fields))
        fields.append((name, "second " + name))
    fields = draw(st.permutations(fields))
    lines = []
    for name, value in fields:
        name = draw(st.sampled_from([name, name.upper(), name.lower()]))
        lines.append(f"{name}:{draw(st.sampled_from([' ', '', '  ', chr(9)]))}{value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header_block())
def test_extract_equals_oracle(raw):
    same(extract_header_fields(raw), oracle(raw))


# --- a corpus of realistic header blocks -----------------------------------------------

WANTED = {b"message-id", b"subject", b"from", b"to", b"cc", b"date", b"in-reply-to", b"references"}


def header_fields_section(message: bytes) -> bytes:
    """What BODY[HEADER.FIELDS (MESSAGE-ID SUBJECT FROM TO CC DATE IN-REPLY-TO REFERENCES)]
    returns for a message: those fields, folds kept, then an empty line."""
    head = message.split(b"\r\n\r\n", 1)[0]
    out, keep = [], False
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        keep = line.split(b":", 1)[0].strip().lower() in WANTED
        if keep:
            out.append(line)
    return b"\r\n".join(out) + b"\r\n\r\n"


CORPUS = [
    # Gmail
    b"Message-ID: <CAH+w=7b2kq9ZkN0pVx=JQ@mail.gmail.com>\r\n"
    b"Subject: Re: Lunch on Friday?\r\n"
    b"From: Alice Example <alice.example@gmail.com>\r\n"
    b"To: Bob <bob@example.com>, carol@example.org\r\n"
    b"Date: Fri, 7 Jun 2024 09:41:03 -0700\r\n"
    b"In-Reply-To: <CAJ7k2=abc@mail.gmail.com>\r\n"
    b"References: <CAJ7k1=xyz@mail.gmail.com> <CAJ7k2=abc@mail.gmail.com>\r\n\r\n",
    # Outlook / Exchange: quoted "Last, First", folded long To, Cc, zone comment
    b"From: \"M\xc3\xbcller, J\xc3\xb6rg\" <Joerg.Mueller@Contoso.COM>\r\n".replace(
        b"M\xc3\xbcller, J\xc3\xb6rg", b"Mueller, Joerg")
    + b"To: \"Smith, John\" <John.Smith@contoso.com>, \"Doe, Jane\"\r\n <jane.doe@contoso.com>\r\n"
    b"CC: \"IT Helpdesk\" <helpdesk@contoso.com>\r\n"
    b"Subject: =?iso-8859-1?Q?AW:_Besprechung_n=E4chste_Woche?=\r\n"
    b"Date: Mon, 3 Jun 2024 14:02:11 +0000\r\n"
    b"Message-ID: <AM0PR01MB1234ABCD@AM0PR01MB1234.eurprd01.prod.exchangelabs.com>\r\n"
    b"References: <AM0PR01MB9999@AM0PR01MB9999.eurprd01.prod.exchangelabs.com>\r\n"
    b"In-Reply-To: <AM0PR01MB9999@AM0PR01MB9999.eurprd01.prod.exchangelabs.com>\r\n\r\n",
    # mailing list, folded subject, B encoded words in two charsets
    b"Subject: [python-dev] =?utf-8?b?UmU6IFBFUCA2OTkg4oCU?=\r\n =?utf-8?b?IGFjY2VwdGVk?=\r\n"
    b"From: Guido van Rossum <guido@python.org>\r\n"
    b"To: Python Dev <python-dev@python.org>\r\n"
    b"Date: Tue, 11 Jun 2024 10:00:00 -0400 (EDT)\r\n"
    b"Message-ID: <abc.123@python.org>\r\n\r\n",
    # newsletter: encoded display name, adjacent words split inside a character
    b"From: =?utf-8?q?Fran=C3=A7ois_van_der_Be?= =?utf-8?q?rg?= <Newsletter@Example.ORG>\r\n"
    b"Subject: =?UTF-8?Q?Caf=C3?= =?UTF-8?Q?=A9_du_jour_=E2=98=95?=\r\n"
    b"Date: Wed, 12 Jun 2024 06:00:00 +0200\r\n"
    b"To: undisclosed-recipients:;\r\n\r\n",
    # groups and comments (fallback path)
    b"From: bob@example.com (Bob Smith)\r\n"
    b"To: friends: Ann <ann@example.com>, carl@example.com;, dave@example.com\r\n"
    b"Cc: \"Quote \\\"Marks\\\"\" <q@example.com>\r\n"
    b"Subject: group test\r\n\r\n",
    # minimal
    b"Subject: minimal message 7\r\n\r\n",
    # empty subject, no Message-ID, two-digit year, named zone
    b"Subject:\r\nFrom: x@y.z\r\nDate: 1 Jan 99 00:00 GMT\r\n\r\n",
    # Japanese ISO-2022-JP (a conversion charset: left to the email package)
    b"Subject: =?ISO-2022-JP?B?GyRCJDMkcyRLJEEkTxsoQg==?=\r\nFrom: =?iso-2022-jp?b?GyRCOzNFRBsoQg==?= <yamada@example.jp>\r\n\r\n",
]


@pytest.mark.parametrize("raw", CORPUS, ids=range(len(CORPUS)))
def test_corpus_equals_oracle(raw):
    same(extract_header_fields(raw), oracle(raw))


def test_mailgen_corpus_equals_oracle():
    mailgen = pytest.importorskip("mailbridge.testing.mailgen")
    checked = 0
    for i in range(400):
        rng = random.Random(i)
        for kind in ("normal", "encoded", "minimal"):
            raw = header_fields_section(mailgen.make_message(i, rng=rng, kind=kind))
            same(extract_header_fields(raw), oracle(raw))
            checked += 1
    assert checked == 1200


def test_mailgen_broken_messages_never_raise():
    mailgen = pytest.importorskip("mailbridge.testing.mailgen")
    for i in range(300):
        raw = header_fields_section(mailgen.make_message(i, rng=random.Random(i), kind="broken"))
        fields = extract_header_fields(raw)
        for text in (fields.subject, fields.from_name, fields.from_email, fields.message_id):
            assert text is None or ("\x00" not in text and not any("\ud800" <= c <= "\udfff" for c in text))
        assert fields.sent_at is None or fields.sent_at.tzinfo is not None


# --- what the oracle cannot do ---------------------------------------------------------


def fields(raw: bytes) -> HeaderFields:
    return extract_header_fields(raw)


def test_unknown_charset_decodes_with_fallback():
    f = fields(b"Subject: =?x-unknown?Q?Hello_W=C3=B6rld?= and more\r\n\r\n")
    assert f.subject == "Hello Wörld and more"
    assert any("x-unknown" in d for d in f.defects)


def test_unknown_charset_latin1_bytes():
    assert fields(b"Subject: =?x-unknown-42?q?Hello_W=F6rld?=\r\n\r\n").subject == "Hello Wörld"


def test_lying_charsets():
    assert fields(b"Subject: =?us-ascii?B?" + base64.b64encode("Grüße".encode()) + b"?=\r\n\r\n").subject == "Grüße"
    assert fields(b"Subject: =?us-ascii?q?Caf=C3=A9_au_lait?=\r\n\r\n").subject == "Café au lait"
    assert fields(b"Subject: =?utf-8?q?caf=E9_cr=E8me?=\r\n\r\n").subject == "café crème"


def test_rfc2231_language_suffix():
    assert fields(b"Subject: =?utf-8*en?q?Hi_=C3=A9?=\r\n\r\n").subject == "Hi é"


def test_bad_base64_kept_as_written():
    f = fields(b"Subject: =?utf-8?b?S?=\r\n\r\n")
    assert f.subject == "=?utf-8?b?S?="
    assert f.defects


def test_unterminated_encoded_word_is_plain_text():
    assert fields(b"Subject: =?utf-8?q?unterminated word\r\n\r\n").subject == "=?utf-8?q?unterminated word"


def test_raw_utf8_header():
    f = fields("Subject: Grüße – Ärger im Büro\r\nFrom: Jörg <j@example.de>\r\n\r\n".encode())
    assert f.subject == "Grüße – Ärger im Büro"
    assert f.from_name == "Jörg"
    assert f.defects == ()


def test_raw_cp1252_header():
    f = fields(b"Subject: Gr\xfc\xdfe \x80 10\r\nFrom: J\xf6rg M\xfcller <joerg@example.de>\r\n\r\n")
    assert f.subject == "Grüße € 10"
    assert f.from_name == "Jörg Müller"
    assert f.from_email == "joerg@example.de"
    assert any("windows-1252" in d for d in f.defects)


def test_raw_8bit_undefined_in_cp1252_falls_to_latin1():
    assert fields(b"Subject: a\x81b\r\n\r\n").subject == "a\x81b"


def test_folded_headers_unfold():
    f = fields(b"Subject: a long\r\n\tsubject\r\n  folded twice\r\nTo: a@b.c,\r\n d@e.f\r\n\r\n")
    assert f.subject == "a long\tsubject  folded twice"
    assert f.to_emails == ("a@b.c", "d@e.f")


def test_lf_only_block():
    f = fields(b"Subject: lf\n only\nFrom: A <a@b.c>\n\n")
    assert f.subject == "lf only" and f.from_email == "a@b.c"


def test_duplicated_header_first_wins():
    f = fields(b"Subject: first\r\nSubject: second\r\n\r\n")
    assert f.subject == "first"
    assert any("duplicate" in d and "Subject" in d for d in f.defects)


def test_message_id_rules():
    assert fields(b"Subject: x\r\n\r\n").message_id is None
    assert fields(b"Message-ID:   abc@def  \r\n\r\n").message_id == "abc@def"
    assert fields(b"Message-ID: <abc@def> (added by postmaster)\r\n\r\n").message_id == "abc@def"
    assert fields(b"Message-ID:\r\n <folded@id>\r\n\r\n").message_id == "folded@id"
    assert fields(b"Message-ID: <>\r\n\r\n").message_id is None
    assert fields(b"Message-ID: <unterminated@x\r\n\r\n").message_id == "unterminated@x"


def test_references_and_in_reply_to():
    f = fields(b"In-Reply-To: <a@b> <c@d>\r\nReferences: <r1@x>\r\n <r2@x>\t<r3@x><r4@x>\r\n\r\n")
    assert f.in_reply_to == "a@b"
    assert f.references == ("r1@x", "r2@x", "r3@x", "r4@x")
    f = fields(b"In-Reply-To: a@b (Alice's message)\r\nReferences: r1@x r2@x,r3@x\r\n\r\n")
    assert f.in_reply_to == "a@b"
    assert f.references == ("r1@x", "r2@x", "r3@x")
    f = fields(b"References: <a@b> garbage here <c@d> <unterminated@x\r\n\r\n")
    assert f.references == ("a@b", "c@d")


def test_dates():
    assert fields(b"Date: Mon, 3 Jun 2024 10:11:12 +0200\r\n\r\n").sent_at == datetime(
        2024, 6, 3, 8, 11, 12, tzinfo=timezone.utc)
    no_zone = fields(b"Date: Mon, 3 Jun 2024 10:11:12\r\n\r\n").sent_at
    assert no_zone == datetime(2024, 6, 3, 10, 11, 12, tzinfo=timezone.utc)
    assert fields(b"Date: 3 Jun 2024 10:11:12 -0000\r\n\r\n").sent_at.utcoffset() == timedelta(0)
    bad = fields(b"Date: sometime last tuesday\r\n\r\n")
    assert bad.sent_at is None and any("Date" in d for d in bad.defects)
    assert fields(b"Date: Mon, 31 Feb 2023 10:00:00 +0000\r\n\r\n").sent_at is None
    assert fields(b"Date: 32 Foo 2023 25:61:00 +9999\r\n\r\n").sent_at is None
    assert fields(b"Date: Mon, 3 Jun 2024 10:11:12 +2500\r\n\r\n").sent_at is None
    assert fields(b"Date:\r\n\r\n").sent_at is None


def test_addresses_lowercased_and_names_decoded():
    f = fields(b'From: "=?utf-8?b?SsO2cmc=?=" <JOERG@Example.DE>\r\n'
               b"To: A <A@X.ORG>, b@Y.org\r\nCc: \"Last, First\" <LF@x.org>\r\n\r\n")
    assert f.from_name == "Jörg" and f.from_email == "joerg@example.de"
    assert f.to_emails == ("a@x.org", "b@y.org")
    assert f.cc_emails == ("lf@x.org",)


def test_francois_display_name():
    f = fields(b"From: =?utf-8?q?Fran=C3=A7ois_van_der_Be?= =?utf-8?q?rg?= <f@example.org>\r\n\r\n")
    assert f.from_name == "François van der Berg"


def test_comment_forms_outside_the_fast_path_still_match_getaddresses():
    for value in ("a@b.c (x) y", "a@b.c (x)(y)", "a@b.c (x (nested))", "a@b.c (x, y)", 'a@b.c ("q")',
                  "a@b.c (x\\) y)", "Name <a@b.c> (comment)", "(lead) a@b.c"):
        assert headers._addresses_fast(value) is None or value == 'a@b.c ("q")', value
        want = [(n.strip(" \t"), a.lower()) for n, a in getaddresses([value]) if a]
        assert parse_addresses(value) == want, value


def test_group_and_comment_addresses():
    f = fields(b"From: bob@example.com (Bob Smith)\r\nTo: team: a@example.com, b@example.com;\r\n"
               b"Cc: undisclosed-recipients:;\r\n\r\n")
    assert f.from_name == "Bob Smith" and f.from_email == "bob@example.com"
    assert f.to_emails == ("a@example.com", "b@example.com")
    assert f.cc_emails == ()
    assert not any("Cc" in d for d in f.defects)


def test_weird_from_values():
    assert fields(b"From: <>\r\n\r\n").from_email is None
    nobody = fields(b'From: "Nobody"\r\n\r\n')
    assert (nobody.from_name, nobody.from_email) == ("Nobody", None)
    daemon = fields(b"From: MAILER-DAEMON (Mail Delivery System)\r\n\r\n")
    assert (daemon.from_name, daemon.from_email) == ("Mail Delivery System", None)
    assert fields(b"To: Bob, b@x.org\r\n\r\n").to_emails == ("b@x.org",)
    assert fields(b"From: a@b@c\r\n\r\n").from_email is None
    assert fields(b"From: a@b@c\r\n\r\n").from_name is None
    assert fields(b"From: <broken@\r\n\r\n").from_name is None


def test_empty_vs_absent_subject():
    assert fields(b"Subject:\r\n\r\n").subject == ""
    assert fields(b"Subject:    \r\n\r\n").subject == ""
    assert fields(b"From: a@b.c\r\n\r\n").subject is None
    assert fields(b"").subject is None
    assert extract_header_fields(None) == HeaderFields()


def test_nul_bytes_are_stripped():
    f = fields(b"Subject: a\x00b =?utf-8?q?c=00d?=\r\nFrom: \"N\x00ame\" <a@b.c>\r\n\r\n")
    assert f.subject == "ab cd"
    assert f.from_name == "Name"
    assert f.defects


def test_garbage_lines_are_skipped():
    f = fields(b"this is not a header\r\nSubject: ok\r\n: no name\r\n\r\n")
    assert f.subject == "ok"


def test_other_fields_ignored():
    f = fields(b"X-Subject: nope\r\nSubject: yes\r\nResent-From: r@x.y\r\nFrom: f@x.y\r\n\r\n")
    assert f.subject == "yes" and f.from_email == "f@x.y"


def test_parse_addresses_api():
    assert parse_addresses('"A, B" <AB@X.org>, c@d.e') == [("A, B", "ab@x.org"), ("", "c@d.e")]
    assert parse_addresses("Bob (comment) <bob@x.org>")[0][1] == "bob@x.org"
    assert parse_addresses("") == []
    assert parse_addresses("x@y.z", names=False) == [("", "x@y.z")]


def test_decode_header_value_never_raises():
    for value in ("=?utf-8?b?!!!notbase64?=", "=??q?empty_charset?=", "=?utf-8?x?unknown_encoding?=",
                  "prefix=?utf-8?q?glued?=suffix", "=?\u00e9?q?x?=", "=?utf-8?q?\u00e9=?="):
        assert isinstance(decode_header_value(value), str)


# --- hostile headers: every message can be stored, the poison named as a defect --------


@pytest.mark.parametrize("poison", poison_messages(), ids=lambda p: p.name)
def test_poison_headers_give_storable_fields_and_their_defect(poison):
    raw = poison.raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    got = extract_header_fields(raw)
    if poison.defect is None:
        assert got.defects == ()
    else:
        assert any(re.search(poison.defect, d) for d in got.defects), got.defects
    if poison.sent_at_is_null:
        assert got.sent_at is None
    if got.sent_at is not None:
        got.sent_at.astimezone(timezone.utc)  # what the database driver does: in range
    for text in (got.subject, got.from_name, got.message_id, got.in_reply_to, *got.references, *got.defects):
        if text is not None:
            text.encode("utf-8")  # no lone surrogate: Postgres text can hold it
            assert "\x00" not in text
    for ident in (got.message_id, got.in_reply_to, *got.references):
        assert ident is None or len(ident.encode()) <= 998  # fits an index entry


@pytest.mark.parametrize("value", [
    "Fri, 31 Dec 9999 23:59:59 -1200",   # in UTC: year 10000
    "Mon, 1 Jan 0001 00:30:00 +0100",    # in UTC: year 0
    "Sat, 1 Jan 0000 00:00:00 +0000",    # a four-digit year 0 is not 2000
    "1 Jan 10000 00:00:00 +0000",
    "Tue, 1 Jan 300000 00:00:00 GMT",    # through the email package
    "Mon, 3 Jun 2024 10:00:00 +9999",    # offsets of a day or more
    "Mon, 3 Jun 2024 10:00:00 -2400",
])
def test_dates_out_of_range_are_null_with_a_defect(value):
    defects: list[str] = []
    assert parse_date(value, defects) is None
    assert defects == [f"Date header out of range: {value!r}"]


def test_dates_at_the_edges_of_the_range_are_kept():
    assert parse_date("Fri, 31 Dec 9999 23:59:59 +0000") == datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
    assert parse_date("Fri, 31 Dec 9999 10:00:00 -1200").year == 9999
    assert parse_date("Mon, 1 Jan 0001 00:30:00 -0100") == datetime(1, 1, 1, 1, 30, tzinfo=timezone.utc)
    assert parse_date("3 Jun 0050 10:00:00 +0000").year == 50  # four digits: as written
    assert parse_date("3 Jun 99 10:00:00 +0000").year == 1999 and parse_date("3 Jun 049 10:00:00 +0000").year == 2049
    defects: list[str] = []
    assert parse_date("Mon, 31 Feb 2023 10:00:00 +0000", defects) is None
    assert defects[0].startswith("unparseable Date")  # an impossible day is not a range problem


def test_lone_surrogates_from_odd_codecs_are_replaced():
    for value in ("=?unicode-escape?q?=5Cud800?=", "=?utf-7?q?+2AA-?=", "=?raw-unicode-escape?q?a=5Cudfffb?="):
        defects: list[str] = []
        text = decode_header_value(value, defects)
        text.encode("utf-8")
        assert "\ufffd" in text and any("lone surrogates" in d for d in defects), (value, text)


def test_ids_too_long_for_an_index_are_dropped_not_cut():
    long_id = "a" * 999 + "@x"
    got = fields(f"Message-ID: <{long_id}>\r\nIn-Reply-To: <{long_id}>\r\n"
                 f"References: <one@x> <{long_id}> <two@x>\r\n\r\n".encode())
    assert got.message_id is None and got.in_reply_to is None
    assert got.references == ("one@x", "two@x")
    assert len(got.defects) == 3 and all(" id of 1001 characters dropped" in d for d in got.defects)
    wide = "é" * 400 + "@x"  # 400 characters, 802 bytes: kept
    assert fields(f"Message-ID: <{wide}>\r\n\r\n".encode()).message_id == wide
    wider = "é" * 500 + "@x"  # 1002 bytes: dropped
    assert fields(f"Message-ID: <{wider}>\r\n\r\n".encode()).message_id is None

"""Realistic test messages and a fast Maildir writer.

`make_message(i, rng=…)` builds one RFC 5322 message (CRLF line endings) of a given
`kind`: "normal", "encoded" (RFC 2047 words in many charsets, adjacent encoded words),
"broken" (the mess found in real mailboxes) or "minimal" (just a Subject).  Output is a
pure function of (i, rng state, folder_hint, kind): same seed, same bytes.

`corpus(n, seed)` yields n messages, mostly normal with a few percent of each nasty kind;
message i depends only on (seed, i, folder_hint), so `corpus_message(i, seed)` rebuilds
any one of them.

`MaildirWriter().write(user, folder, messages)` drops messages straight into a user's
Maildir (Maildir++ layout, modified UTF-7 names, `S=`/`W=` sizes in the file names, files
owned by the mail uid): ~50,000 messages in a few seconds; Dovecot assigns their UIDs,
in write order, the next time it looks at the folder.
"""

from __future__ import annotations

import base64
import dataclasses
import binascii
import datetime as _dt
import os
import random
import secrets
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from email.utils import format_datetime
from pathlib import Path

from mailbridge.testing.dovecot import MailUser, _maildir_folder_path

__all__ = [
    "KINDS",
    "make_message",
    "corpus",
    "corpus_message",
    "message_id_for",
    "MaildirWriter",
    "maildir_flag_letters",
    "Poison",
    "poison_messages",
]

KINDS = ("normal", "encoded", "broken", "minimal")
CRLF = b"\r\n"

# --------------------------------------------------------------------------- vocabulary

_FIRST = (
    "Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy",
    "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter",
    "Yvonne", "Zoe", "Amir", "Priya", "Kenji", "Lars", "Sofia", "Mateo", "Chloe", "Noah",
)
_LAST = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson",
    "Anderson", "Taylor", "Thomas", "Moore", "Martin", "Jackson", "Thompson", "White",
    "O'Neil", "Van Dyke", "McAllister", "Nakamura", "Schmidt", "Rossi", "Novak", "Dubois",
)
_DOMAINS = (
    "example.com", "example.org", "example.net", "mail.example.com", "corp.example.org",
    "lists.example.net", "uni.example.edu", "startup.example.io",
)
_WORDS = (
    "the project update meeting report budget quarter review draft schedule plan team "
    "release deadline invoice customer feedback design proposal notes agenda follow "
    "question answer ticket server database backup migration deploy weekly monthly "
    "summary action items please find attached see below thanks regards cheers hello "
    "morning afternoon tomorrow today friday monday call lunch coffee office remote "
    "travel booking flight hotel conference talk slides demo prototype issue bug fix "
    "patch version branch merge review approve comment change request urgent minor "
    "status progress blocked done pending waiting confirm cancel reschedule agenda"
).split()
_SUBJECT_TEMPLATES = (
    "{w} {w} for {day}",
    "Quarterly {w} report",
    "Meeting notes: {w} {w}",
    "Invoice #{n}",
    "[{list}] {w} {w} discussion",
    "Question about the {w} {w}",
    "Your {w} request {n}",
    "{w} {w} {w}",
    "Fwd: {w} {w}",
    "Reminder: {w} on {day}",
    "Build #{n} {status}",
)
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "the weekend")
_LISTS = ("python-dev", "dovecot", "announce", "team", "ops")
_STATUS = ("passed", "failed", "fixed", "still failing")
_TZ_OFFSETS = (0, 60, 120, -300, -420, 330, 540, 600, -180, 345)
_MAILERS = ("Mozilla Thunderbird 115.3", "Apple Mail (2.3731)", "Microsoft Outlook 16.0",
            "mutt/2.2.9", "Roundcube Webmail/1.6.2")
_BASE_DATE = _dt.datetime(2023, 1, 2, 8, 0, 0, tzinfo=_dt.timezone.utc)

# Non-ASCII texts and the charsets they are encoded in for the "encoded" kind.
_INTL_TEXTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Café crème brûlée", ("utf-8", "iso-8859-1", "windows-1252")),
    ("Grüße aus Köln – Bericht", ("utf-8", "iso-8859-15", "windows-1252")),
    ("Prix: 50 € – résumé", ("utf-8", "iso-8859-15", "windows-1252")),
    ("Привет, мир! Отчёт", ("utf-8", "koi8-r", "windows-1251")),
    ("会議の議事録について", ("utf-8", "iso-2022-jp", "shift_jis", "euc-jp")),
    ("你好世界 项目进展", ("utf-8", "gb2312", "gb18030")),
    ("專案會議記錄", ("utf-8", "big5")),
    ("안녕하세요 회의 일정", ("utf-8", "euc-kr")),
    ("Ζωή και Ελλάδα", ("utf-8", "iso-8859-7")),
    ("Zażółć gęślą jaźń", ("utf-8", "iso-8859-2")),
    ("Emoji test 🎉🚀 done", ("utf-8",)),
    ("Ünïcödé ßtraße", ("utf-8", "iso-8859-1")),
)


def _encodable(text: str, charset: str) -> bool:
    try:
        text.encode(charset)
        return True
    except UnicodeEncodeError:
        return False


_INTL_TEXTS = tuple(
    (text, tuple(cs for cs in charsets if _encodable(text, cs)) or ("utf-8",))
    for text, charsets in _INTL_TEXTS
)
_INTL_NAMES = (
    ("François van der Berg", "francois@example.org"),
    ("Jörg Müller", "joerg.mueller@example.de"),
    ("José García", "jose.garcia@example.es"),
    ("Zoë Ångström", "zoe@example.se"),
    ("山田太郎", "taro.yamada@example.jp"),
    ("Иван Петров", "ivan@example.ru"),
    ("Łukasz Żółkiewski", "lukasz@example.pl"),
    ("Søren Kierkegård", "soren@example.dk"),
)


# --------------------------------------------------------------------------- pieces


def message_id_for(i: int, folder_hint: str = "") -> str:
    """The Message-ID (with brackets) that message i of a corpus gets."""
    tag = zlib.crc32(folder_hint.encode("utf-8")) & 0xFFFFFF
    return f"<{i}.{tag:06x}.mailgen@{_DOMAINS[i % len(_DOMAINS)]}>"


def _base_subject(i: int) -> str:
    """The subject of thread root i (replies reuse it with "Re: ")."""
    r = random.Random(i * 7919 + 17)
    text = r.choice(_SUBJECT_TEMPLATES).format(
        w=_W(r), day=r.choice(_DAYS), n=r.randint(100, 99999), list=r.choice(_LISTS),
        status=r.choice(_STATUS),
    )
    return text[:1].upper() + text[1:]


class _W:
    """Each `{w}` in a template draws a fresh word."""

    def __init__(self, r: random.Random) -> None:
        self.r = r

    def __format__(self, spec: str) -> str:
        return self.r.choice(_WORDS)


def _person(rng: random.Random) -> tuple[str, str]:
    first = rng.choice(_FIRST)
    last = rng.choice(_LAST)
    local = f"{first}.{last}".lower().replace("'", "").replace(" ", "")
    return f"{first} {last}", f"{local}@{rng.choice(_DOMAINS)}"


def _fmt_addr(rng: random.Random, name: str, email: str) -> str:
    r = rng.random()
    if r < 0.55:
        return f"{name} <{email}>" if "'" not in name else f'"{name}" <{email}>'
    if r < 0.75:
        first, _, last = name.partition(" ")
        return f'"{last}, {first}" <{email}>'
    if r < 0.9:
        return email
    if r < 0.95:
        return f"<{email}>"
    return f"{email} ({name})"


def _addresses(rng: random.Random, k: int) -> str:
    return ", ".join(_fmt_addr(rng, *_person(rng)) for _ in range(k))


def _date_for(i: int, rng: random.Random) -> _dt.datetime:
    seconds = i * 1020 + rng.randint(0, 900)
    offset = _dt.timedelta(minutes=rng.choice(_TZ_OFFSETS))
    return (_BASE_DATE + _dt.timedelta(seconds=seconds)).astimezone(_dt.timezone(offset))


def _date_header(i: int, rng: random.Random) -> str:
    return format_datetime(_date_for(i, rng))


def _sentence(rng: random.Random, lo: int = 6, hi: int = 16) -> str:
    return " ".join(rng.choices(_WORDS, k=rng.randint(lo, hi))).capitalize() + "."


def _paragraphs(rng: random.Random, n: int) -> list[str]:
    """n paragraphs of sentences, wrapped at 72 columns, each followed by a blank line."""
    lines: list[str] = []
    for _ in range(n):
        words: list[str] = []
        for _ in range(rng.randint(1, 4)):
            sentence = rng.choices(_WORDS, k=rng.randint(6, 16))
            sentence[0] = sentence[0].capitalize()
            sentence[-1] += "."
            words += sentence
        line = words[0]
        for word in words[1:]:
            if len(line) + len(word) >= 72:
                lines.append(line)
                line = word
            else:
                line += " " + word
        lines.append(line)
        lines.append("")
    return lines


def _q_word(text: str, charset: str) -> str:
    """RFC 2047 Q encoded word."""
    raw = text.encode(charset)
    out = []
    for b in raw:
        c = chr(b)
        if c == " ":
            out.append("_")
        elif 33 <= b <= 126 and c not in "=?_\"(),.:;<>@[\\]":
            out.append(c)
        else:
            out.append(f"={b:02X}")
    return f"=?{charset}?q?{''.join(out)}?="


def _b_word(text: str, charset: str) -> str:
    return f"=?{charset}?b?{base64.b64encode(text.encode(charset)).decode('ascii')}?="


def _encoded(rng: random.Random, text: str, charset: str) -> str:
    return _q_word(text, charset) if rng.random() < 0.5 else _b_word(text, charset)


def _fold(name: str, value: str) -> str:
    """Fold a header at spaces so no line exceeds 78 characters."""
    line = f"{name}: "
    out: list[str] = []
    for token in value.split(" "):
        if len(line) + len(token) > 76 and line.strip() and not line.endswith(": "):
            out.append(line.rstrip(" "))
            line = " " + token + " "
        else:
            line += token + " "
    out.append(line.rstrip(" "))
    return "\r\n".join(out)


def _attachment(rng: random.Random, i: int) -> tuple[str, str, str]:
    kind = rng.choice(
        (("application/pdf", f"report-{i}.pdf"), ("image/png", f"image{i % 10}.png"),
         ("text/csv", f"data-{i}.csv"), ("application/octet-stream", "blob.bin"))
    )
    size = rng.randint(120, 2400)
    payload = rng.randbytes(size)
    b64 = base64.encodebytes(payload).decode("ascii").replace("\n", "\r\n").rstrip("\r\n")
    return kind[0], kind[1], b64


def _boundary(rng: random.Random) -> str:
    return "=_mailgen_" + "%016x" % rng.getrandbits(64)


def _body_plain(rng: random.Random) -> tuple[list[str], str]:
    lines = _paragraphs(rng, rng.randint(1, 4))
    lines += ["--", _person(rng)[0]]
    return ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 7bit"], "\r\n".join(lines)


def _body_normal(rng: random.Random, i: int) -> tuple[list[str], str]:
    r = rng.random()
    if r < 0.6:
        return _body_plain(rng)
    text = "\r\n".join(_paragraphs(rng, rng.randint(1, 3)))
    html = "<html><body>" + "".join(f"<p>{_sentence(rng)}</p>" for _ in range(rng.randint(1, 4))) + "</body></html>"
    b1 = _boundary(rng)
    alt = (
        f"--{b1}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n{text}\r\n"
        f"--{b1}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n{html}\r\n"
        f"--{b1}--"
    )
    if r < 0.85:
        return ["MIME-Version: 1.0", f'Content-Type: multipart/alternative; boundary="{b1}"'], alt
    b2 = _boundary(rng)
    ctype, fname, b64 = _attachment(rng, i)
    mixed = (
        "This is a multi-part message in MIME format.\r\n"
        f"--{b2}\r\nContent-Type: multipart/alternative; boundary=\"{b1}\"\r\n\r\n{alt}\r\n"
        f"--{b2}\r\nContent-Type: {ctype}; name=\"{fname}\"\r\n"
        f"Content-Disposition: attachment; filename=\"{fname}\"\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{b64}\r\n"
        f"--{b2}--"
    )
    return ["MIME-Version: 1.0", f'Content-Type: multipart/mixed; boundary="{b2}"'], mixed


def _thread_headers(rng: random.Random, i: int, folder_hint: str) -> tuple[list[str], int | None]:
    """In-Reply-To/References to earlier messages of the same corpus (30 % are replies)."""
    if i == 0 or rng.random() >= 0.3:
        return [], None
    root = i - rng.randint(1, min(i, 25))
    chain = [root]
    k = root
    while k < i - 1 and len(chain) < 6 and rng.random() < 0.5:
        k = rng.randint(k + 1, i - 1)
        chain.append(k)
    refs = [message_id_for(j, folder_hint) for j in chain]
    headers = [f"In-Reply-To: {refs[-1]}", _fold("References", " ".join(refs))]
    return headers, root


# --------------------------------------------------------------------------- kinds


def _normal(i: int, rng: random.Random, folder_hint: str) -> bytes:
    from_name, from_email = _person(rng)
    thread, root = _thread_headers(rng, i, folder_hint)
    subject = _base_subject(root if root is not None else i)
    if root is not None:
        subject = ("Re: " if rng.random() < 0.85 else "RE: ") + subject
    received_host = rng.choice(_DOMAINS)
    date = _date_header(i, rng)
    h = [
        f"Return-Path: <{from_email}>",
        f"Received: from mx{rng.randint(1, 9)}.{received_host} (mx.{received_host} [192.0.2.{rng.randint(1, 254)}])\r\n"
        f"\tby imap.example.com with ESMTPS id {rng.getrandbits(40):010x}\r\n\tfor <me@example.com>; {date}",
        f"Message-ID: {message_id_for(i, folder_hint)}",
        f"Date: {date}",
        f"From: {_fmt_addr(rng, from_name, from_email)}",
        _fold("To", _addresses(rng, rng.choice((1, 1, 1, 2, 3)))),
    ]
    if rng.random() < 0.3:
        h.append(_fold("Cc", _addresses(rng, rng.randint(1, 4))))
    h.append(_fold("Subject", subject))
    h += thread
    if folder_hint.lower().startswith("lists") or rng.random() < 0.1:
        lst = rng.choice(_LISTS)
        h.append(f"List-Id: <{lst}.lists.example.net>")
    if rng.random() < 0.5:
        h.append(f"X-Mailer: {rng.choice(_MAILERS)}")
    ct, body = _body_normal(rng, i)
    if not any(x.startswith("MIME-Version") for x in ct):
        h.append("MIME-Version: 1.0")
    h += ct
    return ("\r\n".join(h) + "\r\n\r\n" + body + "\r\n").encode("utf-8")


def _encoded_kind(i: int, rng: random.Random, folder_hint: str) -> bytes:
    text, charsets = rng.choice(_INTL_TEXTS)
    charset = rng.choice(charsets)
    variant = rng.randrange(6)
    if variant == 0:  # one encoded word
        subject = _encoded(rng, text, charset)
    elif variant == 1:  # plain prefix + encoded word + plain suffix
        subject = f"Re: [{rng.choice(_LISTS)}] " + _encoded(rng, text, charset) + " (update)"
    elif variant == 2:  # adjacent encoded words split inside a word: must join without space
        cut = rng.randint(1, len(text) - 1)
        subject = _q_word(text[:cut], "utf-8") + " " + _q_word(text[cut:], "utf-8")
    elif variant == 3:  # adjacent words folded onto the next line, B then Q
        cut = rng.randint(1, len(text) - 1)
        subject = _b_word(text[:cut], "utf-8") + "\r\n " + _q_word(text[cut:], "utf-8")
    elif variant == 4:  # two different charsets in one header
        t2, cs2 = rng.choice(_INTL_TEXTS)
        subject = _encoded(rng, text, charset) + " " + _encoded(rng, t2, rng.choice(cs2))
    else:  # upper-case charset/encoding letters
        subject = _b_word(text, "utf-8").replace("?utf-8?b?", "?UTF-8?B?")
    name, email = rng.choice(_INTL_NAMES)
    r = rng.random()
    if name.startswith("François") and r < 0.5:
        from_ = f"=?utf-8?q?Fran=C3=A7ois_van_der_Be?= =?utf-8?q?rg?= <{email}>"
    elif r < 0.7:
        from_ = f"{_encoded(rng, name, 'utf-8')} <{email}>"
    elif r < 0.85:
        # encoded word inside a quoted string: invalid per RFC 2047, common in practice
        from_ = f'"{_b_word(name, "utf-8")}" <{email}>'
    else:
        try:
            from_ = f"{_q_word(name, 'iso-8859-1')} <{email}>"
        except UnicodeEncodeError:
            from_ = f"{_q_word(name, 'utf-8')} <{email}>"
    to_name, to_email = rng.choice(_INTL_NAMES)
    to = f"{_encoded(rng, to_name, 'utf-8')} <{to_email}>, {_addresses(rng, 1)}"
    body_text = f"{text}\r\n\r\n" + "\r\n".join(_paragraphs(rng, 1))
    if rng.random() < 0.5:
        cte = "quoted-printable"
        payload = binascii.b2a_qp(body_text.encode("utf-8"), istext=False).decode("ascii")
        payload = payload.replace("\r\n", "\n").replace("\n", "\r\n")
        body_cs = "utf-8"
    else:
        cte = "base64"
        payload = base64.encodebytes(body_text.encode("utf-8")).decode("ascii").replace("\n", "\r\n").rstrip("\r\n")
        body_cs = "utf-8"
    thread, _root = _thread_headers(rng, i, folder_hint)
    h = [
        f"Message-ID: {message_id_for(i, folder_hint)}",
        f"Date: {_date_header(i, rng)}",
        f"From: {from_}",
        _fold("To", to),
    ]
    if rng.random() < 0.3:
        cc_name, cc_email = rng.choice(_INTL_NAMES)
        h.append(f"Cc: {_encoded(rng, cc_name, 'utf-8')} <{cc_email}>")
    h.append(f"Subject: {subject}")
    h += thread
    h += ["MIME-Version: 1.0", f"Content-Type: text/plain; charset={body_cs}",
          f"Content-Transfer-Encoding: {cte}"]
    return ("\r\n".join(h) + "\r\n\r\n" + payload + "\r\n").encode("utf-8")


_BAD_DATES = (
    "sometime last tuesday",
    "32 Foo 2023 25:61:00 +9999",
    "Mon, 31 Feb 2023 10:00:00 +0000",
    "2023-13-45T99:99:99Z",
    "Tue, 7 Mar 23 10:00 GMT+2",
    "",
    "0",
    "Fri, 13 Oct 2023 14:26:00 (CEST)",
)
_BROKEN_DEFECTS = (
    "unknown_charset", "lying_charset", "raw_8bit_subject", "raw_latin1_from",
    "no_message_id", "no_date", "bad_date", "folded", "dup_subject", "empty_subject",
    "no_subject", "bad_encoded_word", "msgid_no_brackets", "weird_addresses",
    "lowercase_names", "long_references", "bad_references", "8bit_body",
    "split_multibyte",
)


def _broken_kind(i: int, rng: random.Random, folder_hint: str) -> bytes:
    defects = set(rng.sample(_BROKEN_DEFECTS, rng.randint(2, 4)))
    from_name, from_email = _person(rng)
    subject: bytes | None = _base_subject(i).encode("ascii")
    h: list[bytes] = []
    if "msgid_no_brackets" in defects:
        h.append(f"Message-ID: {message_id_for(i, folder_hint).strip('<>')}".encode())
    elif "no_message_id" not in defects:
        h.append(f"Message-ID: {message_id_for(i, folder_hint)}".encode())
    if "bad_date" in defects:
        h.append(f"Date: {rng.choice(_BAD_DATES)}".rstrip().encode() if rng.random() < 0.9 else b"Date:")
    elif "no_date" not in defects:
        h.append(f"Date: {_date_header(i, rng)}".encode())
    if "raw_latin1_from" in defects:
        h.append(b"From: J\xf6rg M\xfcller <joerg@example.de>")
    elif "weird_addresses" in defects:
        h.append(rng.choice((b"From: <>", b'From: "Nobody"', b"From: MAILER-DAEMON",
                              b"From: a@b@c", b"From: <broken@")))
    else:
        h.append(f"From: {from_name} <{from_email}>".encode())
    if "weird_addresses" in defects:
        h.append(rng.choice((b"To: undisclosed-recipients:;", b"To: team: a@example.com, b@example.com;",
                              b"To: ,,, x@example.com,", b"To:")))
    elif "folded" in defects:
        addrs = ", ".join(f"{_person(rng)[0]} <{_person(rng)[1]}>" for _ in range(8))
        h.append(_fold("To", addrs).encode())
    else:
        h.append(f"To: {_addresses(rng, 1)}".encode())
    if "unknown_charset" in defects:
        subject = b"=?x-unknown-42?q?Hello_W=F6rld?= and " + rng.choice((b"=?foo?b?SGVsbG8=?=", b"more"))
    if "lying_charset" in defects:
        subject = rng.choice((
            b"=?us-ascii?q?Caf=C3=A9_au_lait?=",        # says ASCII, is UTF-8
            b"=?utf-8?q?caf=E9_cr=E8me?=",              # says UTF-8, is Latin-1
            b"=?utf-8?b?" + base64.b64encode("Grüße".encode("latin-1")) + b"?=",
            b"=?iso-8859-1?b?" + base64.b64encode("日本語".encode("utf-8")) + b"?=",
        ))
    if "raw_8bit_subject" in defects:
        subject = rng.choice(("Grüße – Ärger im Büro".encode("utf-8"), "Ça va? Très bien".encode("latin-1"),
                              "日本語の件名".encode("utf-8"), "Привет".encode("koi8-r")))
    if "bad_encoded_word" in defects:
        subject = rng.choice((b"=?utf-8?q?unterminated word", b"=?utf-8?b?!!!notbase64?=",
                              b"=?utf-8?b?SGVsbG8?=", b"=?utf-8?x?unknown_encoding?=",
                              b"prefix=?utf-8?q?glued?=suffix", b"=??q?empty_charset?="))
    if "split_multibyte" in defects:  # a UTF-8 character split across two encoded words
        raw = "Fran\u00e7ois".encode("utf-8")
        subject = (b"=?utf-8?q?" + b"".join(b"=%02X" % b for b in raw[:5]) + b"?= =?utf-8?q?"
                   + b"".join(b"=%02X" % b for b in raw[5:]) + b"?=")
    if "empty_subject" in defects:
        subject = rng.choice((b"", b" "))
    if "folded" in defects and subject:
        subject = subject + b"\r\n\tcontinued on a second line\r\n  and a third"
    if "no_subject" not in defects and subject is not None:
        name = b"subject" if "lowercase_names" in defects else b"Subject"
        h.append(name + b":" + (b" " + subject if subject.strip() else subject))
        if "dup_subject" in defects:
            h.append(b"Subject: a second Subject header " + str(i).encode())
    if i > 0 and "bad_references" in defects:
        h.append(b"In-Reply-To: " + message_id_for(i - 1, folder_hint).encode() + b" (Alice's message of yesterday)")
        h.append(b"References: <a@b> garbage here " + message_id_for(i - 1, folder_hint).encode() + b" <unterminated@x")
    elif i > 0 and "long_references" in defects:
        refs = " ".join(message_id_for(j, folder_hint) for j in range(max(0, i - 60), i))
        h.append(b"In-Reply-To: " + message_id_for(i - 1, folder_hint).encode())
        h.append(b"References: " + refs.encode())  # one long unfolded line
    if "lowercase_names" in defects:
        h = [line[:1].lower() + line[1:] if line[:1].isupper() and b":" in line[:20] else line for line in h]
    if "8bit_body" in defects:
        body = "Ünïcödé body without any Content-Type, raw 8-bit: naïve café.\r\n".encode("latin-1")
    else:
        h += [b"MIME-Version: 1.0", b"Content-Type: text/plain; charset=utf-8"]
        body = ("\r\n".join(_paragraphs(rng, 1)) + "\r\n").encode("utf-8")
    msg = b"\r\n".join(h) + b"\r\n\r\n" + body
    assert b"\0" not in msg
    return msg


def _minimal_kind(i: int, rng: random.Random, folder_hint: str) -> bytes:
    return b"Subject: minimal message %d\r\n\r\nHi.\r\n" % i


_BUILDERS: dict[str, Callable[[int, random.Random, str], bytes]] = {
    "normal": _normal,
    "encoded": _encoded_kind,
    "broken": _broken_kind,
    "minimal": _minimal_kind,
}


def make_message(i: int, *, rng: random.Random, folder_hint: str = "", kind: str = "normal") -> bytes:
    """Message number i of a mailbox, as bytes with CRLF line endings.

    Its Message-ID is `message_id_for(i, folder_hint)` (except where a "broken" message
    drops or mangles it); replies reference earlier numbers of the same folder_hint.
    """
    try:
        builder = _BUILDERS[kind]
    except KeyError:
        raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}") from None
    return builder(i, rng, folder_hint)


# --- poison: messages any outside sender can send that once stopped a folder ------------


@dataclasses.dataclass(frozen=True)
class Poison:
    """One hostile message and what its mirrored row must show."""

    name: str
    raw: bytes
    defect: str | None  # a regular expression one of the row's defects matches; None: no defect
    sent_at_is_null: bool = False


def _poison(name: str, headers: list[bytes], defect: str | None, *, sent_at_is_null: bool = False,
            date: bytes = b"Mon, 3 Jun 2024 10:00:00 +0000") -> Poison:
    fixed = [b"Message-ID: <poison-%s@mailgen.example>" % name.encode(), b"From: Mallory <mallory@example.net>",
             b"To: victim@example.org", b"Date: " + date, b"Subject: poison " + name.encode()]
    names = {h.split(b":", 1)[0].lower() for h in headers}
    lines = [h for h in fixed if h.split(b":", 1)[0].lower() not in names] + headers
    return Poison(name, b"\r\n".join(lines) + b"\r\n\r\nThis message is hostile on purpose.\r\n",
                  defect, sent_at_is_null)


def poison_messages() -> list[Poison]:
    """The catalogue of hostile headers: each message mirrored, the poison as a defect.

    Every header section stays under 1 MiB (what a client may cap a header FETCH at)."""
    out_of_range = r"^Date header out of range: "
    every_marker = ("\x1f\x1e\x1d\x1c" + "".join(chr(c) for c in range(0xE000, 0xF900))).encode()
    recipients = b",\r\n ".join(b"r%05d@example.org" % n for n in range(10_000))
    return [
        _poison("date-9999-minus-1200", [], out_of_range, sent_at_is_null=True,
                date=b"Fri, 31 Dec 9999 23:59:59 -1200"),
        _poison("date-year-0", [], out_of_range, sent_at_is_null=True, date=b"Sat, 1 Jan 0000 00:00:00 +0000"),
        _poison("date-year-1-east", [], out_of_range, sent_at_is_null=True, date=b"Mon, 1 Jan 0001 00:30:00 +0100"),
        _poison("date-beyond-postgres", [], out_of_range, sent_at_is_null=True,
                date=b"Tue, 1 Jan 300000 00:00:00 +0000"),
        _poison("date-offset-9999", [], out_of_range, sent_at_is_null=True, date=b"Mon, 3 Jun 2024 10:00:00 +9999"),
        _poison("date-9999-utc", [], None, date=b"Fri, 31 Dec 9999 23:59:59 +0000"),  # the last storable second
        _poison("huge-subject", [b"Subject: " + b"spam " * 100_000], None),
        _poison("huge-message-id", [b"Message-ID: <" + b"x" * 5000 + b"@example.net>"], r"^Message-ID id of \d+"),
        _poison("huge-references", [b"In-Reply-To: <" + b"y" * 4000 + b"@example.net>",
                                    b"References: <ok@example.net> <" + b"z" * 4000 + b"@example.net>"],
                r"^(In-Reply-To|References) id of \d+"),
        _poison("binary-header", [b"Subject: " + bytes(range(0x80, 0x100))], r"8-bit header bytes"),
        _poison("nul-bytes", [b"Subject: nul\x00in\x00subject"], r"NUL bytes removed|8-bit header bytes"),
        _poison("invalid-utf8-name", [b"From: \"J\xe9r\xf4me \xff\xfe\" <jerome@example.net>"],
                r"8-bit header bytes"),
        _poison("unknown-charset", [b"Subject: =?x-klingon?q?Qapla=FF=FE?="], r"encoded word in charset"),
        _poison("surrogates-unicode-escape", [b"Subject: =?unicode-escape?q?=5Cud800 and =5Cudfff?="],
                r"lone surrogates"),
        _poison("surrogates-utf7", [b"From: =?utf-7?q?+2AA-?= <seven@example.net>"], r"lone surrogates"),
        _poison("ten-thousand-recipients", [b"To: " + recipients], None),
        _poison("every-separator", [b"Subject: " + every_marker], None),
    ]


def _kind_for(r: float, mix: tuple[float, float, float]) -> str:
    enc, broken, minimal = mix
    if r < enc:
        return "encoded"
    if r < enc + broken:
        return "broken"
    if r < enc + broken + minimal:
        return "minimal"
    return "normal"


def corpus_message(i: int, seed: int = 0, *, folder_hint: str = "",
                   mix: tuple[float, float, float] = (0.04, 0.04, 0.02)) -> bytes:
    """Message i of `corpus(…, seed, folder_hint=…, mix=…)`, alone."""
    rng = random.Random(f"{seed}/{folder_hint}/{i}")
    kind = _kind_for(rng.random(), mix)
    return make_message(i, rng=rng, folder_hint=folder_hint, kind=kind)


def corpus(n: int, seed: int = 0, *, folder_hint: str = "", start: int = 0,
           mix: tuple[float, float, float] = (0.04, 0.04, 0.02)) -> Iterator[bytes]:
    """n messages (numbers start … start+n-1): mostly normal; `mix` gives the share of
    encoded, broken and minimal messages (default 4 %, 4 %, 2 %)."""
    for i in range(start, start + n):
        yield corpus_message(i, seed, folder_hint=folder_hint, mix=mix)


# --------------------------------------------------------------------------- Maildir


_FLAG_LETTERS = {"\\draft": "D", "\\flagged": "F", "\\answered": "R", "\\seen": "S", "\\deleted": "T"}
_seq_lock_counter = [0]


def maildir_flag_letters(flags: Iterable[str]) -> tuple[str, list[str]]:
    """System flags → Maildir info letters; returns (letters, keywords)."""
    letters = set()
    keywords = []
    for f in flags:
        letter = _FLAG_LETTERS.get(f.lower())
        if letter:
            letters.add(letter)
        elif f.startswith("\\"):
            if f.lower() != "\\recent":
                raise ValueError(f"unsupported system flag {f!r}")
        else:
            keywords.append(f)
    return "".join(sorted(letters)), keywords


class MaildirWriter:
    """Writes messages straight into a user's Maildir, much faster than APPEND.

    Each message goes to `tmp/` and is renamed into `cur/` as
    ``<secs>.M<usec>P<pid>Q<n>.mailgen,S=<size>,W=<crlf size>:2,<flags>``; names sort
    in write order so Dovecot assigns ascending UIDs in that order the next time it
    scans the folder (any SELECT/STATUS/IDLE).  `S=` is the file size and `W=` the size
    with bare LFs counted as CRLF, which is what Dovecot reports as RFC822.SIZE.

    Keywords (non-\\ flags) are registered in the folder's `dovecot-keywords` file
    (at most 26 per folder).
    """

    def __init__(self, *, atomic: bool = True) -> None:
        self.atomic = atomic
        self._token = secrets.token_hex(3)

    def folder_path(self, user: MailUser, folder: str) -> Path:
        return _maildir_folder_path(user.maildir, folder, user.separator)

    def ensure_folder(self, user: MailUser, folder: str) -> Path:
        """Create the folder's Maildir++ directory (and cur/new/tmp) if needed."""
        path = self.folder_path(user, folder)
        created = []
        for d in (user.maildir, path, path / "cur", path / "new", path / "tmp"):
            if not d.is_dir():
                d.mkdir(mode=0o700, exist_ok=True)
                created.append(d)
        if path != user.maildir and not (path / "maildirfolder").exists():
            (path / "maildirfolder").touch(mode=0o600)
            created.append(path / "maildirfolder")
        if user.uid is not None and os.geteuid() == 0:
            for p in created:
                os.chown(p, user.uid, user.gid if user.gid is not None else -1)
        return path

    def write(
        self,
        user: MailUser,
        folder: str,
        messages: Iterable[bytes],
        flags_for: Callable[[int, bytes], Iterable[str] | None] | None = None,
        internal_date_for: Callable[[int, bytes], _dt.datetime | float | None] | None = None,
    ) -> int:
        """Write the messages into `folder` of `user`; returns how many were written.

        flags_for(i, message) → IMAP flags for message i (e.g. ("\\\\Seen",)); system
        flags become Maildir info letters, others keywords.
        internal_date_for(i, message) → its INTERNALDATE (the file's mtime); default now.
        """
        path = self.ensure_folder(user, folder)
        cur = str(path / "cur")
        tmp = str(path / "tmp")
        uid = user.uid if (user.uid is not None and os.geteuid() == 0) else None
        gid = user.gid if user.gid is not None else -1
        pid = os.getpid()
        secs0 = int(time.time())
        keywords = _Keywords(path, uid, gid) if flags_for is not None else None
        seq = _seq_lock_counter
        flags_o = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        count = 0
        for i, msg in enumerate(messages):
            n = seq[0]
            seq[0] += 1
            size = len(msg)
            vsize = size + msg.count(b"\n") - msg.count(b"\r\n")
            info = ""
            if flags_for is not None:
                fl = flags_for(i, msg)
                if fl:
                    letters, kws = maildir_flag_letters(fl)
                    if kws and keywords is not None:
                        letters += keywords.letters(kws)
                    info = "".join(sorted(letters))
            base = (
                f"{secs0 + n // 1_000_000}.M{n % 1_000_000}P{pid}Q{n}{self._token}.mailgen"
                f",S={size},W={vsize}"
            )
            final = f"{cur}/{base}:2,{info}"
            target = f"{tmp}/{base}" if self.atomic else final
            fd = os.open(target, flags_o, 0o600)
            try:
                view = memoryview(msg)
                while view:
                    view = view[os.write(fd, view):]
                if uid is not None:
                    os.fchown(fd, uid, gid)
                if internal_date_for is not None:
                    when = internal_date_for(i, msg)
                    if when is not None:
                        ts = when.timestamp() if isinstance(when, _dt.datetime) else float(when)
                        os.utime(fd, (ts, ts))
            finally:
                os.close(fd)
            if self.atomic:
                os.rename(target, final)
            count += 1
        if keywords is not None:
            keywords.save()
        return count


class _Keywords:
    """The folder's dovecot-keywords file: "<index> <keyword>" lines, index 0 = 'a'."""

    def __init__(self, folder: Path, uid: int | None, gid: int) -> None:
        self.path = folder / "dovecot-keywords"
        self.uid, self.gid = uid, gid
        self.index: dict[str, int] = {}
        self.dirty = False
        try:
            for line in self.path.read_text("utf-8").splitlines():
                num, _, name = line.partition(" ")
                if num.isdigit() and name:
                    self.index[name] = int(num)
        except FileNotFoundError:
            pass

    def letters(self, keywords: Iterable[str]) -> str:
        out = []
        for kw in keywords:
            if kw not in self.index:
                used = set(self.index.values())
                free = next((k for k in range(26) if k not in used), None)
                if free is None:
                    raise ValueError("a Maildir folder holds at most 26 keywords")
                self.index[kw] = free
                self.dirty = True
            out.append(chr(ord("a") + self.index[kw]))
        return "".join(out)

    def save(self) -> None:
        if not self.dirty:
            return
        text = "".join(f"{n} {kw}\n" for kw, n in sorted(self.index.items(), key=lambda x: x[1]))
        tmp = self.path.with_name("dovecot-keywords.mailgen-tmp")
        tmp.write_text(text, "utf-8")
        if self.uid is not None:
            os.chown(tmp, self.uid, self.gid)
        os.replace(tmp, self.path)
        self.dirty = False

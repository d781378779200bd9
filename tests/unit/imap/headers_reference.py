"""`mailbridge.imap.headers` as of e0f8d16 (its code unchanged, this docstring aside),
before the shortcuts that `test_headers_fast_path.py` holds the module to: the same
fields and defects, byte for byte.  Frozen: the old behaviour, not code to maintain.
"""

from __future__ import annotations

import binascii
import codecs
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.charset import Charset
from email.header import decode_header as _email_decode_header
from email.header import make_header as _email_make_header
from email.utils import getaddresses as _email_getaddresses
from email.utils import parsedate_to_datetime as _email_parsedate

from mailbridge.imap.models import HeaderFields

# --- the header block ------------------------------------------------------------------

# A field: name, colon, the rest of the line and its continuation lines.  `.` matches
# "\r", so CRLF-terminated blocks work; blank and malformed lines are skipped.
_FIELD_RE = re.compile(r"^([!-9;-~]+)[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.M)

_MESSAGE_ID, _SUBJECT, _FROM, _TO, _CC, _DATE, _IN_REPLY_TO, _REFERENCES = range(8)
_WANTED = {
    "message-id": _MESSAGE_ID,
    "subject": _SUBJECT,
    "from": _FROM,
    "to": _TO,
    "cc": _CC,
    "date": _DATE,
    "in-reply-to": _IN_REPLY_TO,
    "references": _REFERENCES,
}
_EMPTY = HeaderFields()


def _short(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _decode_8bit_block(raw: bytes, defects: list[str]) -> str:
    """A header block that is not UTF-8: each line as UTF-8, else windows-1252, else latin-1."""
    out = []
    fallback = False
    for line in raw.split(b"\n"):
        try:
            out.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            fallback = True
            try:
                out.append(line.decode("cp1252"))
            except UnicodeDecodeError:
                out.append(line.decode("latin-1"))
    if fallback:
        defects.append("8-bit header bytes are not UTF-8; decoded as windows-1252")
    return "\n".join(out)


def extract_header_fields(raw: bytes | bytearray | None) -> HeaderFields:
    """The stored fields of a raw header block; never raises, never invents a value."""
    if not raw:
        return _EMPTY
    defects: list[str] = []
    if b"\x00" in raw:
        raw = raw.replace(b"\x00", b"")
        defects.append("NUL bytes removed from headers")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = _decode_8bit_block(bytes(raw), defects)

    values: list[str | None] = [None] * 8
    wanted = _WANTED
    for name, value in _FIELD_RE.findall(text):
        slot = wanted.get(name.lower())
        if slot is None:
            continue
        if values[slot] is not None:
            defects.append(f"duplicate {name} header ignored")
            continue
        if "\n" in value:  # unfold
            value = value.replace("\r\n", "").replace("\n", "")
        values[slot] = value.strip(" \t\r\n")
    message_id, subject, from_, to, cc, date, in_reply_to, references = values

    from_name = from_email = None
    if from_ is not None:
        pairs = parse_addresses(from_, defects, "From", lower=False)
        if pairs:
            for name, addr in pairs:
                if _is_address(addr):
                    from_email = addr.lower()
                    break
            else:  # 'From: "Nobody"', 'From: MAILER-DAEMON': a name, not an address
                name, addr = pairs[0]
                if not name and "@" not in addr:
                    name = addr
            if name:
                from_name = decode_header_value(name, defects).strip() or None
    mid = _message_id(message_id) if message_id is not None else None
    if mid is not None and len(mid) > _ID_CHARS_SAFE:
        mid = _bounded_id(mid, "Message-ID", defects)
    reply_to = _first_msgid(in_reply_to) if in_reply_to else None
    if reply_to is not None and len(reply_to) > _ID_CHARS_SAFE:
        reply_to = _bounded_id(reply_to, "In-Reply-To", defects)
    refs = _msgids(references) if references else ()
    if references is not None and len(references) > _ID_CHARS_SAFE:
        refs = tuple(r for r in refs if len(r) <= _ID_CHARS_SAFE or _bounded_id(r, "References", defects))
    return HeaderFields(
        mid,
        decode_header_value(subject, defects) if subject is not None else None,
        from_name,
        from_email,
        _emails(to, defects, "To") if to else (),
        _emails(cc, defects, "Cc") if cc else (),
        parse_date(date, defects) if date is not None else None,
        reply_to,
        refs,
        tuple(defects),
    )


# A message id is indexed (Message-ID, In-Reply-To: btree; References: GIN), and an index
# entry holds at most ~2.7 kB: longer ids are dropped (none is real: RFC 5322 lines end at
# 998 characters).  Ids of at most _ID_CHARS_SAFE characters fit whatever they hold.
_ID_MAX_BYTES = 998
_ID_CHARS_SAFE = _ID_MAX_BYTES // 4


def _bounded_id(value: str, field: str, defects: list[str]) -> str | None:
    """`value` if its UTF-8 form fits _ID_MAX_BYTES, else None and a defect."""
    if len(value.encode("utf-8", "replace")) <= _ID_MAX_BYTES:
        return value
    defects.append(f"{field} id of {len(value)} characters dropped (at most {_ID_MAX_BYTES} bytes are kept)")
    return None


def _is_address(addr: str) -> bool:
    """local@domain, both parts non-empty (not 'MAILER-DAEMON', not '@c')."""
    at = addr.find("@")
    return 0 < at < len(addr) - 1


def _emails(value: str, defects: list[str], field: str) -> tuple[str, ...]:
    pairs = _addresses_fast(value, False)
    if pairs:  # the fast path's addresses always have a local part and a domain
        return tuple([a.lower() for _, a in pairs])
    pairs = parse_addresses(value, defects, field, names=False, lower=False)
    return tuple([a.lower() for _, a in pairs if _is_address(a)])



# --- message ids -----------------------------------------------------------------------

_BRACKETED = re.compile(r"<([^<>]*)>")
_BARE_ID = re.compile(r"[^\s<>,]+")


def _message_id(value: str) -> str | None:
    """The first ``<id>``'s content; without brackets, the whole trimmed value."""
    lt = value.find("<")
    if lt < 0:
        return value.strip() or None
    gt = value.find(">", lt + 1)
    inner = value[lt + 1:gt] if gt > lt else value[lt + 1:]
    return inner.strip() or None


def _msgids(value: str) -> tuple[str, ...]:
    """All ids, in order: the bracketed ones, or (when none is) the bare words."""
    if "<" in value:
        return tuple(s for s in (m.strip() for m in _BRACKETED.findall(value)) if s)
    return tuple(_BARE_ID.findall(value))


def _first_msgid(value: str) -> str | None:
    """The first id of In-Reply-To (bracketed if any is, else the first bare word)."""
    lt = value.find("<")
    if lt >= 0:
        for m in _BRACKETED.finditer(value, lt):
            inner = m.group(1).strip()
            if inner:
                return inner
        return None
    bare = _BARE_ID.search(value)
    return bare.group(0) if bare is not None else None


# --- RFC 2047 encoded words ------------------------------------------------------------

# exactly email.header.ecre
_ECRE = re.compile(r"=\?([^?]*?)\?([qQbB])\?(.*?)\?=")
# characters str.splitlines() breaks on: leave such values to the email package
_LINEBREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_Q_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")
_Q_ODD = re.compile(rb"=(?![0-9A-Fa-f]{2})")
_SURROGATE = re.compile("[\ud800-\udfff]")

# charset name (lowercased) -> (canonical name, codec) when the email package decodes it
# without conversion; None when it does something else (left to the email package).
_CHARSETS: dict[str, tuple[str, str] | None] = {}


def _charset(name: str) -> tuple[str, str] | None:
    try:
        return _CHARSETS[name]
    except KeyError:
        pass
    info: tuple[str, str] | None = None
    try:
        cs = Charset(name)
        if cs.input_codec == cs.output_codec and str(cs) != "unknown-8bit":
            codec = cs.input_codec or "us-ascii"
            codecs.lookup(codec)
            info = (str(cs), codec)
    except Exception:  # noqa: BLE001 - CharsetError, LookupError, UnicodeError...
        info = None
    if len(_CHARSETS) > 512:
        _CHARSETS.clear()
    _CHARSETS[name] = info
    return info


def _q_decode(text: str) -> bytes:
    data = text.encode("raw-unicode-escape")
    if b"=" not in data:
        return data.replace(b"_", b" ")
    if _Q_ODD.search(data) is None:
        return binascii.a2b_qp(data, header=True)
    return _Q_HEX.sub(lambda m: bytes((int(m[1], 16),)), data.replace(b"_", b" "))


def _b_decode(text: str) -> bytes:
    """Base64 as email.base64mime decodes it (missing padding added); binascii.Error if bad."""
    pad = len(text) % 4
    if pad:
        text += "==="[: 4 - pad]
    return binascii.a2b_base64(text.encode("raw-unicode-escape"))


def _decode_lenient(data: bytes, charset: str, defects: list[str] | None) -> tuple[str, str]:
    """Bytes of an encoded word as text whatever its charset claims: (text, charset used)."""
    name = charset.partition("*")[0]  # RFC 2231 language suffix
    info = _charset(name)
    codec = info[1] if info else name
    try:
        return data.decode(codec), (info[0] if info else name)
    except (LookupError, UnicodeError, ValueError, TypeError):
        pass
    for fallback in ("utf-8", "cp1252", "latin-1"):
        try:
            text = data.decode(fallback)
        except UnicodeDecodeError:
            continue
        if defects is not None:
            defects.append(f"encoded word in charset {charset!r} decoded as {fallback}")
        return text, fallback
    raise AssertionError("latin-1 decodes anything")  # pragma: no cover


def _nonctext(s: str) -> bool:
    return s.isspace() or s in ("(", ")", "\\")


@dataclass(frozen=True, slots=True)
class _EncodedRun:
    """Neighbouring encoded words in one charset, their bytes joined."""

    data: bytes
    charset: str


def _add_plain(runs: list[str | _EncodedRun], text: str) -> None:
    """Append plain text to `runs`: joined with a space to plain text before it."""
    last = runs[-1] if runs else None
    if isinstance(last, str):
        runs[-1] = last + " " + text
    else:
        runs.append(text)


def _decode_words(value: str, strict: bool, defects: list[str] | None = None) -> str | None:
    """A port of ``str(make_header(decode_header(value)))``.

    strict: the email package's exact result, or None where it would do something this
    port does not (conversion charsets, decode errors, bad base64, 8-bit text beside
    encoded words).  Not strict: never None; undecodable words are decoded leniently or
    kept as written.
    """
    # decode_header: split into (text, (encoding, charset) or None for plain text) words
    words: list[tuple[str, tuple[str, str] | None]] = []
    for line in ([value] if strict else value.splitlines()):
        parts = _ECRE.split(line)
        unencoded = parts[0].lstrip()
        if unencoded:
            words.append((unencoded, None))
        for i in range(1, len(parts), 4):
            words.append((parts[i + 2], (parts[i + 1].lower(), parts[i].lower())))
            unencoded = parts[i + 3]
            if unencoded:
                words.append((unencoded, None))
    # whitespace between two encoded words goes (RFC 2047 §6.2)
    drop = [
        n - 1
        for n in range(2, len(words))
        if words[n][1] and words[n - 2][1] and words[n - 1][0].isspace()
    ]
    for n in reversed(drop):
        del words[n]
    # decode, then collapse runs of the same charset (bytes joined, plain text with spaces)
    runs: list[str | _EncodedRun] = []
    for text, code in words:
        if code is None:
            if strict and not text.isascii():
                return None
            _add_plain(runs, text)
            continue
        encoding, charset = code
        try:
            data = _q_decode(text) if encoding == "q" else _b_decode(text)
        except binascii.Error:
            if strict:
                return None
            if defects is not None:
                defects.append(f"undecodable encoded word {_short(text)} kept as written")
            _add_plain(runs, f"=?{charset}?{encoding}?{text}?=")
            continue
        last = runs[-1] if runs else None
        if isinstance(last, _EncodedRun) and last.charset == charset:
            runs[-1] = _EncodedRun(last.data + data, charset)
        else:
            runs.append(_EncodedRun(data, charset))
    # make_header: decode each run; plain ASCII is 'us-ascii', other plain text 'utf-8'
    chunks: list[tuple[list[str], str]] = []  # ([str, ...], canonical charset)
    for run in runs:
        if isinstance(run, str):
            decoded, canon = run, ("us-ascii" if run.isascii() else "utf-8")
        elif strict:
            info = _charset(run.charset)
            if info is None:
                return None
            canon, codec = info
            try:
                decoded = run.data.decode(codec)
            except UnicodeDecodeError:
                return None
        else:
            decoded, canon = _decode_lenient(run.data, run.charset, defects)
        # Header._normalize: same-charset neighbours joined with a space
        if chunks and chunks[-1][1] == canon:
            chunks[-1][0].append(decoded)
        else:
            chunks.append(([decoded], canon))
    # Header.__str__: a space where encoded and plain text meet without one
    out: list[str] = []
    lastcs: str | None = None
    lastspace = False
    for texts, canon in chunks:
        string = " ".join(texts)
        nextcs: str | None = canon
        if out:
            hasspace = bool(string) and _nonctext(string[0])
            if lastcs not in (None, "us-ascii"):
                if nextcs in (None, "us-ascii") and not hasspace:
                    out.append(" ")
                    nextcs = None
            elif nextcs not in (None, "us-ascii") and not lastspace:
                out.append(" ")
        lastspace = bool(string) and _nonctext(string[-1])
        lastcs = nextcs
        out.append(string)
    return "".join(out)


def decode_header_value(value: str, defects: list[str] | None = None) -> str:
    """An unfolded header value with its RFC 2047 encoded words decoded; never raises.

    Equals ``str(email.header.make_header(email.header.decode_header(value)))`` wherever
    that succeeds; where it fails, the words are decoded leniently (see module doc).
    """
    if "=?" not in value or _ECRE.search(value) is None:
        return value
    text = _decode_words(value, True) if _LINEBREAKS.search(value) is None else None
    if text is None:
        try:
            text = str(_email_make_header(_email_decode_header(value)))
        except Exception:  # noqa: BLE001 - the email package raises all sorts here
            text = _decode_words(value, False, defects)
            assert text is not None
    if "\x00" in text:
        text = text.replace("\x00", "")
    if not text.isascii() and _SURROGATE.search(text) is not None:
        # what some codecs make of bad input ('unknown-8bit', 'unicode-escape', 'utf-7'):
        # no UTF-8 text (and so no Postgres value) holds a lone surrogate
        text = _SURROGATE.sub("\ufffd", text)
        if defects is not None:
            defects.append(f"lone surrogates in {_short(value)} replaced by U+FFFD")
    return text


# --- addresses -------------------------------------------------------------------------

_ADDR = r'[^\s@"(),:;<>\[\]\\]+@[^\s@"(),:;<>\[\]\\]+'
# One list element of the plain kind: [phrase] <addr> or a bare addr (or nothing), then
# a comma or the end.  A phrase is plain words and quoted strings without backslashes.
# ... or an addr followed by one simple comment, ``addr (Name)``, whose text getaddresses
# makes the display name (no nested parentheses, quoted-pairs, quotes or commas in it).
_ITEM = re.compile(
    r'[ \t]*(?:((?:"[^"\\\r\n]*"|[^"<>@,;:\\()\[\]\r\n])*)<[ \t]*(' + _ADDR + r')[ \t]*>'
    r"|(" + _ADDR + r")(?:[ \t]*\(([^()\\\r\n\",]*)\))?)?[ \t]*(?:,|\Z)"
)
_PHRASE_WORDS = re.compile(r'"([^"]*)"|([^ \t"]+)')
_BLANKS = re.compile(r"[ \t]+")
_EMPTY_GROUP = re.compile(r"[^:]*:[ \t]*;?[ \t]*")  # "undisclosed-recipients:;"


def _addresses_fast(value: str, names: bool = True) -> list[tuple[str, str]] | None:
    """(display name, address) pairs of a plain list; None when unusual."""
    out: list[tuple[str, str]] = []
    pos, end, match = 0, len(value), _ITEM.match
    while pos < end:
        m = match(value, pos)
        if m is None:
            return None
        pos = m.end()
        phrase, angle, bare, comment = m.groups()
        if bare is not None:
            out.append((comment.strip(" \t") if comment and names else "", bare))
        elif angle is not None:
            if not names:
                name = ""
            elif '"' in phrase:
                name = " ".join([q or a for q, a in _PHRASE_WORDS.findall(phrase)]).strip(" \t")
            else:
                name = phrase.strip(" \t")
                if "  " in name or "\t" in name:
                    name = " ".join(_BLANKS.split(name))
            out.append((name, angle))
    return out


def parse_addresses(
    value: str | None,
    defects: list[str] | None = None,
    field: str = "address",
    *,
    names: bool = True,
    lower: bool = True,
) -> list[tuple[str, str]]:
    """(display name as written, address) pairs of an address header, as
    `email.utils.getaddresses` reads it; entries without an address are dropped.

    Names are unquoted and stripped but not RFC 2047 decoded (`decode_header_value` does
    that); names=False skips them ('').  Addresses are lowercased unless lower=False;
    they may lack an '@' ('MAILER-DAEMON').
    """
    if not value:
        return []
    out = _addresses_fast(value, names)
    if out is None:
        try:
            pairs = _email_getaddresses([value])
        except Exception:  # noqa: BLE001
            pairs = []
        out = [(n.strip(" \t").replace("\x00", ""), a) for n, a in pairs if a]
    if lower:
        out = [(n, a.lower()) for n, a in out]
    if not out and defects is not None and not _EMPTY_GROUP.fullmatch(value):
        defects.append(f"no address in {field} header {_short(value)}")
    return out


# --- dates -----------------------------------------------------------------------------

_DATE_RE = re.compile(
    r"(?:[A-Za-z]+,[ \t]*)?(\d{1,2})[ \t]+([A-Za-z]{3})[ \t]+(\d{2,9})[ \t]+"
    r"(\d{1,2}):(\d{1,2})(?::(\d{1,2}))?[ \t]+([+-]\d{4})(?:[ \t].*)?"
)
_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_ZONES: dict[str, timezone] = {}


def _zone(tz: str) -> timezone:
    """The tzinfo for '+hhmm' exactly as email.utils computes it (-0000 is UTC)."""
    zone = _ZONES.get(tz)
    if zone is None:
        offset = int(tz)
        sign = -1 if offset < 0 else 1
        offset = abs(offset)
        seconds = sign * ((offset // 100) * 3600 + (offset % 100) * 60)
        zone = timezone.utc if seconds == 0 else timezone(timedelta(seconds=seconds))
        if len(_ZONES) < 4096:
            _ZONES[tz] = zone
    return zone


class _OutOfRange(ValueError):
    """A Date that parses but names no instant a timestamp can hold."""


def _date_fast(value: str) -> datetime | None:
    """The common RFC 5322 form; None when the value is not in it.  Raises `_OutOfRange`
    for a year or zone offset no timestamp holds, ValueError for an impossible day or time."""
    m = _DATE_RE.fullmatch(value)
    if m is None:
        return None
    day, mon, year, hh, mm, ss, tz = m.groups()
    month = _MONTHS.get(mon.lower())
    if month is None:
        return None
    yy = int(year)
    if yy < 100 and len(year) < 4:  # a four-digit year is what it says (RFC 5322 4.3)
        yy += 1900 if yy > 68 else 2000
    if not 1 <= yy <= 9999:
        raise _OutOfRange(f"year {year}")
    try:
        zone = _zone(tz)
    except ValueError:  # 24 hours or more
        raise _OutOfRange(f"offset {tz}") from None
    return datetime(yy, month, int(day), int(hh), int(mm), int(ss or 0), tzinfo=zone)


def parse_date(value: str | None, defects: list[str] | None = None) -> datetime | None:
    """A Date header as a tz-aware datetime (no zone: UTC) that Postgres can store; None
    plus a defect if unparseable or out of range (never a value it does not say)."""
    if not value:
        if defects is not None and value is not None:
            defects.append("empty Date header")
        return None
    try:
        when = _date_fast(value)
        if when is None:
            when = _email_parsedate(value)
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
        if when.year <= 1 or when.year >= 9999:  # in UTC it may leave the datetime range
            when.astimezone(timezone.utc)
    except (_OutOfRange, OverflowError):
        if defects is not None:
            defects.append(f"Date header out of range: {_short(value)}")
        return None
    except Exception as exc:  # noqa: BLE001 - ValueError mostly; never let a Date stop a message
        if defects is not None:
            # datetime's range errors through the email package: "year 0 is out of range",
            # "offset must be a timedelta strictly between ..."
            kind = ("Date header out of range:" if str(exc).startswith(("year ", "offset "))
                    else "unparseable Date")
            defects.append(f"{kind} {_short(value)}")
        return None
    return when


__all__ = [
    "HeaderFields",
    "decode_header_value",
    "extract_header_fields",
    "parse_addresses",
    "parse_date",
]

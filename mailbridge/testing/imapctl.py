"""A small synchronous IMAP client (stdlib `imaplib`) to drive a test server.

It is the "server truth" side of the tests: put mail in, change flags, expunge, move,
and read back exactly what the server holds (`fetch_meta`) to compare with the mirror.

    with MailboxClient(server, alice) as c:
        uid = c.append("INBOX", message, flags=["\\\\Seen"])
        assert c.fetch_raw("INBOX", uid) == message

Folder names are given and returned as UTF-8 with the server's hierarchy separator;
they are encoded to modified UTF-7 here.  Read-only operations use EXAMINE (they never
clear \\Recent or change anything); every call re-selects, so it sees changes made by
other sessions.  Failures raise `mailbridge.errors` types (ImapAuthError,
ImapCommandError, ImapConnectError, ImapTlsError).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import imaplib
import re
import socket
import ssl
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from mailbridge.errors import (
    ImapAuthError,
    ImapCommandError,
    ImapConnectError,
    ImapConnectionLost,
    ImapProtocolError,
    ImapTlsError,
)
from mailbridge.imap.uidset import compress_uids
from mailbridge.imap.utf7 import decode_mailbox_name, encode_mailbox_name
from mailbridge.testing.dovecot import MailUser

__all__ = ["MailboxClient", "expand_uid_set"]

META_HEADER_FIELDS = "MESSAGE-ID SUBJECT FROM TO CC DATE IN-REPLY-TO REFERENCES"

_APPENDUID_RE = re.compile(rb"\[APPENDUID (\d+) ([0-9:,]+)\]", re.IGNORECASE)
_COPYUID_RE = re.compile(rb"(\d+) ([0-9:,]+) ([0-9:,]+)")
_LINE_ENDS_RE = re.compile(rb"\r\n|\r|\n")  # imaplib.MapCRLF, which imaplib does not export
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_MULTIAPPEND_CHUNK_BYTES = 8 << 20
_MULTIAPPEND_CHUNK_COUNT = 500


# --------------------------------------------------------------------------- UID sets


def expand_uid_set(text: str | bytes) -> list[int]:
    """ "1:3,7" → [1, 2, 3, 7], keeping the order given (COPYUID order matters; unlike
    `mailbridge.imap.uidset.parse_uid_set`, which sorts)."""
    if isinstance(text, bytes):
        text = text.decode("ascii")
    out: list[int] = []
    for part in text.split(","):
        if ":" in part:
            a, b = (int(x) for x in part.split(":", 1))
            step = 1 if b >= a else -1
            out.extend(range(a, b + step, step))
        else:
            out.append(int(part))
    return out


# --------------------------------------------------------------------------- parsing


class _Atom(str):
    """An IMAP atom (as opposed to a string): NIL, flags, keys."""


def _flatten(data: Sequence[Any]) -> bytes:
    """imaplib's response list back into one byte stream with literals inline."""
    out = bytearray()
    for item in data:
        if item is None:
            continue
        if isinstance(item, tuple):
            prefix, literal = item[0], item[1]
            out += prefix + b"\r\n" + literal
        else:
            out += item + b"\r\n"
    return bytes(out)


class _Parser:
    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def skip_ws(self) -> None:
        buf, n = self.buf, len(self.buf)
        while self.pos < n and buf[self.pos] in b" \r\n":
            self.pos += 1

    def at_end(self) -> bool:
        self.skip_ws()
        return self.pos >= len(self.buf)

    def value(self) -> Any:
        self.skip_ws()
        buf = self.buf
        if self.pos >= len(buf):
            raise ImapProtocolError("unexpected end of response")
        c = buf[self.pos]
        if c == 0x28:  # (
            self.pos += 1
            items: list[Any] = []
            while True:
                self.skip_ws()
                if self.pos >= len(buf):
                    raise ImapProtocolError("unterminated list in response")
                if buf[self.pos] == 0x29:  # )
                    self.pos += 1
                    return items
                items.append(self.value())
        if c == 0x22:  # "
            self.pos += 1
            out = bytearray()
            while True:
                ch = buf[self.pos]
                if ch == 0x5C:  # backslash
                    out.append(buf[self.pos + 1])
                    self.pos += 2
                elif ch == 0x22:
                    self.pos += 1
                    return bytes(out)
                else:
                    out.append(ch)
                    self.pos += 1
        if c == 0x7B:  # {n}\r\n literal
            end = buf.index(b"}", self.pos)
            n = int(buf[self.pos + 1 : end].rstrip(b"+"))
            start = end + 1
            if buf[start : start + 2] == b"\r\n":
                start += 2
            self.pos = start + n
            return buf[start : start + n]
        # atom, possibly with a [section ...] part (BODY[HEADER.FIELDS (A B)]<0>)
        start = self.pos
        depth = 0
        while self.pos < len(buf):
            ch = buf[self.pos]
            if ch == 0x5B:
                depth += 1
            elif ch == 0x5D:
                depth -= 1
            elif depth == 0 and ch in b" \r\n()":
                break
            self.pos += 1
        atom = buf[start : self.pos].decode("utf-8", "replace")
        if atom.upper() == "NIL":
            return None
        return _Atom(atom)


def _parse_fetch(data: Sequence[Any]) -> list[dict[str, Any]]:
    """FETCH responses → list of {ITEM-NAME (upper): value}."""
    p = _Parser(_flatten(data))
    out: list[dict[str, Any]] = []
    while not p.at_end():
        p.value()  # sequence number
        items = p.value()
        if not isinstance(items, list):
            raise ImapProtocolError(f"malformed FETCH response near {p.buf[p.pos - 40 : p.pos + 40]!r}")
        d: dict[str, Any] = {}
        for i in range(0, len(items) - 1, 2):
            d[str(items[i]).upper()] = items[i + 1]
        out.append(d)
    return out


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


def _parse_internaldate(s: str) -> _dt.datetime:
    # "25-Nov-2026 06:11:56 +0000" (day may be space-padded)
    s = s.strip()
    date_part, time_part, zone = s.split()
    day, mon, year = date_part.split("-")
    hh, mm, ss = (int(x) for x in time_part.split(":"))
    sign = -1 if zone[0] == "-" else 1
    offset = _dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5])) * sign
    return _dt.datetime(int(year), _MONTHS[mon.capitalize()], int(day), hh, mm, ss,
                        tzinfo=_dt.timezone(offset))


def _quote(folder: str) -> str:
    enc = encode_mailbox_name(folder)
    return '"' + enc.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _flag_list(flags: Iterable[str]) -> str:
    return "(" + " ".join(flags) + ")"


class _CaseInsensitiveDict(dict):
    """Keys stored lower-case; lookups accept any case (st["UIDNEXT"] == st["uidnext"])."""

    def __getitem__(self, key: str) -> Any:
        return super().__getitem__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


# --------------------------------------------------------------------------- client


class MailboxClient:
    """One logged-in IMAP session to a test server.

    `server` is a DovecotServer (anything with host, port, tls_port, ca_cert_path);
    `user` a MailUser or a username (then pass `password`).  `security`: "plain"
    (default), "starttls" or "tls" (implicit TLS on `server.tls_port`); TLS verifies the
    certificate against `server.ca_cert_path` unless `ssl_context` is given.
    """

    def __init__(
        self,
        server: Any,
        user: MailUser | str,
        password: str | None = None,
        *,
        security: str = "plain",
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if isinstance(user, MailUser):
            username, password = user.username, (password if password is not None else user.password)
        else:
            username = user
        if password is None:
            raise ValueError("password required")
        self.username = username
        self.security = security
        host = server.host
        if security in ("starttls", "tls") and ssl_context is None:
            ssl_context = ssl.create_default_context(cafile=str(server.ca_cert_path))
        try:
            if security == "tls":
                self.imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    host, server.tls_port, ssl_context=ssl_context, timeout=timeout
                )
            elif security in ("plain", "starttls"):
                self.imap = imaplib.IMAP4(host, server.port, timeout=timeout)
                if security == "starttls":
                    self.imap.starttls(ssl_context)
            else:
                raise ValueError("security must be 'plain', 'starttls' or 'tls'")
        except ssl.SSLError as e:
            raise ImapTlsError(f"TLS handshake with {host} failed: {e}") from e
        except (OSError, imaplib.IMAP4.abort) as e:
            raise ImapConnectError(f"cannot connect to {host}: {e}") from e
        except imaplib.IMAP4.error as e:
            raise ImapTlsError(f"STARTTLS refused by {host}: {e}") from e
        # imaplib writes an APPEND's literal and its closing CRLF separately: with Nagle's
        # algorithm the CRLF waits for the server's delayed ACK, 40 ms per APPEND on a
        # server without MULTIAPPEND (Courier). asyncio sets TCP_NODELAY by default too.
        with contextlib.suppress(OSError):
            self.imap.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.imap.login(username, password)
        except imaplib.IMAP4.error as e:
            self._shutdown()
            raise ImapAuthError(f"login as {username} rejected: {_text(e.args[0] if e.args else e)}") from e
        typ, dat = self.imap.capability()
        self.capabilities: tuple[str, ...] = tuple(
            _text(dat[-1]).upper().split()
        ) if typ == "OK" and dat else tuple(self.imap.capabilities)
        self._selected: tuple[str, bool] | None = None

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> "MailboxClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """LOGOUT (errors ignored)."""
        try:
            self.imap.logout()
        except Exception:
            self._shutdown()

    def _shutdown(self) -> None:
        try:
            self.imap.shutdown()
        except Exception:
            pass

    # ----------------------------------------------------------------- plumbing

    def _check(self, command: str, result: tuple[str, list[Any]]) -> list[Any]:
        typ, data = result
        if typ != "OK":
            raise ImapCommandError(f"{command} failed: {typ} {_text(data[-1] if data else '')}",
                                   command=command, status=typ)
        return data

    def _run(self, command: str, fn: Any, *args: Any) -> list[Any]:
        try:
            return self._check(command, fn(*args))
        except imaplib.IMAP4.abort as e:
            raise ImapConnectionLost(f"{command}: connection lost: {e}") from e
        except imaplib.IMAP4.error as e:
            msg = _text(e.args[0]) if e.args else str(e)
            status = "BAD" if "BAD" in msg[:40] else "NO"
            raise ImapCommandError(f"{command} failed: {msg}", command=command, status=status) from e
        except (OSError, socket.timeout) as e:
            raise ImapConnectionLost(f"{command}: {e}") from e

    def select(self, folder: str, *, readonly: bool = False) -> int:
        """SELECT (or EXAMINE) the folder; returns EXISTS."""
        data = self._run("EXAMINE" if readonly else "SELECT", self.imap.select, _quote(folder), readonly)
        self._selected = (folder, readonly)
        return int(data[0] or 0)

    def _uid(self, command: str, *args: str) -> list[Any]:
        return self._run(f"UID {command}", self.imap.uid, command, *args)

    def noop(self) -> None:
        self._run("NOOP", self.imap.noop)

    # ----------------------------------------------------------------- writing

    def append(
        self,
        folder: str,
        message: bytes,
        flags: Sequence[str] = (),
        date: _dt.datetime | None = None,
    ) -> int:
        """APPEND one message; returns its UID (from APPENDUID).

        Dovecot stores and returns messages with CRLF line endings (imaplib converts bare
        LF to CRLF before sending); give CRLF messages to get the same bytes back.
        """
        date_arg = None
        if date is not None:
            if date.tzinfo is None:
                date = date.replace(tzinfo=_dt.timezone.utc)
            date_arg = imaplib.Time2Internaldate(date)
        data = self._run("APPEND", self.imap.append, _quote(folder),
                         _flag_list(flags) if flags else None, date_arg, message)
        m = _APPENDUID_RE.search(data[-1] or b"")
        if not m:
            raise ImapProtocolError(f"APPEND answered without APPENDUID: {data!r}")
        return expand_uid_set(m.group(2))[-1]

    def append_many(self, folder: str, messages: Iterable[bytes], flags: Sequence[str] = ()) -> list[int]:
        """APPEND many messages; returns their UIDs in order.

        Uses MULTIAPPEND with LITERAL+ (one round trip per chunk of 500 messages / 8 MB)
        when the server has both, else one APPEND per message.
        """
        if not ("MULTIAPPEND" in self.capabilities and "LITERAL+" in self.capabilities):
            return [self.append(folder, m, flags) for m in messages]
        uids: list[int] = []
        chunk: list[bytes] = []
        size = 0
        for m in messages:
            if isinstance(m, str):
                m = m.encode("utf-8")
            chunk.append(m)
            size += len(m)
            if len(chunk) >= _MULTIAPPEND_CHUNK_COUNT or size >= _MULTIAPPEND_CHUNK_BYTES:
                uids.extend(self._multiappend(folder, chunk, flags))
                chunk, size = [], 0
        if chunk:
            uids.extend(self._multiappend(folder, chunk, flags))
        return uids

    def _multiappend(self, folder: str, messages: list[bytes], flags: Sequence[str]) -> list[int]:
        imap = self.imap
        flag_part = (" " + _flag_list(flags)).encode("ascii") if flags else b""
        tag = imap._new_tag()  # imaplib registers the tag for _command_complete
        parts = [tag, b" APPEND ", _quote(folder).encode("ascii")]
        for message in messages:
            literal = _LINE_ENDS_RE.sub(b"\r\n", message)  # the same normalisation as append()
            parts += [flag_part, b" {%d+}\r\n" % len(literal), literal]
        parts.append(b"\r\n")
        try:
            imap.send(b"".join(parts))
            typ, data = imap._command_complete("APPEND", tag)
        except imaplib.IMAP4.abort as e:
            raise ImapConnectionLost(f"APPEND: connection lost: {e}") from e
        except imaplib.IMAP4.error as e:
            raise ImapCommandError(f"APPEND failed: {e}", command="APPEND", status="NO") from e
        self._check("APPEND", (typ, data))
        m = _APPENDUID_RE.search(data[-1] or b"")
        if not m:
            raise ImapProtocolError(f"MULTIAPPEND answered without APPENDUID: {data!r}")
        uids = expand_uid_set(m.group(2))
        if len(uids) != len(messages):
            raise ImapProtocolError(f"APPENDUID lists {len(uids)} UIDs for {len(messages)} messages")
        return uids

    def create(self, folder: str) -> None:
        self._run("CREATE", self.imap.create, _quote(folder))

    def delete(self, folder: str) -> None:
        if self._selected and self._selected[0] == folder:
            self._unselect()
        self._run("DELETE", self.imap.delete, _quote(folder))

    def rename(self, old: str, new: str) -> None:
        if self._selected and self._selected[0] == old:
            self._unselect()
        self._run("RENAME", self.imap.rename, _quote(old), _quote(new))

    def subscribe(self, folder: str) -> None:
        self._run("SUBSCRIBE", self.imap.subscribe, _quote(folder))

    def _unselect(self) -> None:
        try:
            self.imap.unselect()
        except Exception:
            pass
        self._selected = None

    def store(self, folder: str, uids: Iterable[int], add: Sequence[str] = (),
              remove: Sequence[str] = ()) -> None:
        """UID STORE +FLAGS.SILENT add / -FLAGS.SILENT remove."""
        uid_list = list(uids)
        if not uid_list or (not add and not remove):
            return
        self.select(folder)
        uidset = compress_uids(uid_list)
        if add:
            self._uid("STORE", uidset, "+FLAGS.SILENT", _flag_list(add))
        if remove:
            self._uid("STORE", uidset, "-FLAGS.SILENT", _flag_list(remove))

    def set_flags(self, folder: str, uids: Iterable[int], flags: Sequence[str]) -> None:
        """UID STORE FLAGS.SILENT (replace the flags)."""
        uid_list = list(uids)
        if not uid_list:
            return
        self.select(folder)
        self._uid("STORE", compress_uids(uid_list), "FLAGS.SILENT", _flag_list(flags))

    def expunge_uids(self, folder: str, uids: Iterable[int]) -> None:
        """\\Deleted + UID EXPUNGE of exactly these UIDs."""
        uid_list = list(uids)
        if not uid_list:
            return
        self.select(folder)
        uidset = compress_uids(uid_list)
        self._uid("STORE", uidset, "+FLAGS.SILENT", r"(\Deleted)")
        self._uid("EXPUNGE", uidset)

    def move(self, folder: str, uids: Iterable[int], dest: str) -> dict[int, int]:
        """UID MOVE; returns {old uid: new uid in dest} (from COPYUID)."""
        uid_list = list(uids)
        if not uid_list:
            return {}
        self.select(folder)
        self.imap.untagged_responses.pop("COPYUID", None)
        data = self._uid("MOVE", compress_uids(uid_list), _quote(dest))
        raw = self.imap.untagged_responses.pop("COPYUID", None)
        last = raw[-1] if raw else None
        text = last if isinstance(last, bytes) else None
        if text is None:  # some servers put it in the tagged OK
            m = re.search(rb"\[COPYUID ([^\]]+)\]", b" ".join(d for d in data if isinstance(d, bytes)))
            text = m.group(1) if m else None
        if text is None:
            raise ImapProtocolError("MOVE answered without COPYUID")
        m = _COPYUID_RE.match(text)
        if not m:
            raise ImapProtocolError(f"malformed COPYUID {text!r}")
        src = expand_uid_set(m.group(2))
        dst = expand_uid_set(m.group(3))
        return dict(zip(src, dst))

    def copy(self, folder: str, uids: Iterable[int], dest: str) -> dict[int, int]:
        """UID COPY; returns {old uid: new uid in dest}."""
        uid_list = list(uids)
        if not uid_list:
            return {}
        self.select(folder)
        self.imap.untagged_responses.pop("COPYUID", None)
        data = self._uid("COPY", compress_uids(uid_list), _quote(dest))
        # imaplib files the tagged OK's [COPYUID ...] code under untagged "COPYUID"
        raw = self.imap.untagged_responses.pop("COPYUID", None)
        if raw and isinstance(raw[-1], bytes):
            m = _COPYUID_RE.match(raw[-1])
        else:
            m = re.search(rb"\[COPYUID (\d+) ([0-9:,]+) ([0-9:,]+)\]", data[-1] or b"")
        if not m:
            raise ImapProtocolError(f"COPY answered without COPYUID: {data!r}")
        return dict(zip(expand_uid_set(m.group(2)), expand_uid_set(m.group(3))))

    # ----------------------------------------------------------------- reading

    def list_folders(self) -> list[str]:
        """Every folder (LIST "" "*"), names decoded to UTF-8."""
        return [name for name, _flags, _delim in self.list_folders_detailed()]

    def list_folders_detailed(self) -> list[tuple[str, tuple[str, ...], str | None]]:
        """[(name, flags, delimiter)] from LIST "" "*" (flags include special-use)."""
        data = self._run("LIST", self.imap.list, '""', '"*"')
        p = _Parser(_flatten(data))
        out = []
        while not p.at_end():
            flags = p.value()
            delim = p.value()
            name = p.value()
            out.append((
                decode_mailbox_name(_text(name)),
                tuple(str(f) for f in flags or ()),
                None if delim is None else _text(delim),
            ))
        return out

    def status(self, folder: str) -> dict[str, int]:
        """STATUS (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ); keys any case."""
        items = "(MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)"
        data = self._run("STATUS", self.imap.status, _quote(folder), items)
        p = _Parser(_flatten(data))
        p.value()  # name
        values = p.value()
        out = _CaseInsensitiveDict()
        for i in range(0, len(values) - 1, 2):
            out[str(values[i]).lower()] = int(values[i + 1])
        return out

    def uids(self, folder: str) -> list[int]:
        """All UIDs in the folder, ascending."""
        self.select(folder, readonly=True)
        data = self._uid("SEARCH", "ALL")
        text = b" ".join(d for d in data if isinstance(d, bytes))
        return sorted(int(x) for x in text.split())

    def flags(self, folder: str) -> dict[int, tuple[str, ...]]:
        """uid → flags (sorted, without \\Recent)."""
        if not self.select(folder, readonly=True):
            return {}
        out: dict[int, tuple[str, ...]] = {}
        for d in _parse_fetch(self._uid("FETCH", "1:*", "(UID FLAGS)")):
            if "UID" in d:
                out[int(d["UID"])] = _clean_flags(d.get("FLAGS"))
        return out

    def fetch_raw(self, folder: str, uid: int) -> bytes:
        """The exact bytes of BODY.PEEK[] of one message; KeyError if there is no such UID."""
        self.select(folder, readonly=True)
        for d in _parse_fetch(self._uid("FETCH", str(int(uid)), "(UID BODY.PEEK[])")):
            if int(d.get("UID", -1)) == int(uid) and "BODY[]" in d:
                return bytes(d["BODY[]"] or b"")
        raise KeyError(f"no UID {uid} in {folder!r}")

    def fetch_meta(self, folder: str) -> dict[int, dict[str, Any]]:
        """uid → {'flags', 'internal_date', 'size', 'header_bytes'}: the server truth."""
        if not self.select(folder, readonly=True):
            return {}
        items = f"(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS ({META_HEADER_FIELDS})])"
        out: dict[int, dict[str, Any]] = {}
        for d in _parse_fetch(self._uid("FETCH", "1:*", items)):
            if "UID" not in d:
                continue
            header = b""
            for k, v in d.items():
                if k.startswith("BODY[HEADER.FIELDS"):
                    header = bytes(v or b"")
            out[int(d["UID"])] = {
                "flags": _clean_flags(d.get("FLAGS")),
                "internal_date": _parse_internaldate(_text(d["INTERNALDATE"])),
                "size": int(d["RFC822.SIZE"]),
                "header_bytes": header,
            }
        return out

    def iter_fetch(self, folder: str, items: str, uids: str = "1:*") -> Iterator[dict[str, Any]]:
        """Escape hatch: `UID FETCH uids (items)` parsed into dicts (keys upper-case)."""
        self.select(folder, readonly=True)
        yield from _parse_fetch(self._uid("FETCH", uids, f"({items})"))


def _clean_flags(flags: Any) -> tuple[str, ...]:
    return tuple(sorted(str(f) for f in (flags or ()) if str(f).lower() != "\\recent"))

"""A Gmail-behaving IMAP server for tests: a real TCP peer on 127.0.0.1 (trio, in a thread
of its own) whose folders are views over one message store per user.

What it reproduces of Gmail:

- one store per user; each message has a 64-bit X-GM-MSGID, an X-GM-THRID, labels and
  flags; folders are views: ``INBOX`` = label ``\\Inbox``; ``[Gmail]/All Mail`` (\\All) =
  every message not labelled ``\\Trash`` or ``\\Spam``; ``[Gmail]/Sent Mail`` (\\Sent),
  ``[Gmail]/Drafts`` (\\Drafts, label ``\\Draft``), ``[Gmail]/Important`` (\\Important);
  ``[Gmail]/Starred`` (\\Flagged) = flag ``\\Flagged``; ``[Gmail]/Trash`` (\\Trash),
  ``[Gmail]/Spam`` (\\Junk); every user label (``Work``, ``Work/Clients``) is a folder
  (``Work`` listed as parent of ``Work/Clients``); ``[Gmail]`` itself is \\Noselect;
- per-view UIDs (ascending in order of arrival in the view; a message that leaves a view
  and comes back gets a new UID, as on Gmail) and per-view UIDVALIDITY;
- CAPABILITY ``IMAP4rev1 UIDPLUS CONDSTORE IDLE X-GM-EXT-1 ...``; LOGIN, LIST (with
  special-use attributes), SELECT / EXAMINE (HIGHESTMODSEQ), STATUS, UID FETCH of FLAGS
  INTERNALDATE RFC822.SIZE MODSEQ BODY.PEEK[HEADER.FIELDS (...)] BODY.PEEK[] RFC822
  X-GM-MSGID X-GM-THRID X-GM-LABELS with the CHANGEDSINCE modifier, UID SEARCH (ALL, UID
  sets), NOOP and IDLE (EXISTS / EXPUNGE / FETCH pushes for the selected view), ENABLE,
  ID, LOGOUT; a label change bumps the message's MODSEQ as Gmail does;
- X-GM-LABELS as Gmail sends them: system labels as ``"\\\\Inbox"``-style quoted strings,
  user labels as astrings, modified UTF-7 for non-ASCII.

What it does not: STORE / COPY / MOVE / APPEND / EXPUNGE from the client (the control API
changes the store), ENVELOPE, BODYSTRUCTURE, X-GM-RAW search, QRESYNC, SASL, TLS,
Gmail's omission of the selected folder's own label, rate limits and bandwidth caps.

Counters for tests: `GmailServer.commands` (every command's name), `selected` (the folder
of every SELECT / EXAMINE), `idled` (the folder selected at every IDLE).

Control API (thread-safe; call from tests): `add_message(raw, labels, flags)` → msgid,
`add_label` / `remove_label(msgid, label)`, `set_flags(msgid, flags)`, `delete(msgid)`.
`running_gmail(...)` runs it in a thread and yields the `GmailServer`.
"""

from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterator

import trio

from mailbridge.imap.lexer import parse_tokens
from mailbridge.imap.utf7 import decode_mailbox_name, encode_mailbox_name

CAPABILITY = "IMAP4rev1 UIDPLUS CONDSTORE IDLE X-GM-EXT-1 ENABLE ID NAMESPACE LITERAL+ CHILDREN SPECIAL-USE"
SYSTEM_LABELS = ("\\Inbox", "\\Sent", "\\Draft", "\\Important", "\\Trash", "\\Spam")
_LITERAL = re.compile(rb"\{(\d+)(\+?)\}\r\n$")


@dataclass
class GmailMessage:
    msgid: int
    thrid: int
    raw: bytes
    internal_date: datetime
    labels: set[str]
    flags: set[str]
    modseq: int


@dataclass
class View:
    """One folder: which messages it shows, and the UIDs it gave them."""

    name: str
    attrs: tuple[str, ...]
    member: Callable[[GmailMessage], bool]
    uidvalidity: int
    uids: dict[int, int] = field(default_factory=dict)  # msgid -> uid
    uidnext: int = 1


def _labelled(label: str) -> Callable[[GmailMessage], bool]:
    """Membership of a user label's view: labelled `label`, not in Trash or Spam."""
    return lambda m: label in m.labels and not m.labels & {"\\Trash", "\\Spam"}


def _system_view(name: str, attr: str, member: Callable[[GmailMessage], bool], validity: int) -> View:
    return View(name, ("\\HasNoChildren", attr), member, validity)


class GmailStore:
    """One user's messages and the views over them; every method holds the lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.messages: dict[int, GmailMessage] = {}
        self.modseq = 1000
        self.next_msgid = 1_600_000_000_000_000_001  # 64-bit, beyond 2**60 like Gmail's
        self.changes = 0  # bumped on every change (IDLE sessions poll it)
        self._validity = 600_000
        self.views: dict[str, View] = {}
        for name, attr, member in (
            ("INBOX", "", lambda m: "\\Inbox" in m.labels),
            ("[Gmail]/All Mail", "\\All", lambda m: not m.labels & {"\\Trash", "\\Spam"}),
            ("[Gmail]/Sent Mail", "\\Sent", lambda m: "\\Sent" in m.labels and "\\Trash" not in m.labels),
            ("[Gmail]/Drafts", "\\Drafts", lambda m: "\\Draft" in m.labels),
            ("[Gmail]/Important", "\\Important", lambda m: "\\Important" in m.labels and not m.labels & {"\\Trash", "\\Spam"}),
            ("[Gmail]/Starred", "\\Flagged", lambda m: "\\Flagged" in m.flags and not m.labels & {"\\Trash", "\\Spam"}),
            ("[Gmail]/Trash", "\\Trash", lambda m: "\\Trash" in m.labels),
            ("[Gmail]/Spam", "\\Junk", lambda m: "\\Spam" in m.labels),
        ):
            self._validity += 1
            view = _system_view(name, attr, member, self._validity)
            if name == "INBOX":
                view.attrs = ("\\HasNoChildren",)
            self.views[name] = view

    def _label_view(self, label: str) -> None:
        parts = label.split("/")
        for i in range(1, len(parts) + 1):
            name = "/".join(parts[:i])
            if name not in self.views:
                self._validity += 1
                self.views[name] = View(name, ("\\HasNoChildren",), _labelled(name), self._validity)
        for name, view in self.views.items():
            if not name.startswith("[Gmail]") and name != "INBOX":
                has = any(other.startswith(name + "/") for other in self.views)
                view.attrs = ("\\HasChildren",) if has else ("\\HasNoChildren",)

    def _refresh(self) -> None:
        for view in self.views.values():
            for msgid in [i for i in view.uids if i not in self.messages or not view.member(self.messages[i])]:
                del view.uids[msgid]
            for msgid in sorted(self.messages):
                if msgid not in view.uids and view.member(self.messages[msgid]):
                    view.uids[msgid] = view.uidnext
                    view.uidnext += 1
        self.changes += 1

    def _bump(self, message: GmailMessage) -> None:
        self.modseq += 1
        message.modseq = self.modseq

    # --- control API ---------------------------------------------------------------------

    def add_message(self, raw: bytes, labels: tuple[str, ...] = ("\\Inbox",), flags: tuple[str, ...] = (),
                    *, thread_of: int | None = None, internal_date: datetime | None = None) -> int:
        """Deliver `raw` with `labels` and `flags`; returns its X-GM-MSGID."""
        with self.lock:
            msgid = self.next_msgid
            self.next_msgid += 7919
            self.modseq += 1
            when = internal_date or datetime.now(timezone.utc).replace(microsecond=0)
            thrid = self.messages[thread_of].thrid if thread_of is not None else msgid
            self.messages[msgid] = GmailMessage(msgid, thrid, raw, when, set(labels), set(flags), self.modseq)
            for label in labels:
                if label not in SYSTEM_LABELS:
                    self._label_view(label)
            self._refresh()
            return msgid

    def add_label(self, msgid: int, label: str) -> None:
        with self.lock:
            message = self.messages[msgid]
            message.labels.add(label)
            if label not in SYSTEM_LABELS:
                self._label_view(label)
            self._bump(message)
            self._refresh()

    def remove_label(self, msgid: int, label: str) -> None:
        with self.lock:
            message = self.messages[msgid]
            message.labels.discard(label)
            self._bump(message)
            self._refresh()

    def set_flags(self, msgid: int, flags: tuple[str, ...]) -> None:
        with self.lock:
            message = self.messages[msgid]
            message.flags = set(flags)
            self._bump(message)
            self._refresh()

    def delete(self, msgid: int) -> None:
        """Delete for ever (from every view)."""
        with self.lock:
            del self.messages[msgid]
            self.modseq += 1
            self._refresh()

    def view_uids(self, name: str) -> dict[int, int]:
        """msgid -> uid of the view `name` now."""
        with self.lock:
            return dict(self.views[name].uids)


# --- wire helpers -----------------------------------------------------------------------


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label_wire(label: str) -> str:
    if label.startswith("\\"):
        return _quote(label)
    encoded = encode_mailbox_name(label)
    if re.fullmatch(r"[A-Za-z0-9&/_.\-+]+", encoded):
        return encoded
    return _quote(encoded)


def _idate(when: datetime) -> str:
    return when.strftime("%d-%b-%Y %H:%M:%S %z")


def _header_block(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    return raw if end < 0 else raw[:end + 2]


def _header_fields(raw: bytes, names: set[bytes]) -> bytes:
    out: list[bytes] = []
    keep = False
    for line in _header_block(raw).split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        keep = line.split(b":", 1)[0].strip().upper() in names
        if keep:
            out.append(line)
    return b"".join(x + b"\r\n" for x in out) + b"\r\n"


def _uid_set(spec: str, top: int) -> Callable[[int], bool]:
    ranges: list[tuple[int, int]] = []
    for part in spec.split(","):
        a, _, b = part.partition(":")
        lo = top if a == "*" else int(a)
        hi = lo if not b else (top if b == "*" else int(b))
        ranges.append((min(lo, hi), max(lo, hi)))
    return lambda uid: any(lo <= uid <= hi for lo, hi in ranges)


class _Session:
    def __init__(self, server: "GmailServer", stream: trio.SocketStream) -> None:
        self.server = server
        self.store = server.store
        self.stream = stream
        self.buffer = b""
        self.view: View | None = None
        self.seen: list[tuple[int, int]] = []  # (uid, msgid) the client knows, in seq order
        self.seen_modseq: dict[int, int] = {}

    async def send(self, data: str | bytes) -> None:
        await self.stream.send_all(data.encode() if isinstance(data, str) else data)

    async def read_line(self) -> bytes | None:
        while b"\r\n" not in self.buffer:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line + b"\r\n"

    async def read_command(self) -> list[bytes] | None:
        """One command's parts (line pieces and literals), as `parse_tokens` reads them."""
        parts: list[bytes] = []
        while True:
            line = await self.read_line()
            if line is None:
                return None
            m = _LITERAL.search(line)
            if m is None:
                parts.append(line[:-2])
                return parts
            parts.append(line[:-2])
            if not m.group(2):
                await self.send("+ go ahead\r\n")
            size = int(m.group(1))
            while len(self.buffer) < size:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    return None
                self.buffer += chunk
            parts.append(bytearray(self.buffer[:size]))  # type: ignore[arg-type]
            self.buffer = self.buffer[size:]

    async def run(self) -> None:
        await self.send(b"* OK Gimap ready for requests from 127.0.0.1 test\r\n")
        while True:
            parts = await self.read_command()
            if parts is None:
                return
            first = parts[0]
            tag, _, rest = first.partition(b" ")
            words = rest.split(b" ", 2)
            name = words[0].upper().decode(errors="replace")
            args_start = 1
            if name == "UID" and len(words) > 1:
                name = "UID " + words[1].upper().decode(errors="replace")
                args_start = 2
            head = b" ".join(words[args_start:])
            try:
                tokens = parse_tokens([head, *parts[1:]]) if head or len(parts) > 1 else []
            except Exception:
                tokens = []
            self.server.commands.append(name)
            t = tag.decode(errors="replace")
            handler = getattr(self, "cmd_" + name.replace(" ", "_"), None)
            if handler is None:
                await self.send(f"{t} BAD unknown command\r\n")
                continue
            if await handler(t, tokens, head) is False:
                return

    # --- commands --------------------------------------------------------------------------

    async def cmd_CAPABILITY(self, t: str, tokens: list, head: bytes) -> None:
        await self.send(f"* CAPABILITY {CAPABILITY}\r\n{t} OK Success\r\n")

    async def cmd_LOGIN(self, t: str, tokens: list, head: bytes) -> None:
        user = bytes(tokens[0]).decode() if tokens else ""
        password = bytes(tokens[1]).decode() if len(tokens) > 1 else ""
        if (user, password) != (self.server.user, self.server.password):
            await self.send(f"{t} NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)\r\n")
            return
        await self.send(f"{t} OK [CAPABILITY {CAPABILITY}] {user} authenticated (Success)\r\n")

    async def cmd_ENABLE(self, t: str, tokens: list, head: bytes) -> None:
        enabled = " ".join(bytes(x).decode() for x in tokens if bytes(x).upper() == b"CONDSTORE")
        await self.send(f"* ENABLED {enabled}\r\n{t} OK Success\r\n")

    async def cmd_ID(self, t: str, tokens: list, head: bytes) -> None:
        await self.send(f'* ID ("name" "GImap" "vendor" "Google, Inc.")\r\n{t} OK Success\r\n')

    async def cmd_NAMESPACE(self, t: str, tokens: list, head: bytes) -> None:
        await self.send(f'* NAMESPACE (("" "/")) NIL NIL\r\n{t} OK Success\r\n')

    async def cmd_LOGOUT(self, t: str, tokens: list, head: bytes) -> bool:
        await self.send(f"* BYE LOGOUT Requested\r\n{t} OK 73 good day (Success)\r\n")
        return False

    async def cmd_LIST(self, t: str, tokens: list, head: bytes) -> None:
        out = []
        with self.store.lock:
            out.append('* LIST (\\HasChildren \\Noselect) "/" "[Gmail]"\r\n')
            for name, view in self.store.views.items():
                out.append(f'* LIST ({" ".join(view.attrs)}) "/" {_quote(encode_mailbox_name(name))}\r\n')
        await self.send("".join(out) + f"{t} OK Success\r\n")

    cmd_LSUB = cmd_LIST

    def _view(self, tokens: list) -> View | None:
        if not tokens or tokens[0] is None or isinstance(tokens[0], list):
            return None
        name = decode_mailbox_name(bytes(tokens[0]).decode(errors="replace"))
        if name.upper() == "INBOX":
            name = "INBOX"
        return self.store.views.get(name)

    async def cmd_STATUS(self, t: str, tokens: list, head: bytes) -> None:
        with self.store.lock:
            view = self._view(tokens)
            if view is None:
                await self.send(f"{t} NO [NONEXISTENT] Unknown Mailbox\r\n")
                return
            values = {"MESSAGES": len(view.uids), "UIDNEXT": view.uidnext, "UIDVALIDITY": view.uidvalidity,
                      "UNSEEN": sum(1 for i in view.uids if "\\Seen" not in self.store.messages[i].flags),
                      "HIGHESTMODSEQ": self.store.modseq, "RECENT": 0}
            asked = [bytes(x).decode().upper() for x in (tokens[1] if len(tokens) > 1 else [])]
            body = " ".join(f"{a} {values[a]}" for a in asked if a in values)
            await self.send(f"* STATUS {_quote(encode_mailbox_name(view.name))} ({body})\r\n{t} OK Success\r\n")

    async def cmd_SELECT(self, t: str, tokens: list, head: bytes, read_only: bool = False) -> None:
        with self.store.lock:
            view = self._view(tokens)
            if view is None:
                self.view = None
                await self.send(f"{t} NO [NONEXISTENT] Unknown Mailbox\r\n")
                return
            self.view = view
            self.server.selected.append(view.name)
            self._snapshot()
            await self.send(
                "* FLAGS (\\Answered \\Flagged \\Draft \\Deleted \\Seen $NotPhishing $Phishing)\r\n"
                "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Draft \\Deleted \\Seen $NotPhishing $Phishing \\*)] Flags permitted.\r\n"
                f"* OK [UIDVALIDITY {view.uidvalidity}] UIDs valid.\r\n"
                f"* {len(self.seen)} EXISTS\r\n* 0 RECENT\r\n"
                f"* OK [UIDNEXT {view.uidnext}] Predicted next UID.\r\n"
                f"* OK [HIGHESTMODSEQ {self.store.modseq}]\r\n"
                f"{t} OK [{'READ-ONLY' if read_only else 'READ-WRITE'}] {view.name} selected. (Success)\r\n")

    async def cmd_EXAMINE(self, t: str, tokens: list, head: bytes) -> None:
        await self.cmd_SELECT(t, tokens, head, read_only=True)

    def _snapshot(self) -> None:
        assert self.view is not None
        pairs = sorted((uid, msgid) for msgid, uid in self.view.uids.items())
        self.seen = pairs
        self.seen_modseq = {msgid: self.store.messages[msgid].modseq for _, msgid in pairs}

    def _news(self) -> str:
        """The untagged EXPUNGE / EXISTS / FETCH lines that bring the client's view up to date."""
        if self.view is None:
            return ""
        out: list[str] = []
        with self.store.lock:
            current = self.view.uids
            for seq in range(len(self.seen), 0, -1):
                uid, msgid = self.seen[seq - 1]
                if current.get(msgid) != uid:
                    out.append(f"* {seq} EXPUNGE\r\n")
                    del self.seen[seq - 1]
            for seq, (uid, msgid) in enumerate(self.seen, 1):
                message = self.store.messages[msgid]
                if self.seen_modseq.get(msgid) != message.modseq:
                    self.seen_modseq[msgid] = message.modseq
                    out.append(f"* {seq} FETCH (UID {uid} FLAGS ({' '.join(sorted(message.flags))}) "
                               f"MODSEQ ({message.modseq}) X-GM-LABELS ({self._labels(message)}))\r\n")
            known = {msgid for _, msgid in self.seen}
            new = sorted((uid, msgid) for msgid, uid in current.items() if msgid not in known)
            if new:
                self.seen.extend(new)
                for _, msgid in new:
                    self.seen_modseq[msgid] = self.store.messages[msgid].modseq
                out.append(f"* {len(self.seen)} EXISTS\r\n")
        return "".join(out)

    async def cmd_NOOP(self, t: str, tokens: list, head: bytes) -> None:
        await self.send(self._news() + f"{t} OK Success\r\n")

    async def cmd_CHECK(self, t: str, tokens: list, head: bytes) -> None:
        await self.cmd_NOOP(t, tokens, head)

    async def cmd_CLOSE(self, t: str, tokens: list, head: bytes) -> None:
        self.view = None
        await self.send(f"{t} OK Returned to authenticated state. (Success)\r\n")

    async def cmd_UNSELECT(self, t: str, tokens: list, head: bytes) -> None:
        await self.cmd_CLOSE(t, tokens, head)

    async def cmd_IDLE(self, t: str, tokens: list, head: bytes) -> bool | None:
        self.server.idled.append(self.view.name if self.view is not None else "")
        await self.send("+ idling\r\n")
        done = trio.Event()
        gone = False

        async def wait_done() -> None:
            nonlocal gone
            line = await self.read_line()
            gone = line is None
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_done)
            changes = -1
            while not done.is_set():
                if self.store.changes != changes:
                    changes = self.store.changes
                    news = self._news()
                    if news:
                        await self.send(news)
                with trio.move_on_after(0.05):
                    await done.wait()
        if gone:
            return False
        await self.send(f"{t} OK IDLE terminated (Success)\r\n")
        return None

    def _labels(self, message: GmailMessage) -> str:
        return " ".join(_label_wire(x) for x in sorted(message.labels))

    async def cmd_UID_SEARCH(self, t: str, tokens: list, head: bytes) -> None:
        if self.view is None:
            await self.send(f"{t} BAD No mailbox selected\r\n")
            return
        with self.store.lock:
            uids = sorted(self.view.uids.values())
            words = [bytes(x).decode() for x in tokens if not isinstance(x, list) and x is not None]
            top = max(uids, default=0)
            i = 0
            while i < len(words):
                w = words[i].upper()
                if w == "UID" and i + 1 < len(words):
                    inside = _uid_set(words[i + 1], top)
                    uids = [u for u in uids if inside(u)]
                    i += 2
                elif w[:1].isdigit() or w[:1] == "*":
                    inside = _uid_set(words[i], top)
                    uids = [u for u in uids if inside(u)]
                    i += 1
                elif w in ("SINCE", "BEFORE", "CHARSET"):
                    i += 2  # dates: every message counts (a test server's simplification)
                else:
                    i += 1
        await self.send(f"* SEARCH{''.join(f' {u}' for u in uids)}\r\n{t} OK SEARCH completed (Success)\r\n")

    async def cmd_UID_FETCH(self, t: str, tokens: list, head: bytes) -> None:
        if self.view is None or not tokens:
            await self.send(f"{t} BAD No mailbox selected\r\n")
            return
        spec = bytes(tokens[0]).decode()
        items = tokens[1] if len(tokens) > 1 else []
        if not isinstance(items, list):
            items = [items]
        changedsince: int | None = None
        if len(tokens) > 2 and isinstance(tokens[2], list):
            mods = [bytes(x).decode().upper() for x in tokens[2] if not isinstance(x, list)]
            if "CHANGEDSINCE" in mods:
                changedsince = int(mods[mods.index("CHANGEDSINCE") + 1])
        wanted: list[tuple[str, set[bytes] | None]] = []
        i = 0
        while i < len(items):
            name = bytes(items[i]).upper().decode()
            if "[HEADER.FIELDS (" in name:
                inner = name.split("(", 1)[1].rstrip(")]")
                wanted.append(("HEADER.FIELDS", {f.encode() for f in inner.split()}))
                i += 1
                continue
            wanted.append((name, None))
            i += 1
        if changedsince is not None and not any(n == "MODSEQ" for n, _ in wanted):
            wanted.append(("MODSEQ", None))
        out: list[bytes] = []
        with self.store.lock:
            news = self._news()
            top = max(self.view.uids.values(), default=0)
            inside = _uid_set(spec, top)
            seq_of = {uid: seq for seq, (uid, _) in enumerate(self.seen, 1)}
            for uid, msgid in list(self.seen):
                if not inside(uid):
                    continue
                message = self.store.messages[msgid]
                if changedsince is not None and message.modseq <= changedsince:
                    continue
                out.append(self._fetch_one(seq_of[uid], uid, message, wanted))
        await self.send(news.encode() + b"".join(out) + f"{t} OK Success\r\n".encode())

    def _fetch_one(self, seq: int, uid: int, message: GmailMessage, wanted: list[tuple[str, set[bytes] | None]]) -> bytes:
        chunks: list[bytes] = [f"* {seq} FETCH (UID {uid}".encode()]
        for name, fields in wanted:
            if name == "UID":
                continue
            if name == "FLAGS":
                chunks.append(f" FLAGS ({' '.join(sorted(message.flags))})".encode())
            elif name == "INTERNALDATE":
                chunks.append(f' INTERNALDATE "{_idate(message.internal_date)}"'.encode())
            elif name == "RFC822.SIZE":
                chunks.append(f" RFC822.SIZE {len(message.raw)}".encode())
            elif name == "MODSEQ":
                chunks.append(f" MODSEQ ({message.modseq})".encode())
            elif name == "X-GM-MSGID":
                chunks.append(f" X-GM-MSGID {message.msgid}".encode())
            elif name == "X-GM-THRID":
                chunks.append(f" X-GM-THRID {message.thrid}".encode())
            elif name == "X-GM-LABELS":
                chunks.append(f" X-GM-LABELS ({self._labels(message)})".encode())
            elif name == "HEADER.FIELDS":
                assert fields is not None
                data = _header_fields(message.raw, fields)
                names = " ".join(sorted(f.decode() for f in fields))
                chunks.append(f" BODY[HEADER.FIELDS ({names})] {{{len(data)}}}\r\n".encode() + data)
            elif name in ("BODY.PEEK[]", "BODY[]", "RFC822"):
                label = "RFC822" if name == "RFC822" else "BODY[]"
                chunks.append(f" {label} {{{len(message.raw)}}}\r\n".encode() + message.raw)
            elif name in ("BODY.PEEK[HEADER]", "BODY[HEADER]", "RFC822.HEADER"):
                data = _header_block(message.raw) + b"\r\n"
                chunks.append(f" BODY[HEADER] {{{len(data)}}}\r\n".encode() + data)
        chunks.append(b")\r\n")
        return b"".join(chunks)


class GmailServer:
    """The server: one store (one user), listening on 127.0.0.1:`port`."""

    def __init__(self, user: str = "user@gmail.com", password: str = "secret") -> None:
        self.user = user
        self.password = password
        self.store = GmailStore()
        self.port = 0
        self.commands: list[str] = []  # every command's name (``UID FETCH``), all sessions, in order
        self.selected: list[str] = []  # the folder of every SELECT / EXAMINE, in order
        self.idled: list[str] = []  # the selected folder of every IDLE, in order
        self.connections = 0

    # the control API, forwarded to the store
    def add_message(self, raw: bytes, labels: tuple[str, ...] = ("\\Inbox",), flags: tuple[str, ...] = (),
                    **kw: object) -> int:
        return self.store.add_message(raw, labels, flags, **kw)  # type: ignore[arg-type]

    def add_label(self, msgid: int, label: str) -> None:
        self.store.add_label(msgid, label)

    def remove_label(self, msgid: int, label: str) -> None:
        self.store.remove_label(msgid, label)

    def set_flags(self, msgid: int, flags: tuple[str, ...]) -> None:
        self.store.set_flags(msgid, flags)

    def delete(self, msgid: int) -> None:
        self.store.delete(msgid)

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        try:
            await _Session(self, stream).run()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled; reports the port through `task_status`."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)


@contextmanager
def running_gmail(user: str = "user@gmail.com", password: str = "secret") -> Iterator[GmailServer]:
    """A `GmailServer` running in a thread of its own (its own trio loop) for the block."""
    server = GmailServer(user, password)
    started = threading.Event()
    stop: list[trio.CancelScope] = []
    token: list[trio.lowlevel.TrioToken] = []

    async def main() -> None:
        with trio.CancelScope() as scope:
            stop.append(scope)
            token.append(trio.lowlevel.current_trio_token())
            async with trio.open_nursery() as nursery:
                await nursery.start(server.serve)
                started.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True, name="gmail-imap")
    thread.start()
    if not started.wait(10):
        raise RuntimeError("the Gmail test server did not start")
    try:
        yield server
    finally:
        token[0].run_sync_soon(stop[0].cancel)
        thread.join(10)


__all__ = ["GmailServer", "GmailStore", "running_gmail"]

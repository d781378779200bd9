"""aioimaplib 2.0.3 with its response handling made linear.

As shipped, `IMAP4ClientProtocol._handle_responses` recurses once per line and copies
the rest of the buffer each time, and `FetchCommand.wait_data` rescans every line of the
response so far after each line: a FETCH of n messages costs O(n²).  Here:

- `_handle_responses` is a loop over one buffer with an index (no recursion, no copies
  of the tail);
- `LinearFetchCommand` keeps the parenthesis depth of the current FETCH response as
  lines arrive, so `wait_data` is O(1);
- `_untagged_response` strips only the leading ``"* "`` (the original replaced every
  ``"* "`` in the line) and hands an untagged response that no pending command claims
  (``VANISHED``, ``ESEARCH``, unsolicited ``EXISTS``) to the single pending command when
  there is exactly one (mailbridge never pipelines), so nothing the server says is lost;
- while a FETCH is the only pending command, `data_received` frames its response in one
  tight loop (`_fetch_feed`: lines, ``{N}`` literals, the tagged completion) straight into
  the command's lines, without the per-line handler, regex and timer calls.  The lines it
  produces are exactly those of the generic path; anything it does not expect (a
  continuation request, another tag) goes through the generic line handler.

Hardened against what a server sends (none of it may end the process):

- an exception while handling data fails every pending command with one of our errors
  and aborts this connection only (`_fail`); nothing raises out of `data_received`;
- the greeting is ours: ``* OK``/``* PREAUTH`` go on to CAPABILITY (which must list
  IMAP4rev1), ``* BYE`` is `ImapUnavailable`, anything else (an SSH or SMTP banner) is
  `ImapProtocolError`; `greeted` is the future `ImapSession` awaits;
- a tagged reply whose tag no command of ours carries is `ImapProtocolError` (aioimaplib
  raised an Abort with the command's text in it: LOGIN's included the password);
- a line without CRLF is kept in one buffer and only new data is scanned (linear), up
  to LINE_MAX bytes; a literal over `literal_limit` is cut (when `literal_cut`: the
  rest is read and dropped, up to DISCARD_MAX) or ends the connection; IDLE pushes and
  untagged news nobody has taken yet are bounded too (`ImapResponseTooLarge`);
- LOGIN's text outside the wire (str, repr, logs) hides the password.

The behaviour is otherwise aioimaplib's; `tests/unit/aio/test_imapproto.py` pins it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from typing import Any, Callable, Optional

from aioimaplib import aioimaplib as _aio

from mailbridge.aio.redact import MASK, redact
from mailbridge.errors import (
    ImapConnectError,
    ImapConnectionLost,
    ImapError,
    ImapProtocolError,
    ImapResponseTooLarge,
    ImapUnavailable,
)
from mailbridge.imap.codes import response_code, too_many_connections

CRLF = b"\r\n"
LINE_MAX = 1 << 20  # bytes: the longest line (without its literals) we read
HEADER_LITERAL_MAX = 1 << 20  # bytes: a literal's default bound (a message's header fields)
DISCARD_MAX = 64 << 20  # bytes: the most we read and drop of literals cut in one command
IDLE_BATCHES_MAX = 256  # IDLE pushes nobody has taken yet
UNSOLICITED_MAX_BYTES = 16 << 20  # untagged news received between commands, not yet taken
log = logging.getLogger("mailbridge.aio")

# Commands aioimaplib 2.0.3 does not know (its `execute` looks every name up): UNSELECT
# (RFC 3691) and NOTIFY (RFC 5465), both answered by one tagged response.
_aio.Commands.setdefault("UNSELECT", _aio.Cmd("UNSELECT", (_aio.SELECTED,), _aio.Exec.is_sync))
_aio.Commands.setdefault("NOTIFY", _aio.Cmd("NOTIFY", (_aio.AUTH, _aio.SELECTED), _aio.Exec.is_sync))
_FETCH_START = re.compile(rb"[0-9]+ FETCH \(")
_LITERAL_END = re.compile(rb"\{(\d+)\}$")


class LinearFetchCommand(_aio.FetchCommand):
    """A FETCH whose "response incomplete" check costs O(1) per line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._depth = 0

    def append_to_resp(self, line: bytes, result: str = "Pending") -> None:
        super().append_to_resp(line, result)
        if type(line) is bytes:  # literal payloads arrive as bytearray and never count
            delta = line.count(b"(") - line.count(b")")
            if _FETCH_START.match(line):
                self._depth = delta
            else:
                self._depth += delta

    def wait_data(self) -> bool:
        return self._depth != 0


def shown(data: bytes | bytearray, limit: int = 80) -> str:
    """What a server sent, for a message: its start, printable, secrets redacted."""
    text = bytes(data[:limit]).decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return redact(text) + ("…" if len(data) > limit else "")


class _LoginCommand(_aio.Command):
    """LOGIN whose text anywhere but on the wire (str, repr: exceptions, logs) hides
    the password; `wire()` is what is sent."""

    def __init__(self, tag: str, user: str, password: str, *, loop: Any) -> None:
        super().__init__("LOGIN", tag, user, _aio.quoted(password), loop=loop)

    def wire(self) -> str:
        return _aio.Command.__repr__(self)

    def __repr__(self) -> str:
        return f"{self.tag} LOGIN {self.args[0]} {MASK}"

    __str__ = __repr__


class _AuthenticateCommand(_aio.Command):
    """AUTHENTICATE <mechanism> [initial response]; its repr hides the response.
    `pending`: what to send at the server's first ``+`` when SASL-IR was not used; after
    that every ``+`` (an error challenge) is answered with an empty line, which makes the
    server send its tagged NO instead of waiting."""

    def __init__(self, tag: str, mechanism: str, initial: str, *, sasl_ir: bool, loop: Any) -> None:
        args = (mechanism, initial) if sasl_ir else (mechanism,)
        super().__init__("AUTHENTICATE", tag, *args, loop=loop)
        self.pending: str | None = None if sasl_ir else initial

    def wire(self) -> str:
        return _aio.Command.__repr__(self)

    def __repr__(self) -> str:
        return f"{self.tag} AUTHENTICATE {self.args[0]}" + (f" {MASK}" if len(self.args) > 1 else "")

    __str__ = __repr__


class LinearProtocol(_aio.IMAP4ClientProtocol):
    """The aioimaplib protocol with linear-time response handling, hardened."""

    where = "the IMAP server"  # host:port (tls), for messages
    literal_limit = HEADER_LITERAL_MAX  # the largest literal kept whole (the session sets it per command)
    literal_cut = True  # a larger one is cut to literal_limit (True) or ends the connection (False)
    literal_what = "a literal"  # what the limit bounds, for the message
    cut_literals = 0  # literals cut since the session last reset it
    _discarded = 0  # bytes of cut literals dropped since then
    _discard = 0  # bytes of a cut literal still to drop (generic path)
    _fast_keep = 0  # bytes of the literal arriving on the fast path still to keep
    _unsolicited_bytes = 0  # the size of `unsolicited`
    _login: "_LoginCommand | _AuthenticateCommand | None" = None
    _bye: bytes | None = None
    incomplete_line: bytes  # aioimaplib's (untyped there)
    pending_sync_command: _aio.Command | None

    def __init__(self, loop: Any, conn_lost_cb: Callable[[Optional[Exception]], None] | None = None) -> None:
        super().__init__(loop, conn_lost_cb)
        self.greeting = b""
        self.failure: ImapError | None = None  # why this connection was dropped by us
        self._partial = bytearray()  # a line still without its CRLF
        self.greeted: asyncio.Future[None] = (loop if loop is not None else _aio.get_running_loop()).create_future()

    # fast FETCH framing state (see _fetch_feed)
    _fast_cmd: "LinearFetchCommand | None" = None
    _fast_rest: bytes = b""  # an incomplete line
    _fast_lit: bytearray | None = None  # a literal still arriving
    _fast_need = 0  # bytes the literal still needs
    _fast_after_lit = False  # the next line continues the response a literal interrupted

    def data_received(self, d: bytes) -> None:
        """Handle data; never raises: what cannot be handled drops this connection."""
        if self.failure is not None:
            return
        try:
            if self._partial and not self._in_literal():
                if not (self._partial[-1:] == b"\r" and d[:1] == b"\n") and CRLF not in d:
                    self._partial += d  # still no end of line: scan only the new data
                    self._check_line()
                    return
                d = bytes(self._partial) + d
                self._partial = bytearray()
            self._receive(d)
            self._keep_partial()
            self._check_bounds()
        except Exception as exc:
            self._fail(exc)

    def _in_literal(self) -> bool:
        cmd = self.current_command
        return (self._fast_cmd is not None and self._fast_lit is not None) or self._discard > 0 or (
            cmd is not None and cmd.wait_literal_data())

    def _keep_partial(self) -> None:
        """Move an incomplete trailing line out of aioimaplib's (or the fast path's)
        state into `_partial`, so the next chunk is scanned alone."""
        if self._in_literal():
            return
        if self._fast_cmd is not None and self._fast_rest:
            self._partial += self._fast_rest
            self._fast_rest = b""
        elif self.incomplete_line:
            self._partial += self.incomplete_line
            self.incomplete_line = b""
        self._check_line()

    def _check_line(self) -> None:
        if len(self._partial) > LINE_MAX:
            raise ImapResponseTooLarge(
                f"{self.where} sent a line over {LINE_MAX} bytes (it began {shown(self._partial, 40)!r}); "
                "the connection was dropped", LINE_MAX)

    def _check_bounds(self) -> None:
        if self.idle_queue.qsize() > IDLE_BATCHES_MAX:
            raise ImapResponseTooLarge(
                f"{self.where} sent over {IDLE_BATCHES_MAX} pushes during IDLE faster than they "
                "could be read; the connection was dropped", IDLE_BATCHES_MAX)
        if not self.unsolicited:
            self._unsolicited_bytes = 0  # taken by the session
        elif self._unsolicited_bytes > UNSOLICITED_MAX_BYTES:
            raise ImapResponseTooLarge(
                f"{self.where} sent over {UNSOLICITED_MAX_BYTES} bytes of untagged responses between "
                "commands; the connection was dropped", UNSOLICITED_MAX_BYTES)

    def _literal_keep(self, size: int) -> int:
        """How many bytes of a literal of `size` to keep (the rest is dropped); raises
        ImapResponseTooLarge when it may not be cut or is too large to read at all."""
        limit = self.literal_limit
        if size <= limit:
            return size
        if self.literal_cut and self._discarded + size - limit <= DISCARD_MAX:
            self.cut_literals += 1
            self._discarded += size - limit
            return limit
        raise ImapResponseTooLarge(
            f"{self.where} announced {self.literal_what} of {size} bytes, over the limit of {limit} "
            "bytes; the connection was dropped before reading it", limit)

    def _fail(self, exc: BaseException) -> None:
        """Fail every pending command (and the greeting) with `exc` as one of our errors,
        and abort this connection; never raises."""
        error = exc if isinstance(exc, ImapError) else ImapProtocolError(
            f"{self.where} sent a response mailbridge cannot read ({type(exc).__name__}: "
            f"{redact(str(exc))[:200]}); the connection was dropped")
        if self.failure is None:
            self.failure = error
        pending = [self.pending_sync_command, *self.pending_async_commands.values()]
        if not any(pending) and (self.greeted.done() or self.state != _aio.CONNECTED):
            log.warning("%s", error)
        for cmd in pending:
            if cmd is not None and not cmd._event.is_set():
                cmd._exception = error
                cmd._timer.cancel()
                cmd._event.set()
        self.pending_sync_command = None
        self.pending_async_commands.clear()
        self._fast_cmd, self._fast_lit, self._partial = None, None, bytearray()
        if not self.greeted.done():
            self.greeted.set_exception(error)
            self.greeted.exception()  # retrieved: the session raises it, or nobody waits
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self.failure is None:
            if self._bye is not None and self.state != _aio.LOGOUT and (
                    self.pending_sync_command is None or self.pending_sync_command.name != "LOGOUT"):
                self._fail(self._bye_error(self._bye, greeting=False))
            elif not self.greeted.done():
                self._fail(ImapConnectError(
                    f"{self.where} closed the connection before greeting: check the host, port and --tls "
                    "(tls for port 993, starttls or none for 143)"))
        super().connection_lost(exc)

    def _on_bye(self, line: bytes) -> None:
        """The server says it closes the connection: fail what is pending at once (a
        LOGOUT expects it), with its reason."""
        self._bye = line
        sync = self.pending_sync_command
        if self.state != _aio.LOGOUT and (sync is None or sync.name != "LOGOUT") and (
                sync is not None or self.pending_async_commands):
            raise self._bye_error(line, greeting=False)

    def _bye_error(self, line: bytes, *, greeting: bool) -> ImapError:
        text = line[2:] if line[:2] == b"* " else line
        code = response_code(text)
        said = shown(text, 200)
        if greeting or code == "UNAVAILABLE" or too_many_connections(text):
            reason = code or ("TOOMANYCONNECTIONS" if too_many_connections(text) else None)
            hint = ("close other IMAP clients of this account or lower their number; mailbridge retries later"
                    if reason in ("TOOMANYCONNECTIONS", "LIMIT", "INUSE") else "mailbridge retries later")
            return ImapUnavailable(f"{self.where} refused the connection ({said}): {hint}", reason_code=reason)
        return ImapConnectionLost(f"{self.where} closed the connection ({said})")

    # --- greeting ----------------------------------------------------------------------

    def _handle_line(self, line: bytes, current_cmd: _aio.Command | None) -> _aio.Command | None:
        if self.state == _aio.CONNECTED and line:
            self._greet(line)
            return None
        return super()._handle_line(line, current_cmd)

    def _greet(self, line: bytes) -> None:
        head = line[:10].upper()
        self.greeting = bytes(line[:300])  # the server's greeting line (quirks are keyed by it)
        if head.startswith(b"* OK") or head.startswith(b"* PREAUTH"):
            self.state = _aio.AUTH if head.startswith(b"* PREAUTH") else _aio.NONAUTH
            task = asyncio.ensure_future(self._after_greeting())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif head.startswith(b"* BYE"):
            raise self._bye_error(line, greeting=True)
        else:
            raise ImapProtocolError(
                f"{self.where} did not greet as an IMAP server (it said {shown(line)!r}): check the "
                "host and port (993 with --tls tls, 143 with --tls starttls or none)")

    async def _after_greeting(self) -> None:
        """CAPABILITY after the greeting; `greeted` gets the outcome (never raises)."""
        try:
            await self._capability()
        except Exception as exc:
            self._fail(exc)
        else:
            if not self.greeted.done():
                self.greeted.set_result(None)

    async def _capability(self) -> None:
        response = await self.execute(_aio.Command("CAPABILITY", self.new_tag(), loop=self.loop))
        caps: list[str] = []
        for line in response.lines:
            if type(line) is bytes and line[:11].upper() == b"CAPABILITY ":
                caps += line.decode("ascii", "replace").split()[1:]
        if response.result != "OK" or not caps:
            raise ImapProtocolError(
                f"{self.where} answered CAPABILITY with {response.result} and no capability list: "
                "it is not an IMAP server mailbridge can use; check the host and port")
        versions = [c.upper() for c in caps if c.upper() in _aio.AllowedVersions]
        if not versions:
            raise ImapProtocolError(
                f"{self.where} does not offer IMAP4rev1 (its CAPABILITY: {shown(' '.join(caps).encode(), 120)}); "
                "mailbridge needs an IMAP4rev1 server")
        self.capabilities = set(caps)
        self.imap_version = versions[-1]

    @_aio.change_state
    async def login(self, user: str, password: str) -> _aio.Response:
        """LOGIN; the password is never in the command's text outside the wire."""
        command = _LoginCommand(self.new_tag(), user, password, loop=self.loop)
        self._login = command
        try:
            response = await self.execute(command, scrub=password)
        finally:
            self._login = None
        if response.result == "OK":
            self.state = _aio.AUTH
        return response

    @_aio.change_state
    async def authenticate(self, mechanism: str, initial: str, *, sasl_ir: bool) -> _aio.Response:
        """AUTHENTICATE with one client response (OAUTHBEARER, XOAUTH2); the response is
        never in the command's text outside the wire.  A server challenge after it (an
        error report) is answered with an empty line, so this ends with the tagged reply."""
        command = _AuthenticateCommand(self.new_tag(), mechanism, initial, sasl_ir=sasl_ir, loop=self.loop)
        self._login = command
        try:
            response = await self.execute(command, scrub=initial)
        finally:
            self._login = None
        if response.result == "OK":
            self.state = _aio.AUTH
        return response

    def _continuation(self, line: bytes) -> None:
        command = self.pending_sync_command
        if isinstance(command, _AuthenticateCommand):
            answer, command.pending = command.pending or "", None
            self.transport.write(f"{answer}\r\n".encode())
            return
        super()._continuation(line)

    def send(self, line: str, scrub: str | None = None) -> None:
        """Write a command line; its log line is redacted (aioimaplib's `scrub` misses a
        password with a quote or backslash, which the wire form escapes)."""
        login = self._login
        shown_line = line
        if login is not None and line == str(login):
            line = login.wire()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("sending: %s", redact(shown_line, *(s for s in (scrub,) if s)))
        self.transport.write(f"{line}\r\n".encode())

    def _response_done(self, line: bytes) -> None:
        tag = line.partition(b" ")[0].decode("ascii", "replace")
        sync = self.pending_sync_command
        if sync is not None:
            ours = sync.tag == tag
            expected = sync.tag
        else:
            ours = bool(self._find_pending_async_cmd_by_tag(tag))
            expected = ", ".join(c.tag for c in self.pending_async_commands.values()) or "no reply"
        if not ours:
            raise ImapProtocolError(
                f"{self.where} answered with tag {tag[:20]!r} where {expected} was due: it does not "
                "speak IMAP correctly (or is not an IMAP server); check the host and port")
        super()._response_done(line)

    def _receive(self, d: bytes) -> None:
        cmd = self._fast_cmd
        if cmd is not None and self.pending_async_commands.get("FETCH") is not cmd:
            # the command went away (timed out): forget its half-framed response
            self._fast_cmd, self._fast_rest, self._fast_lit, self._fast_after_lit = None, b"", None, False
            cmd = None
        if cmd is None:
            if (
                self.pending_sync_command is None
                and self.current_command is None
                and not self.incomplete_line
                and len(self.pending_async_commands) == 1
            ):
                cmd = self.pending_async_commands.get("FETCH")
            if type(cmd) is not LinearFetchCommand:
                super().data_received(d)
                return
            self._fast_cmd = cmd
        self._fetch_feed(cmd, d)

    def _fetch_feed(self, cmd: "LinearFetchCommand", d: bytes) -> None:
        """Frame FETCH response data into `cmd`'s lines (literals as bytearray)."""
        lines = cmd._resp_lines
        cmd._resp_result = "Pending"
        cmd._reset_timer()
        after_lit = self._fast_after_lit
        if self._fast_lit is not None:
            need = self._fast_need
            keep = self._fast_keep
            if len(d) < need:
                if keep:
                    self._fast_lit += d[:keep]
                    self._fast_keep = max(0, keep - len(d))
                self._fast_need = need - len(d)
                return
            self._fast_lit += d[:min(need, keep)]
            self._fast_keep = 0
            lines.append(self._fast_lit)
            self._fast_lit = None
            d = d[need:]
            after_lit = True
        if self._fast_rest:
            d = self._fast_rest + d
            self._fast_rest = b""
        view = memoryview(d)
        tag = cmd.tag.encode("ascii") + b" "
        find = d.find
        append = lines.append
        pos, end = 0, len(d)
        try:
            while True:
                eol = find(CRLF, pos)
                if eol < 0:
                    break
                line = d[pos:eol]
                pos = eol + 2
                if after_lit:
                    after_lit = False
                    append(line)
                elif line[:2] == b"* ":
                    line = line[2:]
                    if line[:4] == b"BYE ":
                        self._on_bye(line)
                    append(line)
                elif line.startswith(tag):
                    self._fast_cmd = None
                    self._fast_rest = b""
                    self._fast_after_lit = False
                    self._response_done(line)
                    if pos < end:
                        super().data_received(d[pos:])
                    return
                else:
                    self._handle_line(line, None)
                    continue
                if line[-1:] == b"}":
                    m = _LITERAL_END.search(line)
                    if m is not None:
                        size = int(m.group(1))
                        keep = self._literal_keep(size)
                        if end - pos >= size:
                            append(bytearray(view[pos:pos + keep]))
                            pos += size
                            after_lit = True
                        else:
                            self._fast_lit = bytearray(view[pos:pos + keep])
                            self._fast_keep = keep - len(self._fast_lit)
                            self._fast_need = size - (end - pos)
                            self._fast_after_lit = False
                            return
            self._fast_rest = d[pos:]
            self._fast_after_lit = after_lit
        finally:
            view.release()

    def _handle_responses(
        self,
        data: bytes,
        line_handler: Callable[[bytes, _aio.Command], Optional[_aio.Command]],
        current_cmd: _aio.Command | None = None,
    ) -> None:
        pos, end = 0, len(data)
        while True:
            if current_cmd is not None and current_cmd.wait_literal_data():
                need = current_cmd._expected_size - len(current_cmd._resp_literal_data)
                take = data[pos:pos + need]
                pos += len(take)
                current_cmd.append_literal_data(take)
                if current_cmd.wait_literal_data():
                    raise _aio.IncompleteRead(current_cmd)
            if self._discard:  # the dropped rest of a cut literal
                skip = min(self._discard, end - pos)
                pos += skip
                self._discard -= skip
                if self._discard:
                    raise _aio.IncompleteRead(current_cmd)
            if pos >= end:
                if self.pending_sync_command is not None:
                    self.pending_sync_command.flush()
                if current_cmd is not None and current_cmd.wait_data():
                    raise _aio.IncompleteRead(current_cmd)
                return
            eol = data.find(CRLF, pos)
            if eol < 0:
                raise _aio.IncompleteRead(current_cmd, data[pos:])
            line = data[pos:eol]
            pos = eol + 2
            cmd = line_handler(line, current_cmd)
            literal = _LITERAL_END.search(line) if line.endswith(b"}") else None
            if literal:
                if cmd is None:
                    cmd = _aio.Command("NIL", "unused")
                size = int(literal.group(1))
                keep = self._literal_keep(size)
                self._discard = size - keep
                cmd.begin_literal_data(keep)
                current_cmd = cmd
            elif cmd is not None and cmd.wait_data():
                current_cmd = cmd
            else:
                current_cmd = None

    def _untagged_response(self, line: bytes) -> _aio.Command | None:
        if line.startswith(b"* "):
            line = line[2:]
        if line[:4].upper() == b"BYE " or line.upper() == b"BYE":
            self._on_bye(line)
        if self.pending_sync_command is not None:
            self.pending_sync_command.append_to_resp(line)
            return self.pending_sync_command
        match = _aio.message_data_re.match(line)
        if match:
            name = match.group(1)
        else:
            name = line.partition(b" ")[0]
        command = self.pending_async_commands.get(name.decode("ascii", "replace").upper())
        if command is None and len(self.pending_async_commands) == 1:
            command = next(iter(self.pending_async_commands.values()))
        if command is not None:
            command.append_to_resp(line)
        else:
            if not self.unsolicited:
                self._unsolicited_bytes = 0
            self.unsolicited.append(line)
            self._unsolicited_bytes += len(line)
        return command

    @property
    def unsolicited(self) -> list[bytes]:
        """Untagged responses that arrived while no command was pending."""
        try:
            return self._unsolicited
        except AttributeError:
            self._unsolicited: list[bytes] = []
            return self._unsolicited

    async def fetch(self, message_set: str, message_parts: str, by_uid: bool = False,
                    timeout: float | None = None) -> _aio.Response:
        return await self.execute(
            LinearFetchCommand(self.new_tag(), message_set, message_parts,
                               prefix="UID" if by_uid else "", loop=self.loop, timeout=timeout)
        )

    async def run(self, name: str, *args: str, prefix: str = "", timeout: float | None = None,
                  untagged_resp_name: str | None = None) -> _aio.Response:
        """Send any command (arguments already encoded and quoted) and await its response."""
        cls = LinearFetchCommand if name == "FETCH" else _aio.Command
        if cls is LinearFetchCommand:
            command = cls(self.new_tag(), *args, prefix=prefix, loop=self.loop, timeout=timeout)
        else:
            command = cls(name, self.new_tag(), *args, prefix=prefix, loop=self.loop, timeout=timeout,
                          untagged_resp_name=untagged_resp_name)
        return await self.execute(command)


class LinearIMAP4(_aio.IMAP4):
    """aioimaplib's client using `LinearProtocol` (plain or implicit-TLS transport)."""

    def __init__(self, host: str, port: int, *, timeout: float, ssl_context: ssl.SSLContext | None = None,
                 conn_lost_cb: Callable[[BaseException | None], None] | None = None,
                 where: str | None = None) -> None:
        self._ssl_context = ssl_context
        self._where = where or f"{host}:{port}"
        super().__init__(host=host, port=port, timeout=timeout, conn_lost_cb=conn_lost_cb,
                         ssl_context=ssl_context)

    def create_client(self, host: str, port: int, loop: asyncio.AbstractEventLoop | None,
                      conn_lost_cb: Callable[[BaseException | None], None] | None = None,
                      ssl_context: ssl.SSLContext | None = None) -> None:
        local_loop = loop if loop is not None else _aio.get_running_loop()
        self.protocol = LinearProtocol(local_loop, conn_lost_cb)
        self.protocol.where = self._where
        self._client_task = local_loop.create_task(
            local_loop.create_connection(lambda: self.protocol, host, port, ssl=ssl_context,
                                         server_hostname=host if ssl_context else None)
        )

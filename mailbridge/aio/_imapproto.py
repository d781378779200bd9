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

The behaviour is otherwise aioimaplib's; `tests/unit/aio/test_imapproto.py` pins it.
"""

from __future__ import annotations

import re
from typing import Callable, Optional

from aioimaplib import aioimaplib as _aio

CRLF = b"\r\n"

# Commands aioimaplib 2.0.3 does not know (its `execute` looks every name up): UNSELECT
# (RFC 3691) and NOTIFY (RFC 5465), both answered by one tagged response.
_aio.Commands.setdefault("UNSELECT", _aio.Cmd("UNSELECT", (_aio.SELECTED,), _aio.Exec.is_sync))
_aio.Commands.setdefault("NOTIFY", _aio.Cmd("NOTIFY", (_aio.AUTH, _aio.SELECTED), _aio.Exec.is_sync))
_FETCH_START = re.compile(rb"[0-9]+ FETCH \(")
_LITERAL_END = re.compile(rb"\{(\d+)\}$")


class LinearFetchCommand(_aio.FetchCommand):
    """A FETCH whose "response incomplete" check costs O(1) per line."""

    def __init__(self, *args, **kwargs) -> None:
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


class LinearProtocol(_aio.IMAP4ClientProtocol):
    """The aioimaplib protocol with linear-time response handling."""

    # fast FETCH framing state (see _fetch_feed)
    _fast_cmd: "LinearFetchCommand | None" = None
    _fast_rest: bytes = b""  # an incomplete line
    _fast_lit: bytearray | None = None  # a literal still arriving
    _fast_need = 0  # bytes the literal still needs
    _fast_after_lit = False  # the next line continues the response a literal interrupted

    def data_received(self, d: bytes) -> None:
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
            if len(d) < need:
                self._fast_lit += d
                self._fast_need = need - len(d)
                return
            self._fast_lit += d[:need]
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
                        if end - pos >= size:
                            append(bytearray(view[pos:pos + size]))
                            pos += size
                            after_lit = True
                        else:
                            self._fast_lit = bytearray(view[pos:])
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
                cmd.begin_literal_data(int(literal.group(1)))
                current_cmd = cmd
            elif cmd is not None and cmd.wait_data():
                current_cmd = cmd
            else:
                current_cmd = None

    def _untagged_response(self, line: bytes) -> _aio.Command | None:
        if line.startswith(b"* "):
            line = line[2:]
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
            self.unsolicited.append(line)
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

    def __init__(self, host: str, port: int, *, timeout: float, ssl_context=None,
                 conn_lost_cb=None) -> None:
        self._ssl_context = ssl_context
        super().__init__(host=host, port=port, timeout=timeout, conn_lost_cb=conn_lost_cb,
                         ssl_context=ssl_context)

    def create_client(self, host, port, loop, conn_lost_cb=None, ssl_context=None) -> None:
        local_loop = loop if loop is not None else _aio.get_running_loop()
        self.protocol = LinearProtocol(local_loop, conn_lost_cb)
        self._client_task = local_loop.create_task(
            local_loop.create_connection(lambda: self.protocol, host, port, ssl=ssl_context,
                                         server_hostname=host if ssl_context else None)
        )

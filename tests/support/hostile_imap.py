"""A scriptable hostile IMAP server: a real TCP peer on 127.0.0.1 (trio) that proxies to a
real Dovecot until told to misbehave the way real servers do.

`HostileImap.fault` is what it does now (`None`: behave, i.e. forward bytes unchanged):

- `Greet(line, close)`: greet every new connection with `line` instead of Dovecot's
  greeting (`BYE_TOO_MANY`, `BYE_UNAVAILABLE`, `SSH_BANNER`), then hang up or keep the
  connection open like the foreign server would;
- `WrongTag(command)`: the tagged answer to `command` comes back under another tag;
- `ByeOn(command)`: `* BYE` and hang up when the client sends `command`;
- `HugeLiteral(command)`: answer `command` with a FETCH announcing a literal of ~2 GB and
  stream filler until the client hangs up (bounded by `stream_cap`);
- `EndlessLine(command)`: answer `command` with a line that never ends (same bound);
- `PoisonList(names)`: add LIST entries whose names hold CR, LF or NUL (quoted or
  literal) to every LIST answer;
- `Answer(command, text)`: answer `command` itself with `TAG text`, e.g. `NO [LIMIT] ...`
  or Office 365's `NO Request is throttled. Suggested Backoff Time: 2000 milliseconds`;
- `TellWith(command, lines)`: put untagged `lines` (e.g. `* 9 EXISTS`) before the tagged
  answer to `command`, once, as servers do that report news with any command's reply.

A `command` is the command name as sent (`"LOGIN"`, `"SELECT"`, `"UID FETCH"`, ...) or
`None` for the next command of any name.  The server counts connections (`connections`,
monotonic times, for backoff assertions) and commands (`commands`); `behave()` switches
it back, `drop_all()` cuts every open connection so the client reconnects into the fault.

`running_hostile(...)` runs it in a thread of its own (its own trio loop), so tests that
block (subprocesses, stdlib clients) never stall it.
"""

from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import trio

_COMMAND = re.compile(rb"^([A-Za-z0-9.]+) ((?:UID )?[A-Za-z]+)", re.I)
_LITERAL = re.compile(rb"\{(\d+)\+?\}$")


@dataclass(frozen=True)
class Greet:
    line: bytes
    close: bool = True


@dataclass(frozen=True)
class WrongTag:
    command: str | None = None


@dataclass(frozen=True)
class ByeOn:
    command: str | None = None
    text: bytes = b"* BYE server shutting down for maintenance\r\n"


@dataclass(frozen=True)
class HugeLiteral:
    command: str | None = None
    size: int = 2_000_000_000


@dataclass(frozen=True)
class EndlessLine:
    command: str | None = None


@dataclass(frozen=True)
class PoisonList:
    names: tuple[bytes, ...] = (b'"Poison\rCR"', b'"Poison\nLF"', b'"Poison\x00NUL"', b"{11}\r\nPoison\r\nLit")


@dataclass(frozen=True)
class Answer:
    command: str | None
    text: bytes  # the tagged answer after the tag, e.g. b"NO [LIMIT] too many"


@dataclass
class TellWith:
    command: str | None
    lines: bytes  # untagged lines with their CRLFs, e.g. b"* 9 EXISTS\r\n"
    told: bool = False


Fault = Greet | WrongTag | ByeOn | HugeLiteral | EndlessLine | PoisonList | Answer | TellWith

BYE_TOO_MANY = Greet(b"* BYE too many connections\r\n")
BYE_UNAVAILABLE = Greet(b"* BYE [UNAVAILABLE] the server is overloaded, try again later\r\n")
SSH_BANNER = Greet(b"SSH-2.0-OpenSSH_9.6p1 Debian-4\r\n", close=False)
O365_THROTTLE = b"NO Request is throttled. Suggested Backoff Time: 2000 milliseconds"


def code_answer(code: str) -> bytes:
    """A NO answer with an RFC 5530 response code."""
    return b"NO [%s] the server says %s" % (code.encode(), code.lower().encode())


def _matches(wanted: str | None, name: str) -> bool:
    return wanted is None or wanted.upper() == name


def _units(buffer: bytearray) -> Iterator[bytes]:
    """Complete protocol units (a line with its literals) taken off the front of `buffer`."""
    while True:
        end, pos = -1, 0
        while True:
            crlf = buffer.find(b"\r\n", pos)
            if crlf < 0:
                return
            m = _LITERAL.search(bytes(buffer[max(pos, crlf - 24):crlf]))
            if m is None:
                end = crlf + 2
                break
            pos = crlf + 2 + int(m.group(1))
            if pos > len(buffer):
                return
        unit = bytes(buffer[:end])
        del buffer[:end]
        yield unit


@dataclass
class _Connection:
    client: trio.SocketStream
    server: trio.SocketStream | None
    scope: trio.CancelScope
    tags: dict[bytes, str] = field(default_factory=dict)
    lock: trio.Lock = field(default_factory=trio.Lock)

    async def to_client(self, data: bytes) -> None:
        async with self.lock:
            await self.client.send_all(data)


@dataclass
class HostileImap:
    upstream_host: str
    upstream_port: int
    port: int = 0
    fault: Fault | None = None
    stream_cap: int = 64 * 1024 * 1024  # most bytes a huge literal or endless line sends
    connections: list[float] = field(default_factory=list)  # time.monotonic() of each accept
    commands: list[tuple[float, int, str]] = field(default_factory=list)  # (monotonic, connection, name)
    _open: dict[int, _Connection] = field(default_factory=dict)
    _token: trio.lowlevel.TrioToken | None = None

    # --- control (any thread) -----------------------------------------------------------

    def behave(self) -> None:
        self.fault = None

    def connections_since(self, t: float) -> list[float]:
        return [c for c in list(self.connections) if c >= t]

    def count(self, name: str) -> int:
        return sum(1 for _, _, n in list(self.commands) if n == name.upper())

    def drop_all_threadsafe(self) -> None:
        """`drop_all` from another thread (the harness runs in its own)."""
        assert self._token is not None
        trio.from_thread.run(self.drop_all, trio_token=self._token)

    async def drop_all(self) -> None:
        """Cut every open connection."""
        for conn in list(self._open.values()):
            conn.scope.cancel()

    # --- serving ------------------------------------------------------------------------

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        self._token = trio.lowlevel.current_trio_token()
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        self.connections.append(time.monotonic())
        number = len(self.connections)
        fault = self.fault
        async with client:
            if isinstance(fault, Greet):
                await self._greet(client, fault)
                return
            try:
                server = await trio.open_tcp_stream(self.upstream_host, self.upstream_port)
            except OSError:
                return
            async with server:
                with trio.CancelScope() as scope:
                    conn = _Connection(client, server, scope)
                    self._open[number] = conn
                    try:
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._from_server, conn)
                            nursery.start_soon(self._from_client, conn, number)
                    except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        pass
                    finally:
                        self._open.pop(number, None)

    async def _greet(self, client: trio.SocketStream, fault: Greet) -> None:
        try:
            await client.send_all(fault.line)
            if not fault.close:  # a foreign server waits for its own protocol; at most 30 s
                with trio.move_on_after(30):
                    while await client.receive_some(65536):
                        pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    async def _from_client(self, conn: _Connection, number: int) -> None:
        """Forward the client's bytes line by line (a literal as it comes: the client may
        wait for the server's continuation), playing the fault on its commands."""
        assert conn.server is not None
        buffer = bytearray()
        literal = 0  # bytes of a client literal still to pass on
        async for chunk in conn.client:
            buffer += chunk
            while buffer:
                if literal:
                    take = bytes(buffer[:literal])
                    del buffer[:literal]
                    literal -= len(take)
                    await conn.server.send_all(take)
                    continue
                crlf = buffer.find(b"\r\n")
                if crlf < 0:
                    break
                line = bytes(buffer[:crlf + 2])
                del buffer[:crlf + 2]
                m = _LITERAL.search(line[:-2])
                literal = int(m.group(1)) if m else 0
                command = _COMMAND.match(line)
                if command is None or line.upper().startswith(b"DONE"):
                    await conn.server.send_all(line)
                    continue
                tag, name = command.group(1), command.group(2).upper().decode()
                self.commands.append((time.monotonic(), number, name))
                conn.tags[tag] = name
                if literal or not await self._act_on_command(conn, tag, name):
                    await conn.server.send_all(line)
        conn.scope.cancel()

    async def _act_on_command(self, conn: _Connection, tag: bytes, name: str) -> bool:
        """Play the fault on this command; True when it was answered here (not forwarded)."""
        fault = self.fault
        if isinstance(fault, ByeOn) and _matches(fault.command, name):
            await conn.to_client(fault.text)
            conn.scope.cancel()
            return True
        if isinstance(fault, Answer) and _matches(fault.command, name):
            await conn.to_client(tag + b" " + fault.text + b"\r\n")
            return True
        if isinstance(fault, HugeLiteral) and _matches(fault.command, name):
            await self._stream(conn, b"* 1 FETCH (UID 1 BODY[HEADER] {%d}\r\n" % fault.size, b"x")
            return True
        if isinstance(fault, EndlessLine) and _matches(fault.command, name):
            await self._stream(conn, b"* OK ", b"a")
            return True
        return False

    async def _stream(self, conn: _Connection, head: bytes, filler: bytes) -> None:
        """`head`, then filler without end (up to `stream_cap`), then hang up."""
        block = filler * 65536
        sent = 0
        async with conn.lock:
            await conn.client.send_all(head)
            while sent < self.stream_cap:
                await conn.client.send_all(block)
                sent += len(block)
        conn.scope.cancel()

    async def _from_server(self, conn: _Connection) -> None:
        assert conn.server is not None
        buffer = bytearray()
        async for chunk in conn.server:
            buffer += chunk
            for unit in _units(buffer):
                await conn.to_client(self._rewrite(conn, unit))
        conn.scope.cancel()

    def _rewrite(self, conn: _Connection, unit: bytes) -> bytes:
        fault = self.fault
        if unit[:1] in (b"*", b"+"):
            return unit
        tag = unit.split(b" ", 1)[0]
        name = conn.tags.pop(tag, "")
        if isinstance(fault, WrongTag) and _matches(fault.command, name):
            return b"ZZ9999" + unit[len(tag):]
        if isinstance(fault, PoisonList) and name == "LIST" and unit[len(tag):].upper().startswith(b" OK"):
            return b"".join(b'* LIST () "." ' + n + b"\r\n" for n in fault.names) + unit
        if isinstance(fault, TellWith) and not fault.told and name and _matches(fault.command, name):
            fault.told = True
            return fault.lines + unit
        return unit


@contextmanager
def running_hostile(upstream_host: str, upstream_port: int) -> Iterator[HostileImap]:
    """A `HostileImap` served from a thread of its own for the block."""
    server = HostileImap(upstream_host, upstream_port)
    started = threading.Event()
    stop: list[trio.CancelScope] = []

    async def main() -> None:
        with trio.CancelScope() as scope:
            stop.append(scope)
            async with trio.open_nursery() as nursery:
                await nursery.start(server.serve)
                started.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True, name="hostile-imap")
    thread.start()
    if not started.wait(10):
        raise AssertionError("the hostile IMAP server did not start")
    try:
        yield server
    finally:
        assert server._token is not None
        try:
            trio.from_thread.run_sync(stop[0].cancel, trio_token=server._token)
        except trio.RunFinishedError:
            pass
        thread.join(10)


__all__ = ["Answer", "BYE_TOO_MANY", "BYE_UNAVAILABLE", "ByeOn", "EndlessLine", "Fault", "Greet", "HostileImap",
           "HugeLiteral", "O365_THROTTLE", "PoisonList", "SSH_BANNER", "WrongTag", "code_answer", "running_hostile"]

"""A counting TCP proxy in front of the test Dovecot (trio; runs in the test's own loop).

It forwards bytes unchanged both ways and records every command line a client sends
(`commands`: (trio time, connection number, command name)), so tests can count what
really reached the server: LOGINs, commands per minute, connections.  It can also cut
every connection (`drop_all`) to make a client's connection die mid-work, and hold the
server's replies back once a client sends a given command (`stall_on`, then `resume`),
and rewrite what the server sends (`rewrite`: a function of each chunk) to play a server
that answers malformed responses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import trio

_COMMAND = re.compile(rb"^[A-Za-z0-9.]+ ((?:UID )?[A-Za-z]+)", re.I)


@dataclass
class ImapProxy:
    upstream_host: str
    upstream_port: int
    port: int = 0
    commands: list[tuple[float, int, str]] = field(default_factory=list)
    connections: int = 0
    stall_on: str | None = None  # hold server replies back once a client sends this command
    stalled: trio.Event = field(default_factory=trio.Event)  # set when that command passed
    _resume: trio.Event | None = None
    rewrite: Callable[[bytes], bytes] | None = None  # applied to every server chunk
    _streams: list = field(default_factory=list)

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    def count(self, name: str) -> int:
        return sum(1 for _, _, n in self.commands if n == name.upper())

    async def drop_all(self) -> None:
        """Cut every open connection (both directions)."""
        streams, self._streams = self._streams, []
        for stream in streams:
            with trio.move_on_after(1):
                await stream.aclose()

    def resume(self) -> None:
        """Let the held server replies through (and stall no more)."""
        self.stall_on = None
        if self._resume is not None:
            self._resume.set()
            self._resume = None

    async def _handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        number = self.connections
        try:
            server = await trio.open_tcp_stream(self.upstream_host, self.upstream_port)
        except OSError:
            await client.aclose()
            return
        self._streams += [client, server]
        async with client, server:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, server, client, None, nursery.cancel_scope)
                nursery.start_soon(self._pump, client, server, number, nursery.cancel_scope)

    async def _pump(self, source, sink, number: int | None, scope: trio.CancelScope) -> None:
        buffer = b""
        try:
            async for chunk in source:
                if number is not None:
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\r\n")
                    for line in lines:
                        m = _COMMAND.match(line)
                        if m and not line.upper().startswith(b"DONE"):
                            name = m.group(1).upper().decode()
                            self.commands.append((trio.current_time(), number, name))
                            if name == self.stall_on and self._resume is None:
                                self._resume = trio.Event()
                                self.stalled.set()
                    buffer = buffer[-4096:]
                else:
                    if self._resume is not None:
                        await self._resume.wait()
                    if self.rewrite is not None:
                        chunk = self.rewrite(chunk)
                await sink.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            scope.cancel()

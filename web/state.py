"""What every request handler of the API shares, kept in `app.extensions["mailbridge"]`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import trio
from quart import Quart

from actors.registry import Registry
from mailbridge.config import Settings


@dataclass
class WebState:
    """The registry of actors, the database, the settings and the shutdown switch.

    `db` is the process's `mailbridge.aio.db.Database`; web/ names no type from the
    asyncio seam and reaches the database through `mailbridge.store` only.
    """

    registry: Registry
    db: Any
    settings: Settings
    require_token: bool
    body_timeout: float = 20.0
    max_event_streams: int = 64
    event_streams: int = 0
    draining: bool = False
    stopping: trio.Event = field(default_factory=trio.Event)

    def begin_drain(self) -> None:
        """Answer new requests 503 and end the event streams (shutdown has begun)."""
        self.draining = True
        self.stopping.set()

    def open_event_stream(self, stream: AsyncIterator[bytes]) -> "CountedStream | None":
        """`stream` holding one of the `max_event_streams` slots until it ends or is
        closed; None when every slot is taken."""
        if self.event_streams >= self.max_event_streams:
            return None
        self.event_streams += 1
        return CountedStream(self, stream)


class CountedStream:
    """An event stream holding a slot of `WebState.event_streams`; the slot is given back
    once, when the stream ends, is closed (even if never started), or is collected."""

    def __init__(self, state: WebState, stream: AsyncIterator[bytes]) -> None:
        self._state: WebState | None = state
        self._stream = stream

    def _release(self) -> None:
        if self._state is not None:
            self._state.event_streams -= 1
            self._state = None

    def __aiter__(self) -> "CountedStream":
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._stream.__anext__()
        except BaseException:
            self._release()
            raise

    async def aclose(self) -> None:
        """End the stream (its cleanup runs) and give the slot back."""
        try:
            aclose = getattr(self._stream, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self._release()

    def __del__(self) -> None:
        self._release()


def web_state(app: Quart) -> WebState:
    """The `WebState` that `create_app` installed in `app`."""
    state: WebState = app.extensions["mailbridge"]
    return state


__all__ = ["CountedStream", "WebState", "web_state"]

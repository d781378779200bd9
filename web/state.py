"""What every request handler of the API shares, kept in `app.extensions["mailbridge"]`."""

from __future__ import annotations

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
    draining: bool = False
    stopping: trio.Event = field(default_factory=trio.Event)

    def begin_drain(self) -> None:
        """Answer new requests 503 and end the event streams (shutdown has begun)."""
        self.draining = True
        self.stopping.set()


def web_state(app: Quart) -> WebState:
    """The `WebState` that `create_app` installed in `app`."""
    state: WebState = app.extensions["mailbridge"]
    return state


__all__ = ["WebState", "web_state"]

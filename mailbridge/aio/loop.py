"""The asyncio loop that lives inside trio (trio-asyncio), and the bridge call."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import trio
import trio_asyncio

from mailbridge.errors import root_cause

T = TypeVar("T")


@asynccontextmanager
async def open_loop() -> AsyncIterator[None]:
    """Open the asyncio loop the seam's calls run on, for the enclosed block."""
    async with trio_asyncio.open_loop():
        yield


def run(async_fn: Callable[..., Awaitable[T]], *args: Any, **trio_kwargs: Any) -> T:
    """`trio.run(async_fn, *args, **trio_kwargs)` with the asyncio loop open around it.

    A failure wrapped in exception groups of one is raised as itself (a group of several
    as the group).  `trio_kwargs` (clock, instruments, ...) go to `trio.run`, so this is
    also a test runner's `run=`.
    """

    async def _main() -> T:
        async with trio_asyncio.open_loop():
            return await async_fn(*args)

    try:
        return trio.run(_main, **trio_kwargs)
    except BaseExceptionGroup as group:
        leaf = root_cause(group)
        if leaf is group:
            raise
        raise leaf from None


async def call(fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """Await an asyncio coroutine function from trio; trio cancellation cancels it."""
    return await trio_asyncio.aio_as_trio(fn)(*args, **kwargs)

"""The asyncio loop that lives inside trio (trio-asyncio), and the bridge call."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import trio
import trio_asyncio

T = TypeVar("T")


@asynccontextmanager
async def open_loop() -> AsyncIterator[None]:
    """Open the asyncio loop the seam's calls run on, for the enclosed block."""
    async with trio_asyncio.open_loop():
        yield


def run(async_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """`trio.run(async_fn, *args)` with the asyncio loop open around it."""

    async def _main() -> T:
        async with trio_asyncio.open_loop():
            return await async_fn(*args)

    try:
        return trio.run(_main)
    except BaseExceptionGroup as group:
        leaf = single_exception(group)
        if leaf is group:
            raise
        raise leaf from None


def single_exception(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups (else `exc`)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def call(fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """Await an asyncio coroutine function from trio; trio cancellation cancels it."""
    return await trio_asyncio.aio_as_trio(fn)(*args, **kwargs)


def trio_run_with_loop(async_fn: Callable[..., Awaitable[T]], *args: Any, **trio_kwargs: Any) -> T:
    """`trio.run` that opens the asyncio loop first (for test runners: pytest-trio's `run=`)."""

    async def _main() -> T:
        async with trio_asyncio.open_loop():
            return await async_fn(*args)

    return trio.run(_main, **trio_kwargs)

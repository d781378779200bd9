"""The asyncio loop that lives inside trio (trio-asyncio), and the bridge call.

The loop's exception handler (`on_loop_exception`) only logs, redacted: an error in a
protocol callback or in a task nothing awaits (aioimaplib starts some) is that
connection's trouble, never the process's.  trio-asyncio's default handler re-raises such
an error into the loop's nursery, which ends every account at once.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import trio
import trio_asyncio

from mailbridge.aio.redact import redact
from mailbridge.errors import root_cause

T = TypeVar("T")
log = logging.getLogger("mailbridge.aio")


# asyncpg's TLS negotiation future (connect_utils.TLSUpgradeProto.on_data) fails with this
# when its socket is closed by us before the server answered: a connect given up by a
# cancellation, or the CancelRequest connection asyncpg opens for a cancelled statement,
# abandoned when that statement's connection is terminated.  Nobody waits for it any more.
_ABANDONED_CONNECT = "unexpected connection_lost() call"


def is_abandoned_connect(context: dict[str, Any]) -> bool:
    """Whether `context` reports a Postgres connection attempt that we gave up ourselves
    (harmless: its socket is already closed; see `_ABANDONED_CONNECT`)."""
    exc = context.get("exception")
    return (isinstance(exc, ConnectionError) and str(exc) == _ABANDONED_CONNECT
            and "never retrieved" in str(context.get("message") or ""))


def on_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Log an error asyncio could not hand to anyone (redacted, one line; the traceback's
    frames at DEBUG); never raises.  An abandoned Postgres connect is logged at DEBUG."""
    try:
        message = redact(str(context.get("message") or "error in the asyncio loop"))
        exc = context.get("exception")
        if exc is None:
            log.error("asyncio: %s", message)
            return
        if is_abandoned_connect(context):
            log.debug("asyncio: a Postgres connection attempt we gave up (cancelled connect or cancel "
                      "request) was closed before the server answered; nothing is lost")
            return
        log.error("asyncio: %s: %s: %s", message, type(exc).__name__, redact(str(exc)))
        if log.isEnabledFor(logging.DEBUG):  # frames and source lines only, never messages
            log.debug("asyncio: where: %s", "".join(traceback.format_tb(exc.__traceback__)))
    except Exception:  # a handler that fails would be reported by the loop's default one
        pass


def _install(loop: asyncio.AbstractEventLoop) -> None:
    loop.set_exception_handler(on_loop_exception)


@asynccontextmanager
async def open_loop() -> AsyncIterator[None]:
    """Open the asyncio loop the seam's calls run on, for the enclosed block."""
    async with trio_asyncio.open_loop() as loop:
        _install(loop)
        yield


def run(async_fn: Callable[..., Awaitable[T]], *args: Any, **trio_kwargs: Any) -> T:
    """`trio.run(async_fn, *args, **trio_kwargs)` with the asyncio loop open around it.

    A failure wrapped in exception groups of one is raised as itself (a group of several
    as the group).  `trio_kwargs` (clock, instruments, ...) go to `trio.run`, so this is
    also a test runner's `run=`.
    """

    async def _main() -> T:
        async with trio_asyncio.open_loop() as loop:
            _install(loop)
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

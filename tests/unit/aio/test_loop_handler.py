"""The asyncio loop's exception handler (`mailbridge.aio.loop.on_loop_exception`): logs,
redacted, never raises; a Postgres connect we abandoned ourselves is a DEBUG line.
Pure: contexts built by hand, and futures dropped on the seam's real loop."""

from __future__ import annotations

import asyncio
import gc
import logging

import trio

from mailbridge.aio import loop as seam_loop
from mailbridge.aio.redact import holding

# what asyncpg's TLS negotiation future holds when its socket is closed before an answer
ABANDONED = "unexpected connection_lost() call"


def records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "mailbridge.aio"]


def test_an_abandoned_postgres_connect_is_logged_at_debug_with_the_reason(caplog):
    caplog.set_level(logging.DEBUG, logger="mailbridge.aio")
    context = {"message": "Future exception was never retrieved", "exception": ConnectionError(ABANDONED),
               "future": object()}
    assert seam_loop.is_abandoned_connect(context)
    seam_loop.on_loop_exception(asyncio.new_event_loop(), context)
    [record] = records(caplog)
    assert record.levelno == logging.DEBUG
    assert "gave up" in record.getMessage() and "nothing is lost" in record.getMessage()


def test_other_errors_stay_errors():
    for context in (
        {"message": "Future exception was never retrieved", "exception": ConnectionError("reset by peer")},
        {"message": "Exception in callback", "exception": ConnectionError(ABANDONED)},  # raised, not dropped
        {"message": "Future exception was never retrieved", "exception": OSError(ABANDONED)},
    ):
        assert not seam_loop.is_abandoned_connect(context)


def test_the_handler_never_raises_and_redacts(caplog):
    caplog.set_level(logging.DEBUG, logger="mailbridge.aio")

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text")

    loop = asyncio.new_event_loop()
    try:
        seam_loop.on_loop_exception(loop, {"message": "boom", "exception": Unprintable()})
        seam_loop.on_loop_exception(loop, {})
        with holding("s3cret-pass"):
            seam_loop.on_loop_exception(loop, {"message": "oops s3cret-pass",
                                               "exception": ConnectionError("lost s3cret-pass")})
    finally:
        loop.close()
    messages = [r.getMessage() for r in records(caplog)]
    assert any("ConnectionError" in m for m in messages)
    assert all("s3cret-pass" not in m for m in messages)


def test_dropped_futures_of_a_lost_connection_never_reach_trio(caplog):
    """As under a storm of terminated backends: futures failed with connection errors that
    nobody awaits any more are collected; trio's run carries on and returns."""
    caplog.set_level(logging.DEBUG, logger="mailbridge.aio")

    async def main() -> str:
        async def drop() -> None:
            running = asyncio.get_running_loop()
            for exc in (ConnectionError(ABANDONED), ConnectionResetError("reset by peer")):
                running.create_future().set_exception(exc)
            running.call_soon(lambda: (_ for _ in ()).throw(ConnectionError("callback failed")))
            await asyncio.sleep(0.01)

        await seam_loop.call(drop)
        gc.collect()
        await trio.sleep(0.05)
        return "still running"

    assert seam_loop.run(main) == "still running"
    debug = [r.getMessage() for r in records(caplog) if r.levelno == logging.DEBUG]
    assert any("gave up" in m for m in debug), debug
    errors = [r.getMessage() for r in records(caplog) if r.levelno >= logging.ERROR]
    assert any("reset by peer" in m for m in errors) and any("callback failed" in m for m in errors)
    assert not any(ABANDONED in m for m in errors)

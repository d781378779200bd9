"""Serve the QuartTrio app with hypercorn's trio worker, inside the caller's nursery.

    url = await nursery.start(serve_http, app, "127.0.0.1", 8080)

Cancelling the task shuts HTTP down gracefully: the listening sockets close at once (no
new connections), requests that still arrive on open connections are answered 503, the
server-sent event streams end, and in-flight requests get up to `grace` seconds to
finish before they are cancelled.
"""

from __future__ import annotations

import logging

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart_trio import QuartTrio

from web.state import web_state

GRACE = 3.0

log = logging.getLogger("mailbridge.web")


def _bind(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


async def serve_http(app: QuartTrio, host: str, port: int, *, grace: float = GRACE,
                     task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the HTTP server until cancelled; `task_status.started(url)` once it listens
    (with port 0, the URL has the port the system chose)."""
    config = Config()
    config.bind = [_bind(host, port)]
    config.graceful_timeout = grace
    config.accesslog = None
    config.errorlog = logging.getLogger("mailbridge.web.hypercorn")
    config.keep_alive_timeout = 5.0
    state = web_state(app)
    shutdown = trio.Event()
    finished = trio.Event()
    server_scope = trio.CancelScope(shield=True)  # only our own shutdown stops the server

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            with server_scope:
                await serve(app, config, shutdown_trigger=shutdown.wait, task_status=task_status)
        finally:
            finished.set()

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(run)
        url = binds[0] if binds else f"http://{_bind(host, port)}"
        log.info("HTTP API listening on %s", url)
        task_status.started(url)
        try:
            await finished.wait()
        finally:
            state.begin_drain()
            shutdown.set()
            with trio.CancelScope(shield=True):
                with trio.move_on_after(grace + 1.0):
                    await finished.wait()
                server_scope.cancel()


__all__ = ["GRACE", "serve_http"]

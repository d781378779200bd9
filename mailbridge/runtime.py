"""The composition root: the only module (with cli) that imports `actors` and `web`.

`serve`, `sync --once` and `verify` are wired here (`demo` in `mailbridge.demo`, on top of
`serve_until_signal`).
"""

from __future__ import annotations

import argparse
import functools
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import TYPE_CHECKING, Callable, TextIO

import trio

from mailbridge.config import Settings
from mailbridge.context import Context
from mailbridge.errors import ConfigError, MailbridgeError

if TYPE_CHECKING:
    from threading import Timer
    from types import ModuleType

    from mailbridge.aio.db import Database
    from mailbridge.aio.locks import LockConnections
    from mailbridge.store.accounts import Account
    from mailbridge.sync.folder import Step


def process_owner() -> str:
    """host:pid, as stored in accounts.owner."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Progress:
    """Per-folder progress: a redrawn line on a terminal, plain lines otherwise."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self.stream = stream
        self.tty = stream.isatty()

    def step(self, account_id: int, step: "Step") -> None:
        if step.phase == "initial" and self.tty and step.total:
            width = 30
            done = min(step.synced, step.total)
            filled = int(width * done / step.total) if step.total else width
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r  [{bar}] {done}/{step.total} {step.folder[:40]:<40}")
            self.stream.flush()
        elif step.phase == "done":
            if self.tty:
                self.stream.write("\r" + " " * 100 + "\r")
            self.stream.write(f"account {account_id} {step.folder}: {step.synced} messages mirrored "
                              f"(server has {step.total})\n")
            self.stream.flush()
        elif step.phase in ("reset", "parked", "gone"):
            self.stream.write(f"account {account_id} {step.folder}: {step.phase}: {step.detail}\n")
            self.stream.flush()


async def sync_account_once(db: "Database", locks: "LockConnections", settings: Settings, account: "Account", *,
                            on_step: Callable[["Step"], None] | None = None) -> str | None:
    """Bring one account fully up to date with the actor's own machinery (`run_once`):
    its lock, login, one complete cycle and health.  Prints the account's totals (and,
    when degraded, the reason on stderr); returns the problem that stopped it, or None."""
    from actors.account import AccountActor, ActorDeps
    from actors.registry import Registry
    from mailbridge.imap.throttle import Throttle

    deps = ActorDeps(db=db, settings=settings, registry=Registry(), owner=process_owner(), locks=locks)
    actor = AccountActor(account, deps, throttle=Throttle(settings.commands_per_minute), on_step=on_step)
    result = await actor.run_once()
    if result.outcome is None:
        return result.problem
    totals = result.outcome.totals
    if totals.problems:
        print(f"mailbridge: account {account.id}: degraded: {'; '.join(totals.problems)}", file=sys.stderr,
              flush=True)
    print(f"account {account.id} ({account.email}): {totals.folders} folder(s), +{totals.added} "
          f"~{totals.changed} -{totals.removed}" + (f", {totals.defects} defect(s)" if totals.defects else ""),
          flush=True)
    return None


async def cmd_sync(ctx: Context, args: argparse.Namespace) -> int:
    from actors.indexer import drain
    from mailbridge.aio.db import Database
    from mailbridge.aio.locks import LockConnections
    from mailbridge.store import accounts as account_store

    progress = Progress()
    problems: list[str] = []
    async with Database.connect(ctx.dsn, max_size=4) as db, LockConnections.open(ctx.dsn, count=1) as locks:
        if args.account is not None:
            accounts = [await account_store.get(db, args.account)]
        else:
            accounts = [a for a in await account_store.list_all(db) if a.enabled][: ctx.settings.max_accounts]
        if not accounts:
            print("no enabled accounts: add one with `mailbridge accounts add`")
            return 0
        for account in accounts:
            problem = await sync_account_once(db, locks, ctx.settings, account,
                                              on_step=functools.partial(progress.step, account.id))
            if problem:
                problems.append(problem)
                print(f"mailbridge: account {account.id}: {problem}", file=sys.stderr, flush=True)
        # new rows came with their documents; this builds those of changed (or requeued)
        # rows: search is exact without it, but fast only once the documents are built
        indexed = await drain(db)
        if indexed:
            print(f"search index: {indexed} message(s) indexed", flush=True)
    return 1 if problems else 0


SHUTDOWN_GRACE = 9.0  # seconds from the first signal to a forced exit
HANDOVER_WAIT = 4.0  # seconds a stop waits for the actors to finish their step and hand over
RESCAN_SECONDS = 10.0  # seconds between rescans of the accounts table (besides its notifications)
DEFAULT_PORT = 8025
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def parse_bind(bind: str | None, port: int | None, token: str | None) -> tuple[str, int]:
    """(host, port) to listen on.  Without an API token only loopback is allowed."""
    host, chosen = "127.0.0.1", port or DEFAULT_PORT
    if bind:
        raw_host, sep, raw_port = bind.rpartition(":")
        if not sep or not raw_port.isdigit() or not 0 <= int(raw_port) < 65536:
            raise ConfigError(f"--bind {bind!r} is not HOST:PORT (e.g. 0.0.0.0:8025)")
        host, chosen = raw_host.strip("[]") or "0.0.0.0", int(raw_port)
    if token is None and host not in LOOPBACK:
        raise ConfigError(
            f"refusing to listen on {host} without MAILBRIDGE_API_TOKEN: anyone who can reach it could "
            "read your mail; set MAILBRIDGE_API_TOKEN (e.g. `openssl rand -hex 32`) or bind to 127.0.0.1")
    return host, chosen


async def cmd_serve(ctx: "Context", args: argparse.Namespace) -> int:
    """Preflight, then the HTTP API and the supervisor (and its actors) until SIGINT/SIGTERM.

    Shutdown order: HTTP stops taking requests and lets in-flight ones finish (or answers
    503), then the actors stop: each batch commits or rolls back, sessions log out, locks
    are released (all shielded and bounded).  A second signal, or a shutdown that
    outlasts SHUTDOWN_GRACE, exits at once.
    """
    from mailbridge.preflight import run_preflight

    settings = ctx.settings
    host, port = parse_bind(args.bind, settings.port, settings.api_token)
    checks = await run_preflight(settings, ctx.dsn)
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name:<15} {check.detail}", flush=True)
    if not all(c.ok for c in checks):
        raise MailbridgeError("preflight failed (see above); `mailbridge serve` did not start")
    await serve_until_signal(ctx, host, port)
    return 0


async def serve_until_signal(ctx: "Context", host: str, port: int, *,
                             on_ready: Callable[[str], object] | None = None,
                             extra_tasks: Sequence[Callable[[], Awaitable[object]]] = (),
                             before_forced_exit: Callable[[], object] | None = None) -> None:
    """Run HTTP and the supervisor until SIGINT/SIGTERM (see `cmd_serve`).

    `on_ready(url)` is called once both run; each of `extra_tasks` (async callables) runs
    alongside until shutdown (the demo's mail generator).  `before_forced_exit()` (plain,
    blocking, best effort) runs just before a forced exit: a second signal, or a shutdown
    that outlasts SHUTDOWN_GRACE (the demo removes its Dovecot and files there).
    """
    import signal
    import threading

    from actors.account import AccountActor, ActorDeps
    from actors.indexer import run_indexer
    from actors.janitor import run_janitor
    from actors.membership import Membership
    from actors.registry import Registry
    from actors.supervisor import DbAccountSource, Supervisor
    from mailbridge.aio.db import Database
    from mailbridge.aio.locks import LockConnections
    from mailbridge.metrics import install_snapshot_collector
    from mailbridge.webhooks.delivery import run_webhooks
    from web.app import create_app
    from web.server import serve_http

    settings = ctx.settings
    owner = process_owner()
    async with Database.connect(ctx.dsn, max_size=settings.db_pool_size) as db, \
            LockConnections.open(ctx.dsn, count=settings.lock_connections) as locks:
        registry = Registry()
        install_snapshot_collector(registry.snapshots)
        deps = ActorDeps(db=db, settings=settings, registry=registry, owner=owner, locks=locks)
        membership = Membership(db, locks, owner, timeout=settings.member_timeout)
        supervisor = Supervisor(
            DbAccountSource(db), registry, max_accounts=settings.max_accounts,
            commands_per_minute=settings.commands_per_minute,
            actor_factory=lambda account, throttle, restarts: AccountActor(
                account, deps, throttle=throttle, restarts=restarts),
            shares=membership, rescan_seconds=RESCAN_SECONDS)
        membership.on_change = supervisor.wake
        app = create_app(registry, db, settings, require_token=settings.api_token is not None)
        stopping = trio.Event()
        timers: list[Timer] = []

        async def watch(signals: AsyncIterator[int]) -> None:
            async for signum in signals:
                if stopping.is_set():
                    _run_before_exit(before_forced_exit)
                    os._exit(128 + signum)  # the second signal: at once
                print(f"mailbridge: {signal.Signals(signum).name}: stopping "
                      "(a second signal exits at once)", file=sys.stderr, flush=True)
                timers.append(_arm_forced_exit(threading, before_forced_exit))
                stopping.set()

        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as outer:
                outer.start_soon(watch, signals)
                async with trio.open_nursery() as actors:
                    await actors.start(locks.run_probe)
                    await actors.start(membership.run)
                    await actors.start(supervisor.run)
                    await actors.start(run_indexer, db)
                    await actors.start(run_janitor, db, settings.events_retention_days)
                    await actors.start(run_webhooks, db, locks, settings, owner)
                    async with trio.open_nursery() as http:
                        url = await http.start(serve_http, app, host, port)
                        where = "" if settings.api_token else " (loopback only: MAILBRIDGE_API_TOKEN is not set)"
                        print(f"ok   http            listening on {url}{where}", flush=True)
                        print(f"serving as {owner}: {len(supervisor.running)} account(s) running; "
                              "Ctrl-C or SIGTERM stops", flush=True)
                        for task in extra_tasks:
                            http.start_soon(task)
                        if on_ready is not None:
                            on_ready(url)
                        await stopping.wait()
                        http.cancel_scope.cancel()  # HTTP first: in-flight requests finish or get 503
                    # hand the accounts over: the others take them as our actors release them
                    await membership.leave()
                    supervisor.wake()
                    with trio.move_on_after(HANDOVER_WAIT):
                        while supervisor.running or supervisor.stopping:
                            await trio.sleep(0.05)
                    actors.cancel_scope.cancel()
                outer.cancel_scope.cancel()
        for timer in timers:
            timer.cancel()
    print("stopped: every batch committed or rolled back, locks released", flush=True)


def _run_before_exit(cleanup: Callable[[], object] | None) -> None:
    if cleanup is not None:
        try:
            cleanup()
        except Exception as exc:  # noqa: BLE001 - exiting anyway
            print(f"mailbridge: cleanup before exiting failed: {exc}", file=sys.stderr, flush=True)


def _arm_forced_exit(threading: ModuleType, cleanup: Callable[[], object] | None = None) -> Timer:
    def force() -> None:
        print(f"mailbridge: shutdown took over {SHUTDOWN_GRACE:g} s; exiting now "
              "(Postgres releases the locks with the connections)", file=sys.stderr, flush=True)
        _run_before_exit(cleanup)
        os._exit(1)

    timer = threading.Timer(SHUTDOWN_GRACE, force)
    timer.daemon = True
    timer.start()
    return timer


async def cmd_verify(ctx: "Context", args: argparse.Namespace) -> int:
    from mailbridge.aio.db import Database
    from mailbridge.verify import format_report, verify_account

    async with Database.connect(ctx.dsn, max_size=2) as db:
        report = await verify_account(db, ctx.settings, args.id)
    for line in format_report(report):
        print(line, flush=True)
    return 0 if report.clean else 1

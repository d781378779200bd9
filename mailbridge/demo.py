"""`mailbridge demo`: mailbridge running against a throwaway local mailbox, no account of
your own needed.

It starts a private Dovecot (the test suite's `mailbridge.testing.dovecot`) filled with a
few thousand generated messages in several folders, a throwaway database, adds the
mailbox as an account (the same path as `accounts add`: the login is tested first),
generates an API token and runs `serve` on 127.0.0.1 (port $PORT, or a free one), with a
new message appended every few seconds.  It prints the dashboard URL with the token.
Ctrl-C stops everything and removes the Dovecot, its mail and the database.

The demo never writes to your own mirror:
- with DATABASE_URL unset, an embedded Postgres of its own with its data under a fresh
  temporary directory (`mailbridge-demo-*` in $TMPDIR), deleted at the end;
- with DATABASE_URL set, a database `mailbridge_demo_<random>` created next to yours on
  the same server (this needs CREATE DATABASE) and dropped at the end.
Stored passwords are encrypted with a key generated for the demo and never saved.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
import threading
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import trio

from mailbridge.context import Context
from mailbridge.errors import DatabaseError, MailbridgeError
from mailbridge.runtime import serve_until_signal

log = logging.getLogger("mailbridge.demo")

# folder → messages at the start (about 3,400 in all)
FOLDERS: tuple[tuple[str, int], ...] = (
    ("INBOX", 1200),
    ("Archive", 900),
    ("Lists.python-dev", 700),
    ("Sent", 400),
    ("Reise & Urlaub", 200),
)
EMAIL = "demo@mailbridge.localhost"
USERNAME = "demo"
APPEND_EVERY = 4.0      # seconds between generated messages
POLL_SECONDS = 5.0      # the demo's sync cycle (INBOX is pushed through IDLE anyway)
BATCH_SIZE = 250        # small batches: the initial sync's progress bars move visibly
INSTALL_HINT = "apt-get install dovecot-imapd"


@dataclass
class DemoDatabase:
    dsn: str
    description: str
    name: str | None = None        # the database created next to DATABASE_URL's
    admin_dsn: str | None = None   # where to drop it from
    pgdata: Path | None = None     # the embedded server's data directory


async def cmd_demo(ctx: Context, args: argparse.Namespace) -> int:
    """`mailbridge demo` (it takes no arguments): `run_demo`."""
    return await run_demo(ctx)


async def run_demo(ctx: Context) -> int:
    """The whole demo; returns the exit code (0 after Ctrl-C / SIGTERM).

    Raises MailbridgeError (one line) when Dovecot or its IMAP server is missing or does
    not start; whatever it set up by then is removed first.
    """
    from mailbridge.testing.dovecot import DovecotError, DovecotServer, dovecot_available

    if not dovecot_available():
        raise MailbridgeError(
            "`mailbridge demo` runs a throwaway local Dovecot IMAP server, and Dovecot's IMAP server "
            f"is not installed: {INSTALL_HINT} (Debian/Ubuntu; as root or with sudo)")

    settings = ctx.settings
    workdir = Path(tempfile.mkdtemp(prefix="mailbridge-demo-"))
    database: DemoDatabase | None = None
    server: DovecotServer | None = None
    try:
        print("mailbridge demo: setting up a throwaway mailbox and database ...", flush=True)
        database = await _create_database(ctx, workdir)
        server = DovecotServer(workdir / "dovecot")
        try:
            await trio.to_thread.run_sync(server.start)
        except DovecotError as exc:
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise MailbridgeError(f"the demo's Dovecot did not start: {first_line}") from None
        user = server.add_user(USERNAME)
        total = await trio.to_thread.run_sync(_fill, user)

        token = secrets.token_urlsafe(24)
        from mailbridge.secrets import generate_key

        demo_settings = replace(settings, api_token=token, encryption_keys=(generate_key(),),
                                poll_seconds=min(settings.poll_seconds, POLL_SECONDS),
                                batch_size=min(settings.batch_size, BATCH_SIZE))
        account_id = await _add_account(database.dsn, demo_settings, server.port, user.password)

        def announce(url: str) -> None:
            dashboard = f"{url}/?access_token={token}"
            print("", flush=True)
            print("mailbridge demo is running", flush=True)
            print(f"  dashboard  {dashboard}", flush=True)
            print(f"  API        curl -H 'Authorization: Bearer {token}' {url}/actors", flush=True)
            print(f"  mailbox    account {account_id}: {EMAIL} on a throwaway Dovecot at "
                  f"{server.host}:{server.port} ({total:,} messages in {len(FOLDERS)} folders; "
                  f"a new one every {APPEND_EVERY:g} s)", flush=True)
            print(f"  files      {workdir}", flush=True)
            print(f"  database   {database.description}", flush=True)
            print("Ctrl-C stops the demo and removes its mailbox and database.", flush=True)
            _open_browser(dashboard)

        async def generate_mail() -> None:
            await _generate_mail(server, user)

        def remove_at_once() -> None:
            _remove_at_once(server, database, workdir)

        await serve_until_signal(Context(settings=demo_settings, dsn=database.dsn), "127.0.0.1",
                                 settings.port or 0, on_ready=announce, extra_tasks=(generate_mail,),
                                 before_forced_exit=remove_at_once)
        return 0
    finally:
        with trio.CancelScope(shield=True):
            await _cleanup_unless_interrupted(server, database, workdir)


# --- the database -----------------------------------------------------------------------------


async def _create_database(ctx: Context, workdir: Path) -> DemoDatabase:
    from mailbridge.store.migrations import migrate

    if ctx.settings.database_url:
        database = await _database_next_to(ctx.settings.database_url)
    else:
        from mailbridge.embedded import start_embedded

        home = workdir / "home"
        home.mkdir()
        dsn = await trio.to_thread.run_sync(start_embedded, home)
        database = DemoDatabase(dsn, f"an embedded Postgres of its own under {home / 'pgdata'}",
                                pgdata=home / "pgdata")
    await migrate(database.dsn)
    return database


async def _database_next_to(dsn: str) -> DemoDatabase:
    from urllib.parse import urlsplit

    from mailbridge.aio.db import execute_once, with_database

    name = f"mailbridge_demo_{secrets.token_hex(4)}"
    try:
        await execute_once(dsn, f'CREATE DATABASE "{name}"')
    except DatabaseError as exc:
        raise MailbridgeError(
            f"the demo creates a throwaway database next to DATABASE_URL's and could not ({exc}); "
            "unset DATABASE_URL to let it use an embedded Postgres of its own") from None
    host = urlsplit(dsn).hostname or "localhost"
    return DemoDatabase(with_database(dsn, name), f"a throwaway database {name} on DATABASE_URL's server ({host})",
                        name=name, admin_dsn=dsn)


async def _drop_database(database: DemoDatabase) -> None:
    from mailbridge.aio.db import execute_once

    assert database.admin_dsn is not None, "a database made on DATABASE_URL's server has its admin_dsn"
    await execute_once(database.admin_dsn, f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')


def _stop_embedded(pgdata: Path) -> None:
    import pgserver

    pgserver.get_server(pgdata).cleanup()


# --- the mailbox ------------------------------------------------------------------------------


def _fill(user: Any) -> int:
    """Write the generated folders straight into the Maildir; returns how many messages."""
    from mailbridge.testing.mailgen import MaildirWriter, corpus

    writer = MaildirWriter()
    now = datetime.now(timezone.utc)
    total = 0
    for seed, (folder, n) in enumerate(FOLDERS):
        rng = random.Random(seed)
        seen = [rng.random() < (0.9 if folder != "INBOX" else 0.6) for _ in range(n)]
        flagged = [rng.random() < 0.04 for _ in range(n)]
        step = timedelta(days=365) / n

        def flags_for(i: int, _message: bytes) -> list[str]:
            return [f for f, on in (("\\Seen", seen[i]), ("\\Flagged", flagged[i])) if on]

        def date_for(i: int, _message: bytes) -> datetime:
            return now - step * (n - i)

        total += writer.write(user, folder, corpus(n, seed=100 + seed, folder_hint=folder),
                              flags_for=flags_for, internal_date_for=date_for)
    return total


async def _add_account(dsn: str, settings: Any, port: int, password: str) -> int:
    """The same path as `mailbridge accounts add` (validation, login test, encryption)."""
    from mailbridge.accountops import add_account, validate
    from mailbridge.aio.db import Database

    new = validate({"email": EMAIL, "host": "127.0.0.1", "port": port, "tls": "none", "username": USERNAME})
    async with Database.connect(dsn, max_size=2) as db:
        return await add_account(db, settings, new, password)


async def _generate_mail(server: Any, user: Any) -> None:
    """Every APPEND_EVERY seconds: a new message (mostly to INBOX); now and then one of
    the recent ones is marked read, so flag changes show up too."""
    from mailbridge.testing.mailgen import make_message

    rng = random.Random()
    recent: deque[tuple[str, int]] = deque(maxlen=8)
    others = [name for name, _ in FOLDERS if name != "INBOX"]
    number = 100_000
    while True:
        await trio.sleep(APPEND_EVERY)
        folder = "INBOX" if rng.random() < 0.8 else rng.choice(others)
        message = make_message(number, rng=rng, folder_hint="demo-live")
        number += 1
        mark = recent.popleft() if len(recent) > 3 and rng.random() < 0.3 else None
        try:
            uid = await trio.to_thread.run_sync(_append, server, user, folder, message, mark)
            recent.append((folder, uid))
        except Exception as exc:  # noqa: BLE001 - the demo goes on without this message
            log.warning("demo: could not append a message to %s: %s", folder, exc)


def _append(server: Any, user: Any, folder: str, message: bytes, mark: tuple[str, int] | None) -> int:
    from mailbridge.testing.imapctl import MailboxClient

    with MailboxClient(server, user, timeout=10) as client:
        uid = client.append(folder, message)
        if mark is not None:
            client.store(mark[0], [mark[1]], add=["\\Seen"])
        return uid


# --- the rest ---------------------------------------------------------------------------------


def _open_browser(url: str) -> None:
    """Open the dashboard when there is a desktop to open it on (never a console browser)."""
    if not sys.stdout.isatty() or not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                                       or sys.platform == "darwin"):
        return

    def run() -> None:
        import webbrowser

        try:
            webbrowser.open(url, new=2)
        except Exception:  # noqa: BLE001 - the URL is printed anyway
            pass

    threading.Thread(target=run, daemon=True).start()


async def _cleanup_unless_interrupted(server: Any, database: DemoDatabase | None, workdir: Path) -> None:
    """`_cleanup`; a Ctrl-C (or SIGTERM) meanwhile removes what it can at once and exits."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            async def exit_on_signal() -> None:
                async for signum in signals:
                    _remove_at_once(server, database, workdir)
                    os._exit(128 + signum)

            nursery.start_soon(exit_on_signal)
            await _cleanup(server, database, workdir)
            nursery.cancel_scope.cancel()


def _remove_at_once(server: Any, database: DemoDatabase | None, workdir: Path) -> None:
    """On a forced exit (a second Ctrl-C): stop Dovecot and an embedded Postgres, delete
    the files, all within a few seconds; a database made next to DATABASE_URL's cannot be
    dropped in that time (its connections are still open), so say how to drop it."""
    if server is not None:
        server.stop(timeout=2.0)
    if database is not None and database.pgdata is not None:
        _stop_embedded(database.pgdata)
    shutil.rmtree(workdir, ignore_errors=True)
    if database is not None and database.name is not None:
        print(f"mailbridge demo: exiting at once; Dovecot and the files are removed; drop the demo "
              f"database with: psql \"$DATABASE_URL\" -c 'DROP DATABASE \"{database.name}\" WITH (FORCE)'",
              file=sys.stderr, flush=True)
    else:
        print("mailbridge demo: exiting at once; Dovecot, the database and the files are removed",
              file=sys.stderr, flush=True)


async def _cleanup(server: Any, database: DemoDatabase | None, workdir: Path) -> None:
    """Stop Dovecot, drop or stop the database, remove the files; report what failed."""
    problems: list[str] = []
    if server is not None:
        try:
            await trio.to_thread.run_sync(server.stop)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"stopping Dovecot: {exc}")
    if database is not None:
        try:
            if database.name is not None:
                with trio.move_on_after(20) as scope:
                    await _drop_database(database)
                if scope.cancelled_caught:
                    problems.append(f"dropping database {database.name}: no answer within 20 s")
            elif database.pgdata is not None:
                await trio.to_thread.run_sync(_stop_embedded, database.pgdata)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"removing the database: {exc}")
    await trio.to_thread.run_sync(lambda: shutil.rmtree(workdir, ignore_errors=True))
    for problem in problems:
        print(f"mailbridge demo: cleanup: {problem}", file=sys.stderr, flush=True)
    if not problems:
        print("demo removed: Dovecot stopped, its mail and the demo database deleted", flush=True)


__all__ = ["cmd_demo", "run_demo"]

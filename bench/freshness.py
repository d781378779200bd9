"""Benchmark: how long until a change on the server shows in Postgres, with `serve` running.

Starts a private Dovecot (three times: with CONDSTORE/QRESYNC and IDLE; the same with
its mailbox list index on, which makes NOTIFY work; and with CONDSTORE/QRESYNC switched
off), a throwaway database, fills INBOX and a non-priority
folder, adds the account, runs `mailbridge serve` as a real process with the default
schedule (override with --poll), waits for the initial sync, then makes each change
with a separate IMAP client and prints the delay until the mirror shows it:

    new mail / flag set / delete, in INBOX and in "Archive" (non-priority)

    .venv/bin/python bench/freshness.py [--poll 60] [--dsn postgresql://...] [--only condstore|notify|plain]
                                        [--server dovecot|cyrus|courier|all]

`--idle-seconds N` (default 60; 0: none) also counts the IMAP commands the idle account
sends (`/metrics`, by command) over N seconds once the changes are in, as commands a minute.

`--server cyrus|courier` runs the same table on a private Cyrus IMAP (CONDSTORE/QRESYNC,
no NOTIFY, no idled) or Courier-IMAP (no CONDSTORE, IMAP_ENHANCEDIDLE=0) instead
(`mailbridge.testing.servers`); `all` runs every kind.

Targets (issue 4): INBOX new mail <= 5 s; any folder new mail <= 60 s; flag change and
delete in any folder <= 60 s with CONDSTORE/QRESYNC, <= 10 min without.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import re
import signal
import socket
import subprocess
import urllib.request
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mailbridge.aio.db import execute_once, with_database  # noqa: E402
from mailbridge.aio.loop import run as run_with_loop  # noqa: E402
from mailbridge.testing.dovecot import DovecotServer  # noqa: E402
from mailbridge.testing.imapctl import MailboxClient  # noqa: E402
from mailbridge.testing.mailgen import corpus, make_message  # noqa: E402


async def query(dsn: str, sql: str, *args):
    from mailbridge.aio.db import close_connection, connect_once

    conn = await connect_once(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await close_connection(conn)


def wait_until(dsn: str, sql: str, args: tuple, predicate, timeout: float) -> float | None:
    """Seconds until `predicate(value)` holds (polled every 50 ms), or None on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate(run_with_loop(query, dsn, sql, *args)):
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def commands_sent(port: int) -> dict[str, float]:
    """`mailbridge_imap_commands_total` of the serve process, by command."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    found = re.findall(r'^mailbridge_imap_commands_total\{command="([^"]+)"\} ([0-9.e+]+)$', text, re.M)
    return {name: float(value) for name, value in found}


def idle_cost(port: int, seconds: float) -> dict[str, float]:
    """Commands a minute, by command, that serve sent over `seconds` while nothing changed."""
    before = commands_sent(port)
    time.sleep(seconds)
    after = commands_sent(port)
    return {name: (count - before.get(name, 0.0)) * 60 / seconds for name, count in sorted(after.items())
            if count > before.get(name, 0.0)}


def measure(server, label: str, base_dsn: str, poll: float, timeout: float,
            idle_seconds: float = 0.0, costs: dict | None = None) -> list[tuple]:
    user = server.add_user()
    spell = getattr(server, "folder", lambda name: name)  # "INBOX.Archive" on Courier
    archive = spell("Archive")
    with MailboxClient(server, user) as client:
        client.create(archive)
        client.append_many("INBOX", list(corpus(200, seed=1)))
        client.append_many(archive, list(corpus(200, seed=2)))
        for n in range(8):  # other non-priority folders compete for the round robin
            client.create(spell(f"Folder{n}"))
            client.append_many(spell(f"Folder{n}"), list(corpus(20, seed=10 + n)))
    name = f"mb_fresh_{secrets.token_hex(4)}"
    run_with_loop(execute_once, base_dsn, f'CREATE DATABASE "{name}"')
    dsn = with_database(base_dsn, name)
    home = Path(tempfile.mkdtemp(prefix="mbfresh-"))
    http_port = _free_port()
    from cryptography.fernet import Fernet

    env = {**{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)},
           "DATABASE_URL": dsn, "MAILBRIDGE_ENCRYPTION_KEY": Fernet.generate_key().decode(),
           "MAILBRIDGE_HOME": str(home), "MAILBRIDGE_POLL_SECONDS": str(poll), "MAILBRIDGE_LOG_LEVEL": "warning",
           "PORT": str(http_port)}
    serve = None
    results = []
    try:
        subprocess.run([sys.executable, "-m", "mailbridge", "migrate"], env=env, check=True, cwd=REPO,
                       capture_output=True)
        subprocess.run([sys.executable, "-m", "mailbridge", "accounts", "add", "--email", "bench@example.test",
                        "--host", "127.0.0.1", "--port", str(server.port), "--tls", "none", "--username",
                        user.username, "--password-stdin"], env=env, input=user.password + "\n", text=True,
                       check=True, cwd=REPO, capture_output=True)
        serve = subprocess.Popen([sys.executable, "-m", "mailbridge", "serve"], env=env, cwd=REPO,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        total = 200 + 200 + 8 * 20
        if wait_until(dsn, "SELECT count(*) FROM messages", (), lambda v: v == total, 120) is None:
            raise SystemExit("the initial sync did not finish within 120 s")
        time.sleep(2)
        count_in = "SELECT count(*) FROM messages m JOIN folders f ON f.id = m.folder_id WHERE f.name = $1"
        flags_of = ("SELECT m.flags FROM messages m JOIN folders f ON f.id = m.folder_id "
                    "WHERE f.name = $1 AND m.uid = $2")
        rng = random.Random(3)
        for folder in ("INBOX", archive):
            with MailboxClient(server, user) as client:
                before = run_with_loop(query, dsn, count_in, folder)
                client.append(folder, make_message(90_000 + len(results), rng=rng))
                took = wait_until(dsn, count_in, (folder,), lambda v, b=before: v == b + 1, timeout)
                results.append((label, folder, "new mail", took))
                uid = client.uids(folder)[5]
                client.store(folder, [uid], add=["\\Flagged"])
                took = wait_until(dsn, flags_of, (folder, uid), lambda v: v is not None and "\\Flagged" in v, timeout)
                results.append((label, folder, "flag set", took))
                before = run_with_loop(query, dsn, count_in, folder)
                client.expunge_uids(folder, [client.uids(folder)[7]])
                took = wait_until(dsn, count_in, (folder,), lambda v, b=before: v == b - 1, timeout)
                results.append((label, folder, "delete", took))
        if idle_seconds > 0 and costs is not None:
            time.sleep(2)
            costs[label] = idle_cost(http_port, idle_seconds)
    finally:
        if serve is not None:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(15)
            except subprocess.TimeoutExpired:
                serve.kill()
        run_with_loop(execute_once, base_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(home, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--poll", type=float, default=60.0, help="MAILBRIDGE_POLL_SECONDS for serve (default 60)")
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL_TEST"),
                        help="a Postgres server to create a throwaway database on (default DATABASE_URL_TEST)")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up on one change after this long")
    parser.add_argument("--only", choices=("condstore", "notify", "plain"), help="which Dovecot (default all three)")
    parser.add_argument("--server", choices=("dovecot", "cyrus", "courier", "all"), default="dovecot")
    parser.add_argument("--idle-seconds", type=float, default=60.0,
                        help="count the idle account's IMAP commands over this long at the end (0: not)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="mbfresh-dovecot-"))
    pg_base = None
    dsn = args.dsn
    if not dsn:
        from mailbridge.embedded import start_embedded

        pg_base = Path(tempfile.mkdtemp(prefix="mbfresh-pg-"))
        dsn = start_embedded(pg_base, database="postgres")
    rows: list[tuple] = []
    costs: dict[str, dict[str, float]] = {}
    try:
        for kind in ("cyrus", "courier"):
            if args.server not in (kind, "all"):
                continue
            from mailbridge.testing.servers import CourierServer, CyrusServer, ensure_unpacked

            ensure_unpacked(kind)
            other = (CyrusServer if kind == "cyrus" else CourierServer)(Path(tempfile.mkdtemp(prefix=f"mbfresh-{kind}-")))
            other.start()
            try:
                rows += measure(other, kind, dsn, args.poll, args.timeout, args.idle_seconds, costs)
            finally:
                other.stop()
                shutil.rmtree(other.base_dir, ignore_errors=True)
        for label, disabled, list_index in (("condstore", (), False), ("notify", (), True),
                                            ("plain", ("CONDSTORE", "QRESYNC"), False)):
            if (args.only and args.only != label) or args.server not in ("dovecot", "all"):
                continue
            server = DovecotServer(base / label, disable_capabilities=disabled, list_index=list_index)
            server.start()
            try:
                rows += measure(server, label, dsn, args.poll, args.timeout, args.idle_seconds, costs)
            finally:
                server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
        if pg_base is not None:
            import pgserver

            pgserver.get_server(pg_base / "pgdata").cleanup()
            shutil.rmtree(pg_base, ignore_errors=True)
    print(f"poll tick {args.poll:g} s; delay from the change on the server to the row in Postgres")
    print(f"{'server':<10} {'folder':<8} {'change':<9} delay")
    for label, folder, change, took in rows:
        print(f"{label:<10} {folder:<8} {change:<9} {'timeout' if took is None else f'{took:.2f} s'}")
    if costs:
        print(f"idle account's IMAP commands a minute over {args.idle_seconds:g} s (after the changes)")
    for label, cost in costs.items():
        detail = ", ".join(f"{name} {rate:.1f}" for name, rate in cost.items())
        print(f"{label:<10} {sum(cost.values()):.1f}/min: {detail}")


if __name__ == "__main__":
    main()

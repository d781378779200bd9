"""Benchmark: what idle accounts cost one `serve` process.

Starts a private Dovecot with N users (INBOX and three other folders of a few messages
each), a private Postgres (or a throwaway database on --dsn), adds the N accounts,
runs `mailbridge serve` as a real process on the default schedule, waits until every
account is healthy, marks every folder reconciled (so the six-hourly reconciles of new
accounts do not fall into the window), lets it settle, then reads the process's CPU
(utime + stime from /proc/PID/stat) over the measuring window, with the IMAP commands
its actors sent meanwhile (the `commands` of `/actors`).  Once with NOTIFY (Dovecot's
mailbox list index on) and once without (IDLE on INBOX only).

Dovecot's "still here" line during IDLE comes every --idle-notify-interval seconds
(default 120, Dovecot's own default; the test suite's harness uses 2).

    .venv/bin/python bench/idle.py [-n 100] [--only notify|plain] [--settle 30] [--window 60]
        [--repo DIR] [--dsn postgresql://...] [--profile DIR]

--repo runs `serve` from another source tree (e.g. an export of an older commit) to
compare; --profile writes a cProfile of each `serve` (whole life) into DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mailbridge.aio.db import execute_once, with_database  # noqa: E402
from mailbridge.aio.loop import run as run_with_loop  # noqa: E402
from mailbridge.testing.dovecot import DovecotServer  # noqa: E402
from mailbridge.testing.imapctl import MailboxClient  # noqa: E402
from mailbridge.testing.mailgen import corpus  # noqa: E402

FOLDERS = ("INBOX", "Archive", "Lists", "Projects")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def _fetchval(dsn: str, sql: str, *args: object) -> object:
    from mailbridge.aio.db import close_connection, connect_once

    conn = await connect_once(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await close_connection(conn)


async def _add_accounts(dsn: str, key: str, port: int, users: list) -> None:
    from mailbridge.aio.db import Database
    from mailbridge.secrets import Cipher
    from mailbridge.store import accounts as account_store
    from mailbridge.store.accounts import NewAccount

    cipher = Cipher([key])
    async with Database.connect(dsn, max_size=2) as db:
        for user in users:
            new = NewAccount(email=f"{user.username}@example.test", imap_host="127.0.0.1", imap_port=port,
                             imap_tls="none", imap_username=user.username)
            await account_store.insert(db, new, cipher.encrypt(user.password), limit=len(users))


def actors(url: str) -> list[dict]:
    with urllib.request.urlopen(url + "/actors", timeout=10) as response:
        body = json.load(response)
    return body["actors"] if isinstance(body, dict) else body


def measure(label: str, list_index: bool, args: argparse.Namespace, base: Path, dsn_base: str) -> dict:
    n = args.accounts
    server = DovecotServer(base / label, list_index=list_index, idle_notify_interval=args.idle_notify_interval,
                           extra_conf="service imap {\n  process_limit = 4096\n}\n")
    server.start()
    name = f"mb_idle_{secrets.token_hex(4)}"
    serve = None
    try:
        users = [server.add_user() for _ in range(n)]
        for user in users:
            with MailboxClient(server, user) as client:
                for folder in FOLDERS:
                    if folder != "INBOX":
                        client.create(folder)
                    client.append_many(folder, list(corpus(args.messages, seed=len(folder))))
        run_with_loop(execute_once, dsn_base, f'CREATE DATABASE "{name}"')
        dsn = with_database(dsn_base, name)
        from cryptography.fernet import Fernet

        key = Fernet.generate_key().decode()
        home = base / f"home-{label}"
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("MAILBRIDGE_")},
               "DATABASE_URL": dsn, "MAILBRIDGE_ENCRYPTION_KEY": key, "MAILBRIDGE_HOME": str(home),
               "MAILBRIDGE_MAX_ACCOUNTS": str(n), "MAILBRIDGE_LOG_LEVEL": "warning",
               "PYTHONPATH": str(args.repo)}
        subprocess.run([sys.executable, "-m", "mailbridge", "migrate"], env=env, check=True, cwd=args.repo,
                       capture_output=True)
        run_with_loop(_add_accounts, dsn, key, server.port, users)
        command = [sys.executable]
        if args.profile:
            command += ["-m", "cProfile", "-o", str(Path(args.profile) / f"serve-{label}.prof")]
        command += ["-m", "mailbridge", "serve", "--bind", "127.0.0.1:0"]
        log = open(base / f"serve-{label}.log", "w+")
        serve = subprocess.Popen(command, env=env, cwd=args.repo, stdout=log, stderr=subprocess.STDOUT, text=True)
        url = None
        start = time.monotonic()
        while url is None:
            if time.monotonic() - start > 120 or serve.poll() is not None:
                raise SystemExit(f"serve did not start: {(base / f'serve-{label}.log').read_text()[-2000:]}")
            time.sleep(0.2)
            for line in (base / f"serve-{label}.log").read_text().splitlines():
                if "listening on " in line:
                    url = line.split("listening on ", 1)[1].split()[0]
        healthy_sql = "SELECT count(*) FROM accounts WHERE health = 'healthy'"
        while run_with_loop(_fetchval, dsn, healthy_sql) != n:
            if time.monotonic() - start > args.timeout:
                raise SystemExit(f"only {run_with_loop(_fetchval, dsn, healthy_sql)} of {n} accounts healthy "
                                 f"after {args.timeout:g} s")
            time.sleep(0.5)
        healthy_after = time.monotonic() - start
        run_with_loop(execute_once, dsn, "UPDATE folders SET last_reconcile_at = now()")
        time.sleep(args.settle)
        before_cmds = sum(a["commands"] for a in actors(url))
        before_cpu, t0 = cpu_seconds(serve.pid), time.monotonic()
        time.sleep(args.window)
        cpu, took = cpu_seconds(serve.pid) - before_cpu, time.monotonic() - t0
        snapshot = actors(url)
        commands = sum(a["commands"] for a in snapshot) - before_cmds
        states: dict[str, int] = {}
        for a in snapshot:
            states[a["state"]] = states.get(a["state"], 0) + 1
        steps = {a["step"] for a in snapshot if a["state"] == "idle"}
        return {"label": label, "accounts": n, "healthy_after_s": healthy_after, "cpu_s": cpu, "window_s": took,
                "core_pct_per_100": 100 * cpu / took * 100 / n, "commands_per_min": commands * 60 / took,
                "states": states, "idle_steps": sorted(steps)[:3],
                "rss_mb": int(Path(f"/proc/{serve.pid}/status").read_text().split("VmRSS:")[1].split()[0]) / 1024}
    finally:
        if serve is not None:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(30)
            except subprocess.TimeoutExpired:
                serve.kill()
        server.stop()
        try:
            run_with_loop(execute_once, dsn_base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception:  # noqa: BLE001 - the private server goes away anyway
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--accounts", type=int, default=100)
    parser.add_argument("--messages", type=int, default=5, help="messages per folder (default 5)")
    parser.add_argument("--only", choices=("notify", "plain"))
    parser.add_argument("--settle", type=float, default=30.0, help="seconds after all are healthy (default 30)")
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured (default 60)")
    parser.add_argument("--timeout", type=float, default=300.0, help="most seconds until every account is healthy")
    parser.add_argument("--idle-notify-interval", type=float, default=120.0)
    parser.add_argument("--repo", type=Path, default=REPO, help="source tree `serve` runs from (default this one)")
    parser.add_argument("--dsn", help="a Postgres server for a throwaway database (default: a private one)")
    parser.add_argument("--profile", help="directory for a cProfile of each serve")
    args = parser.parse_args()
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="mbidle-"))
    results = []
    try:
        with ExitStack() as stack:
            dsn = args.dsn
            if not dsn:
                from mailbridge.testing.postgres import running_postgres

                dsn = stack.enter_context(running_postgres(base / "pg", max_connections=2 * args.accounts + 60))
            for label, list_index in (("notify", True), ("plain", False)):
                if args.only in (None, label):
                    results.append(measure(label, list_index, args, base, dsn))
                    print(json.dumps(results[-1]), flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"\nserve from {args.repo}; Dovecot imap_idle_notify_interval={args.idle_notify_interval:g} s; "
          f"CPU over {args.window:g} s, {args.settle:g} s after every account was healthy")
    print(f"{'server':<8} {'accounts':>8} {'% core/100 acc':>15} {'IMAP cmds/min':>14} {'RSS MB':>7}")
    for r in results:
        print(f"{r['label']:<8} {r['accounts']:>8} {r['core_pct_per_100']:>15.2f} {r['commands_per_min']:>14.1f} "
              f"{r['rss_mb']:>7.0f}")


if __name__ == "__main__":
    main()

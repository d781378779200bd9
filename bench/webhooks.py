"""Benchmark: webhook delivery by a real `mailbridge serve` to a local receiver.

Starts a private Dovecot and a throwaway database, adds an account and a webhook whose
receiver is a local HTTP server (`tests.support.receivers`, one thread per request,
HTTP/1.0), runs `serve` as a real process and measures:

- throughput: N events written in one transaction (`message_added` of messages no
  longer mirrored, so each still costs the message look-up), delivered one POST each:
  events per second from the first delivery to the last;
- delay: K new messages appended to INBOX one at a time by another IMAP client; for
  each the time from the APPEND's answer to the receiver's request, p50/p99.

    .venv/bin/python bench/webhooks.py [--events 5000] [--changes 40] [--dsn postgresql://...]
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from mailbridge.aio.db import execute_once, with_database  # noqa: E402
from mailbridge.aio.loop import run as run_with_loop  # noqa: E402
from mailbridge.testing.dovecot import DovecotServer  # noqa: E402
from mailbridge.testing.imapctl import MailboxClient  # noqa: E402
from mailbridge.testing.mailgen import corpus, make_message  # noqa: E402
from tests.support.receivers import Receiver  # noqa: E402

from freshness import query  # noqa: E402  (one short-lived connection per query)

SECRET = "bench-webhook-secret"


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.005)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000, help="events for the throughput run")
    parser.add_argument("--changes", type=int, default=40, help="new messages for the delay run")
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL_TEST"),
                        help="a Postgres server to create a throwaway database on (default DATABASE_URL_TEST)")
    args = parser.parse_args()
    if not args.dsn:
        raise SystemExit("give --dsn or set DATABASE_URL_TEST")
    base = Path(tempfile.mkdtemp(prefix="mbhook-"))
    server = DovecotServer(base / "dovecot")
    server.start()
    name = f"mb_hook_{secrets.token_hex(4)}"
    run_with_loop(execute_once, args.dsn, f'CREATE DATABASE "{name}"')
    dsn = with_database(args.dsn, name)
    from cryptography.fernet import Fernet

    env = {**{k: v for k, v in os.environ.items() if k != "DATABASE_URL"}, "DATABASE_URL": dsn,
           "MAILBRIDGE_ENCRYPTION_KEY": Fernet.generate_key().decode(), "MAILBRIDGE_HOME": str(base / "home"),
           "MAILBRIDGE_LOG_LEVEL": "warning"}
    serve = None
    try:
        user = server.add_user()
        with MailboxClient(server, user) as client:
            client.append_many("INBOX", list(corpus(50, seed=1)))

        def cli(*argv: str, stdin: str | None = None) -> str:
            done = subprocess.run([sys.executable, "-m", "mailbridge", *argv], env=env, input=stdin, text=True,
                                  check=True, cwd=REPO, capture_output=True)
            return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""

        cli("migrate")
        cli("accounts", "add", "--email", "bench@example.test", "--host", "127.0.0.1", "--port", str(server.port),
            "--tls", "none", "--username", user.username, "--password-stdin", stdin=user.password + "\n")
        cli("sync", "--once")
        with Receiver(SECRET) as receiver:
            cli("webhooks", "add", receiver.url, "--events", "message_added", "--secret-stdin", stdin=SECRET + "\n")
            serve = subprocess.Popen([sys.executable, "-m", "mailbridge", "serve", "--bind", "127.0.0.1:0"], env=env,
                                     cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(3)
            # throughput
            run_with_loop(query, dsn, """INSERT INTO events (account_id, kind, payload)
                                         SELECT 1, 'message_added', jsonb_build_object('message', -g, 'uid', g)
                                         FROM generate_series(1, $1) g""", args.events)
            wait(lambda: len(receiver.delivered) >= args.events, 600, "the throughput run")
            first, last = receiver.delivered[0].at, receiver.delivered[args.events - 1].at
            rate = (args.events - 1) / (last - first) if last > first else float("inf")
            # delay from a change on the server to the receiver
            delays, written = [], []
            rng = random.Random(5)
            with MailboxClient(server, user) as client:
                for i in range(args.changes):
                    before = len(receiver.delivered)
                    client.append("INBOX", make_message(100_000 + i, rng=rng))
                    appended, wall = time.monotonic(), time.time()
                    wait(lambda b=before: len(receiver.delivered) > b, 60, "a new message's event")
                    delays.append(receiver.delivered[before].at - appended)
                    created = datetime.fromisoformat(receiver.delivered[before].body["created_at"]).timestamp()
                    written.append(created - wall)
                    time.sleep(0.3)
            assert receiver.invalid == 0
    finally:
        if serve is not None:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(15)
            except subprocess.TimeoutExpired:
                serve.kill()
        server.stop()
        run_with_loop(execute_once, args.dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(base, ignore_errors=True)
    print(f"throughput: {args.events} events delivered in {last - first:.2f} s: {rate:.0f} events/s "
          "(one signed POST each; the 2xx answers recorded at least every 0.2 s)")
    print(f"delay from APPEND to the receiver over {len(delays)} new messages: p50 {statistics.median(delays):.3f} s, "
          f"p99 {percentile(delays, 99):.3f} s, max {max(delays):.3f} s")
    print(f"  of which until the sync's transaction wrote the event (events.created_at): "
          f"p50 {statistics.median(written):.3f} s, p99 {percentile(written, 99):.3f} s")


if __name__ == "__main__":
    main()

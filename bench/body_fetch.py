"""Benchmark: body fetches through the owning actor while it runs a big initial sync.

Starts a private Dovecot, writes N generated messages into INBOX of a fresh user
(Maildir, as bench/initial_sync.py does; optionally a second folder), warms Dovecot's
index, then for each run: creates a throwaway database (on --dsn / DATABASE_URL_TEST,
else an embedded Postgres in a temp dir), migrates it, starts `mailbridge serve --bind
127.0.0.1:0` as a subprocess with a generated API token, adds the account with
POST /accounts, and follows the initial sync in GET /actors.

A "fetch" run fires GET /messages/{id}/body (every second one with ?raw=1) at a steady
--rate from a thread pool, for random messages already mirrored (found by paging
GET /accounts/{id}/messages), from the moment the first batch is mirrored until the
initial sync completes (bounded by --max-seconds and --max-requests); a "quiet" run
fetches nothing.  It prints, per run and in a summary: the body fetches' count, p50,
p90, p99 and max latency (anything but a 200 counts as infinitely slow), the
503/504 and error counts, and the initial sync's msgs/s with and without the fetches.

    .venv/bin/python bench/body_fetch.py -n 20000 [--rate 5] [--runs 2] [--second-folder 2000]

Only loopback: Dovecot, Postgres (unless --dsn says otherwise) and the API.
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from initial_sync import bare_fetch, bench_servers, fill_mailbox  # noqa: E402

from mailbridge.aio.db import execute_once, with_database  # noqa: E402
from mailbridge.aio.loop import run as run_with_loop  # noqa: E402
from tests.e2e.serve_support import (  # noqa: E402
    BodyLoad,
    MessagePool,
    ServeApi,
    Summary,
    account_body,
    folder_progress,
    format_summary,
    serve_env,
    summarize,
)

SECOND = "Archive"


@dataclass
class RunResult:
    mode: str                      # "quiet" or "fetch"
    expected: dict[str, int]
    completed: bool = False
    seconds: float = math.nan      # POST /accounts answered → every folder's initial sync done
    initial_seconds: float = math.nan  # first batch mirrored → done (the initial phase alone)
    first_synced: int = 0          # rows mirrored at the first observation with any
    synced: int = 0                # rows mirrored at the end (or at the deadline)
    summary: Summary | None = None
    pool_errors: list[str] = field(default_factory=list)
    throttle_waits: int | None = None
    commands: int | None = None

    @property
    def total(self) -> int:
        return sum(self.expected.values())

    @property
    def rate(self) -> float:
        return self.total / self.seconds if self.completed else self.synced / self.seconds

    @property
    def initial_rate(self) -> float:
        return (self.total - self.first_synced) / self.initial_seconds if self.completed else math.nan


def follow_sync(api: ServeApi, account_id: int, expected: dict[str, int], added: float, deadline: float,
                result: RunResult) -> None:
    """Poll /actors until every folder has mirrored its messages (or the deadline)."""
    first_at = None
    while time.monotonic() < deadline:
        actor = api.actor(account_id)
        synced = {name: (folder_progress(actor, name) or {}).get("synced", 0) for name in expected}
        now = time.monotonic()
        result.synced = sum(synced.values())
        if actor is not None:
            result.throttle_waits, result.commands = actor.get("throttle_waits"), actor.get("commands")
        if first_at is None and result.synced > 0:
            first_at, result.first_synced = now, result.synced
        if all(synced[name] >= n for name, n in expected.items()):
            result.completed = True
            result.seconds = now - added
            result.initial_seconds = now - (first_at or added)
            return
        if api.serve is not None and api.serve.proc.poll() is not None:
            raise RuntimeError(f"mailbridge serve exited: {api.output[-3000:]}")
        time.sleep(0.1)
    result.seconds = time.monotonic() - added


def one_run(mode: str, server_dsn: str, dovecot, user, expected: dict[str, int], args, workdir: Path) -> RunResult:
    from mailbridge.secrets import generate_key
    from mailbridge.store.migrations import migrate

    name = f"mb_bench_body_{secrets.token_hex(4)}"
    run_with_loop(execute_once, server_dsn, f'CREATE DATABASE "{name}"')
    dsn = with_database(server_dsn, name)
    result = RunResult(mode, expected)
    try:
        run_with_loop(migrate, dsn)
        extra = {}
        if args.batch_size:
            extra["MAILBRIDGE_BATCH_SIZE"] = str(args.batch_size)
        if args.commands_per_minute:
            extra["MAILBRIDGE_COMMANDS_PER_MINUTE"] = str(args.commands_per_minute)
        home = workdir / f"home-{name}"
        env = serve_env(dsn, generate_key(), str(home), token=secrets.token_hex(16), **extra)
        with ServeApi(env) as api:
            created = api.ok("POST", "/accounts", 201, json=account_body(dovecot, user))
            added = time.monotonic()
            deadline = added + args.max_seconds
            pool = load = None
            if mode == "fetch":
                pool = MessagePool(api.http, created["id"], interval=1.0).start()
                load = BodyLoad(api.http, pool, rate=args.rate, raw_every=2, timeout=args.timeout,
                                max_requests=args.max_requests, max_seconds=args.max_seconds).start()
            try:
                follow_sync(api, created["id"], expected, added, deadline, result)
            finally:
                if load is not None:
                    result.summary = summarize(load.stop())
                if pool is not None:
                    pool.stop()
                    result.pool_errors = pool.errors[:3]
    finally:
        if not args.keep:
            run_with_loop(execute_once, server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return result


def describe(i: int, r: RunResult) -> str:
    head = (f"run {i} ({r.mode}): " + (
        f"initial sync of {r.total} in {r.seconds:.2f} s = {r.rate:,.0f} msgs/s from POST /accounts "
        f"(initial phase {r.initial_rate:,.0f} msgs/s)" if r.completed else
        f"initial sync NOT complete after {r.seconds:.0f} s: {r.synced}/{r.total} mirrored "
        f"({r.rate:,.0f} msgs/s)") + f"; IMAP commands {r.commands}, throttle waits {r.throttle_waits}")
    if r.summary is not None:
        head += "\n  " + format_summary(r.summary)
    if r.pool_errors:
        head += f"\n  listing errors: {r.pool_errors}"
    return head


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--messages", type=int, default=20_000, help="messages in INBOX (default 20000)")
    parser.add_argument("--second-folder", type=int, default=0, metavar="N",
                        help=f"also N messages in {SECOND!r} (default 0: INBOX only)")
    parser.add_argument("--rate", type=float, default=5.0, help="body fetches per second (default 5)")
    parser.add_argument("--runs", type=int, default=1,
                        help="pairs of runs, a quiet one and one with fetches, alternating (default 1)")
    parser.add_argument("--only", choices=("quiet", "fetch"), help="run only this kind")
    parser.add_argument("--batch-size", type=int, help="MAILBRIDGE_BATCH_SIZE for serve (default: its default)")
    parser.add_argument("--commands-per-minute", type=int,
                        help="MAILBRIDGE_COMMANDS_PER_MINUTE for serve (default: its default, 200)")
    parser.add_argument("--timeout", type=float, default=30.0, help="client timeout per request (default 30 s)")
    parser.add_argument("--max-seconds", type=float, default=180.0,
                        help="give up on a run's initial sync after this long (default 180)")
    parser.add_argument("--max-requests", type=int, default=3000, help="body fetches per run at most (default 3000)")
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL_TEST") or None,
                        help="Postgres server DSN for the throwaway databases (default DATABASE_URL_TEST; "
                             "unset: an embedded Postgres in a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the databases and the work directory")
    args = parser.parse_args(argv)

    from mailbridge.testing.mailgen import MaildirWriter, corpus

    results: list[RunResult] = []
    with bench_servers(args.dsn, keep=args.keep, prefix="mb-bench-body-") as (workdir, dovecot, server_dsn):
        t = time.perf_counter()
        user = fill_mailbox(dovecot, args.messages)
        expected = {"INBOX": args.messages}
        if args.second_folder:
            MaildirWriter().write(user, SECOND, corpus(args.second_folder, seed=8, folder_hint=SECOND))
            expected[SECOND] = args.second_folder
        print(f"filled {expected} in {time.perf_counter() - t:.1f} s", flush=True)
        for folder in expected:  # build Dovecot's index first, so that every run sees it warm
            count, _, _ = bare_fetch(dovecot.host, dovecot.port, user.username, user.password, folder)
            if count != expected[folder]:
                print(f"warning: {folder} has {count} messages on the server, not {expected[folder]}",
                      file=sys.stderr)

        modes = [args.only] if args.only else ["quiet", "fetch"]
        for i in range(args.runs):
            for mode in (modes if i % 2 == 0 else modes[::-1]):
                r = one_run(mode, server_dsn, dovecot, user, expected, args, workdir)
                results.append(r)
                print(describe(len(results), r), flush=True)

        def rates(mode: str) -> str:
            done = [r for r in results if r.mode == mode]
            if not done:
                return "not run"
            if not all(r.completed for r in done):
                return "; ".join(f"{r.rate:,.0f} msgs/s" + ("" if r.completed else " (INCOMPLETE)") for r in done)
            best = max(done, key=lambda r: r.rate)
            return (f"best {best.rate:,.0f} msgs/s (initial phase {best.initial_rate:,.0f}), "
                    f"all {', '.join(f'{r.rate:,.0f}' for r in done)}")

        print(f"SUMMARY N={expected} rate={args.rate:g}/s batch={args.batch_size or 'default'} "
              f"commands/min={args.commands_per_minute or 'default'}:\n"
              f"  initial sync without fetches: {rates('quiet')}\n"
              f"  initial sync with fetches:    {rates('fetch')}", flush=True)
        for r in results:
            if r.summary is not None:
                print(f"  fetches: {format_summary(r.summary)}", flush=True)
        ok = all(r.completed for r in results) and all(r.summary is None or r.summary.bad == 0 for r in results)
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

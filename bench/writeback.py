"""Benchmark: flag writes through the owning actor while it runs a big initial sync.

As bench/body_fetch.py (whose servers, runs and sync follow-up it reuses): a private
Dovecot with N generated messages in INBOX, per run a throwaway database and
`mailbridge serve` as a subprocess, the account added with POST /accounts.  From the
moment the first batch is mirrored until the initial sync completes it fires
POST /messages/{id}/flags at a steady --rate (open loop, from a thread pool) for random
mirrored messages, alternately adding and removing a keyword and \\Flagged, and checks
each answer shows the change.  After the sync it keeps writing for --after seconds
(the actor idle in IDLE) at --after-rate, measured apart.  It prints p50/p90/p99/max of both phases
(anything but a 200 with the change counts as infinitely slow) and the sync's rate.

    .venv/bin/python bench/writeback.py -n 20000 [--rate 10] [--runs 3] [--after 10] [--after-rate 0.5]

Only loopback: Dovecot, Postgres (unless --dsn says otherwise) and the API.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import secrets
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from body_fetch import RunResult, follow_sync  # noqa: E402
from initial_sync import bare_fetch, bench_servers, fill_mailbox  # noqa: E402

from mailbridge.aio.db import execute_once, with_database  # noqa: E402
from mailbridge.aio.loop import run as run_with_loop  # noqa: E402
from tests.e2e.serve_support import (  # noqa: E402
    BodyLoad,
    MessagePool,
    Sample,
    ServeApi,
    Summary,
    account_body,
    format_summary,
    serve_env,
    summarize,
)

CHANGES = ((("add",), "$Bench"), (("remove",), "$Bench"), (("add",), "\\Flagged"), (("remove",), "\\Flagged"))


class FlagLoad(BodyLoad):
    """BodyLoad's steady open-loop schedule, each request a flag write checked in its answer."""

    _turn = itertools.count()

    def _one(self, message_id: int, size: int | None, raw: bool, due: float) -> Sample:
        (op,), flag = CHANGES[next(self._turn) % len(CHANGES)]
        started = time.monotonic()
        sample = Sample(message_id, False, due, started, 0.0)
        try:
            reply = self.http.request_sync("POST", f"/messages/{message_id}/flags", json={op: [flag]},
                                           timeout=self.timeout)
        except OSError as exc:
            sample.seconds = time.monotonic() - started
            sample.error = f"{type(exc).__name__}: {exc}"
            return sample
        sample.seconds = time.monotonic() - started
        sample.status = reply.status
        sample.retry_after = reply.headers.get("retry-after")
        if reply.status == 200:
            try:
                flags = reply.json()["flags"]
                sample.size_ok = (flag in flags) == (op == "add")
            except (ValueError, KeyError, TypeError):
                sample.size_ok = False
        else:
            try:
                sample.code = reply.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                sample.code = None
        return sample


def describe_summary(what: str, s: Summary | None) -> str:
    if s is None:
        return f"{what}: none"
    return f"{what}: " + format_summary(s).replace("body fetches", "flag writes").replace(
        "wrong content", "change not shown")


def one_run(server_dsn: str, dovecot, user, expected: dict[str, int], args,
            workdir: Path) -> tuple[RunResult, Summary | None, list[Sample]]:
    from mailbridge.secrets import generate_key
    from mailbridge.store.migrations import migrate

    name = f"mb_bench_wb_{secrets.token_hex(4)}"
    run_with_loop(execute_once, server_dsn, f'CREATE DATABASE "{name}"')
    dsn = with_database(server_dsn, name)
    result = RunResult("flags", expected)
    after: Summary | None = None
    samples: list[Sample] = []
    try:
        run_with_loop(migrate, dsn)
        extra = {}
        if args.batch_size:
            extra["MAILBRIDGE_BATCH_SIZE"] = str(args.batch_size)
        if args.commands_per_minute:
            extra["MAILBRIDGE_COMMANDS_PER_MINUTE"] = str(args.commands_per_minute)
        env = serve_env(dsn, generate_key(), str(workdir / f"home-{name}"), token=secrets.token_hex(16), **extra)
        with ServeApi(env) as api:
            created = api.ok("POST", "/accounts", 201, json=account_body(dovecot, user))
            added = time.monotonic()
            pool = MessagePool(api.http, created["id"], interval=0.2).start()
            load = FlagLoad(api.http, pool, rate=args.rate, timeout=args.timeout, max_requests=args.max_requests,
                            max_seconds=args.max_seconds).start()
            try:
                follow_sync(api, created["id"], expected, added, added + args.max_seconds, result)
            finally:
                samples = load.stop()
                result.summary = summarize(samples)
            if args.after > 0 and result.completed:
                idle = FlagLoad(api.http, pool, rate=args.after_rate, timeout=args.timeout,
                                max_requests=int(args.after_rate * args.after) + 1, max_seconds=args.after).start()
                time.sleep(args.after)
                after = summarize(idle.stop())
            pool.stop()
    finally:
        if not args.keep:
            run_with_loop(execute_once, server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return result, after, samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--messages", type=int, default=20_000, help="messages in INBOX (default 20000)")
    parser.add_argument("--rate", type=float, default=10.0, help="flag writes per second (default 10)")
    parser.add_argument("--runs", type=int, default=3, help="runs, each a fresh database and serve (default 3)")
    parser.add_argument("--after", type=float, default=10.0,
                        help="seconds of writes after the initial sync, the actor idle (default 10; 0: none)")
    parser.add_argument("--after-rate", type=float, default=0.5,
                        help="flag writes per second after the sync (default 0.5: each costs IDLE, NOOP and "
                             "STORE, within the default throttle's 168 commands a minute sustained)")
    parser.add_argument("--batch-size", type=int, help="MAILBRIDGE_BATCH_SIZE for serve (default: its default)")
    parser.add_argument("--commands-per-minute", type=int,
                        help="MAILBRIDGE_COMMANDS_PER_MINUTE for serve (default: its default, 200)")
    parser.add_argument("--timeout", type=float, default=30.0, help="client timeout per request (default 30 s)")
    parser.add_argument("--max-seconds", type=float, default=180.0, help="give up on a run after this long")
    parser.add_argument("--max-requests", type=int, default=3000, help="writes per run at most (default 3000)")
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL_TEST") or None,
                        help="Postgres server DSN for the throwaway databases (default DATABASE_URL_TEST; "
                             "unset: an embedded Postgres in a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the databases and the work directory")
    args = parser.parse_args(argv)

    with bench_servers(args.dsn, keep=args.keep, prefix="mb-bench-wb-") as (workdir, dovecot, server_dsn):
        t = time.perf_counter()
        user = fill_mailbox(dovecot, args.messages)
        expected = {"INBOX": args.messages}
        print(f"filled {expected} in {time.perf_counter() - t:.1f} s", flush=True)
        count, _, _ = bare_fetch(dovecot.host, dovecot.port, user.username, user.password, "INBOX")
        if count != args.messages:
            print(f"warning: INBOX has {count} messages on the server, not {args.messages}", file=sys.stderr)
        ok = True
        summaries: list[tuple[Summary | None, Summary | None]] = []
        pooled: list[Sample] = []
        for i in range(args.runs):
            result, after, samples = one_run(server_dsn, dovecot, user, expected, args, workdir)
            pooled.extend(samples)
            summaries.append((result.summary, after))
            ok = ok and result.completed
            print(f"run {i + 1}: initial sync of {result.total} " + (
                f"in {result.seconds:.2f} s ({result.rate:,.0f} msgs/s)" if result.completed else
                f"NOT complete: {result.synced} mirrored") +
                f"; IMAP commands {result.commands}, throttle waits {result.throttle_waits}\n  " +
                describe_summary("during the initial sync", result.summary) + "\n  " +
                describe_summary("after it (idle)", after), flush=True)
        for s, a in summaries:
            for x in (s, a):
                ok = ok and (x is None or (x.bad == 0 and x.wrong_content == 0))
        worst = max((s.p99 for s, _ in summaries if s is not None and s.count), default=math.nan)
        print(f"SUMMARY N={args.messages} rate={args.rate:g}/s runs={args.runs} "
              f"commands/min={args.commands_per_minute or 'default'}: worst run's p99 {worst * 1000:.0f} ms; "
              + describe_summary("all runs' writes during the initial sync", summarize(pooled)), flush=True)
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: mailbridge's initial sync of one big folder, end to end, in-process.

Starts a private Dovecot, writes N generated messages into INBOX of a fresh user (Maildir,
no APPEND, from a child process so that this one's peak RSS is the sync's), creates a throwaway database (on --dsn / DATABASE_URL_TEST, else an embedded
Postgres in a temp dir), migrates it, adds the account, then runs the same code path as
`mailbridge sync --once` (`AccountActor.run_once`, throttle out of the way).

It prints N, seconds and msgs/s (whole `run_once`, and the initial-sync phase
alone), the time to build the search documents afterwards (`serve`'s indexer does that
beside the sync), the process's peak RSS (``ru_maxrss``) and the RSS sampled from /proc/self/status
during the run, and, as the baseline, the time of a bare-socket ``UID FETCH 1:*`` of the
same mailbox with the same items (after one untimed pass to warm Dovecot's index).

    .venv/bin/python bench/initial_sync.py -n 50000 [--repeat 3] [--batch-size 1000]
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import trio  # noqa: E402

from mailbridge.aio.db import execute_once, with_database  # noqa: E402
from mailbridge.aio.loop import run as run_with_loop  # noqa: E402
from mailbridge.sync.folder import META_ITEMS  # noqa: E402

BARE_FETCH = f"UID FETCH 1:* {META_ITEMS}"


# --- memory ----------------------------------------------------------------------------


def rss_kb() -> int:
    """Current resident set size in KiB (VmRSS)."""
    with open("/proc/self/status", "rb") as fh:
        for line in fh:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1])
    return 0


def peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


class RssSampler:
    """Samples VmRSS every `interval` seconds inside trio while a block runs."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.samples: list[tuple[float, int]] = []

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self.samples.append((time.perf_counter(), rss_kb()))
            await trio.sleep(self.interval)

    def peak(self, since: float = 0.0, until: float = float("inf")) -> int:
        values = [kb for t, kb in self.samples if since <= t <= until]
        return max(values, default=0)


# --- the bare-socket baseline ----------------------------------------------------------


def bare_fetch(host: str, port: int, username: str, password: str, mailbox: str = "INBOX") -> tuple[int, int, float]:
    """LOGIN, SELECT, one metadata UID FETCH 1:* read with a minimal literal-aware reader.

    Returns (FETCH responses, bytes received for the FETCH, seconds for the FETCH).
    """
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray()

    def read_until_tagged(tag: bytes) -> tuple[int, int]:
        """Read responses until the tagged completion of `tag`; (untagged FETCHes, bytes)."""
        nonlocal buf
        total = fetches = 0
        pos = 0
        skip = 0  # literal bytes still to skip
        while True:
            if skip:
                avail = len(buf) - pos
                if avail >= skip:
                    pos += skip
                    skip = 0
                else:
                    skip -= avail
                    pos = len(buf)
            if not skip:
                eol = buf.find(b"\r\n", pos)
                if eol >= 0:
                    line = bytes(buf[pos:eol])
                    pos = eol + 2
                    if line.endswith(b"}"):
                        lb = line.rfind(b"{")
                        skip = int(line[lb + 1:-1].rstrip(b"+"))
                    if line.startswith(b"* ") and b" FETCH " in line[:24]:
                        fetches += 1
                    elif line.startswith(tag + b" "):
                        if not line.startswith(tag + b" OK"):
                            raise RuntimeError(f"bare fetch: {line!r}")
                        del buf[:pos]
                        return fetches, total
                    continue
            # need more data: drop what was consumed, then read
            del buf[:pos]
            pos = 0
            chunk = sock.recv(1 << 18)
            if not chunk:
                raise RuntimeError("bare fetch: connection closed")
            total += len(chunk)
            buf += chunk

    def command(tag: bytes, text: str) -> tuple[int, int]:
        sock.sendall(tag + b" " + text.encode() + b"\r\n")
        return read_until_tagged(tag)

    try:
        # greeting
        while b"\r\n" not in buf:
            buf += sock.recv(4096)
        del buf[: buf.index(b"\r\n") + 2]
        command(b"a1", f'LOGIN "{username}" "{password}"')
        command(b"a2", f'SELECT "{mailbox}"')
        start = time.perf_counter()
        fetches, nbytes = command(b"a3", BARE_FETCH)
        seconds = time.perf_counter() - start
        command(b"a4", "LOGOUT")
    finally:
        sock.close()
    return fetches, nbytes, seconds


# --- databases -------------------------------------------------------------------------


# --- one timed sync --------------------------------------------------------------------


async def timed_sync(server_dsn: str, dovecot, user, args) -> dict:
    from actors.indexer import drain
    from mailbridge.aio.db import Database
    from mailbridge.config import Settings
    from mailbridge.imap.throttle import Throttle
    from mailbridge.secrets import Cipher, generate_key
    from mailbridge.store import accounts as account_store
    from mailbridge.store.accounts import NewAccount
    from mailbridge.store.migrations import migrate
    from actors.account import AccountActor, ActorDeps
    from actors.registry import Registry

    name = f"mb_bench_{secrets.token_hex(4)}"
    await execute_once(server_dsn, f'CREATE DATABASE "{name}"')
    dsn = with_database(server_dsn, name)
    result: dict = {"database": name}
    try:
        await migrate(dsn)
        key = generate_key()
        settings = Settings(database_url=dsn, home=Path(tempfile.gettempdir()), encryption_keys=(key,),
                            api_token=None, port=None, batch_size=args.batch_size,
                            commands_per_minute=1_000_000)
        new = NewAccount(email=f"{user.username}@example.test", imap_host=dovecot.host,
                         imap_port=dovecot.port, imap_tls="none", imap_username=user.username,
                         verify_certificate=False)
        async with Database.connect(dsn, max_size=4) as db:
            account_id = await account_store.insert(db, new, Cipher((key,)).encrypt(user.password),
                                                    limit=settings.max_accounts)
            account = await account_store.get(db, account_id)
            sampler = RssSampler()
            marks: dict[str, float] = {}
            batches = 0

            def on_step(step) -> None:
                nonlocal batches
                now = time.perf_counter()
                marks.setdefault(f"first_{step.phase}", now)
                marks[f"last_{step.phase}"] = now
                if step.phase == "initial":
                    batches += 1

            async with trio.open_nursery() as nursery:
                await nursery.start(sampler.run)
                rss_before = rss_kb()
                cpu_start = time.process_time()
                start = time.perf_counter()
                # the path `sync --once` runs: the actor's lock, login and one complete cycle
                deps = ActorDeps(db=db, settings=settings, registry=Registry(), owner="bench")
                once = await AccountActor(account, deps, throttle=Throttle(settings.commands_per_minute),
                                          on_step=on_step).run_once()
                assert once.outcome is not None, once.problem
                totals = once.outcome.totals
                end = time.perf_counter()
                cpu = time.process_time() - cpu_start
                nursery.cancel_scope.cancel()
            stored = await db.fetchval("SELECT count(*) FROM messages WHERE account_id = $1", account_id)
            # the search documents, built after the sync as `serve`'s indexer and `sync --once` do
            index_start = time.perf_counter()
            indexed = await drain(db)
            index_seconds = time.perf_counter() - index_start
        initial_start = marks.get("first_select", start)
        initial_end = marks.get("last_initial", end)
        result.update(
            seconds=end - start,
            cpu_seconds=cpu,
            initial_seconds=initial_end - initial_start,
            reconcile_seconds=(marks["last_reconcile"] - initial_end) if "last_reconcile" in marks else None,
            added=totals.added, defects=totals.defects, stored=int(stored), batches=batches,
            indexed=indexed, index_seconds=index_seconds,
            rss_before_kb=rss_before,
            rss_peak_initial_kb=sampler.peak(initial_start, initial_end),
            rss_peak_kb=sampler.peak(start, end),
            rss_after_kb=rss_kb(),
        )
    finally:
        if not args.keep:
            await execute_once(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return result


# --- main ------------------------------------------------------------------------------


def _write_mailbox(user, n: int) -> None:
    from mailbridge.testing.mailgen import MaildirWriter, corpus

    flags = ((), ("\\Seen",), ("\\Seen",), ("\\Seen", "\\Flagged"), ("\\Answered", "\\Seen"))
    MaildirWriter().write(user, "INBOX", corpus(n, seed=7, folder_hint="INBOX"),
                          flags_for=lambda i, _m: flags[i % len(flags)])


def fill_mailbox(dovecot, n: int) -> object:
    """A new user with n generated messages in INBOX, written by a child process so that
    this process's peak RSS (ru_maxrss) is the sync's alone."""
    import multiprocessing

    user = dovecot.add_user()
    child = multiprocessing.get_context("fork").Process(target=_write_mailbox, args=(user, n))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"writing the mailbox failed (exit code {child.exitcode})")
    return user


@contextmanager
def bench_servers(dsn: str | None, *, keep: bool, prefix: str) -> Iterator[tuple[Path, object, str]]:
    """(work directory, a started private Dovecot, a Postgres server DSN: `dsn`, else an
    embedded Postgres in the work directory).  On exit both are stopped and the work
    directory is removed (kept, and said so, with `keep`)."""
    from mailbridge.testing.dovecot import DovecotServer

    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    embedded = None
    dovecot = DovecotServer(workdir / "dovecot")
    try:
        dovecot.start()
        if not dsn:
            from mailbridge.embedded import start_embedded

            embedded = workdir / "pg"
            dsn = start_embedded(embedded, database="postgres")
        yield workdir, dovecot, dsn
    finally:
        dovecot.stop()
        if embedded is not None:
            try:
                import pgserver

                pgserver.get_server(embedded / "pgdata").cleanup()
            except Exception:  # noqa: BLE001 - best effort
                pass
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--messages", type=int, default=50_000, help="messages in INBOX (default 50000)")
    parser.add_argument("--batch-size", default=None,
                        help="UIDs per batch (default: MAILBRIDGE_BATCH_SIZE's default); "
                             "several, comma-separated, are each timed --repeat times")
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL_TEST") or None,
                        help="Postgres server DSN to create the throwaway database on "
                             "(default DATABASE_URL_TEST; unset: an embedded Postgres in a temp dir)")
    parser.add_argument("--repeat", type=int, default=1, help="timed syncs (each into a fresh database)")
    parser.add_argument("--keep", action="store_true", help="keep the databases and the Dovecot directory")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the (last) sync to FILE")
    args = parser.parse_args(argv)
    if args.batch_size is None:
        from mailbridge.config import Settings

        sizes = [Settings.__dataclass_fields__["batch_size"].default]
    else:
        sizes = [int(x) for x in str(args.batch_size).split(",")]

    with bench_servers(args.dsn, keep=args.keep, prefix="mb-bench-") as (_, dovecot, server_dsn):
        t = time.perf_counter()
        user = fill_mailbox(dovecot, args.messages)
        print(f"filled INBOX with {args.messages} messages in {time.perf_counter() - t:.1f} s", flush=True)

        t = time.perf_counter()
        count, _, _ = bare_fetch(dovecot.host, dovecot.port, user.username, user.password)
        print(f"warm-up bare fetch (index build): {count} messages in {time.perf_counter() - t:.2f} s", flush=True)
        count, nbytes, bare = bare_fetch(dovecot.host, dovecot.port, user.username, user.password)
        print(f"bare-socket UID FETCH 1:* : {count} messages, {nbytes / 1e6:.1f} MB in {bare:.3f} s", flush=True)
        if count != args.messages:
            print(f"warning: the server returned {count} messages, not {args.messages}", file=sys.stderr)

        for size in sizes:
            args.batch_size = size
            results = []
            for i in range(args.repeat):
                if args.profile and i == args.repeat - 1:
                    import cProfile

                    profiler = cProfile.Profile()
                    profiler.enable()
                    r = run_with_loop(timed_sync, server_dsn, dovecot, user, args)
                    profiler.disable()
                    profiler.dump_stats(args.profile)
                else:
                    r = run_with_loop(timed_sync, server_dsn, dovecot, user, args)
                results.append(r)
                n = args.messages
                print(
                    f"run {i + 1}: N={n} batch={args.batch_size} stored={r['stored']} batches={r['batches']} "
                    f"defects={r['defects']}\n"
                    f"  run_once {r['seconds']:.2f} s = {n / r['seconds']:,.0f} msgs/s; "
                    f"initial phase {r['initial_seconds']:.2f} s = {n / r['initial_seconds']:,.0f} msgs/s"
                    + (f"; reconcile {r['reconcile_seconds']:.2f} s" if r["reconcile_seconds"] is not None else "")
                    + f"; this process's CPU {r['cpu_seconds']:.2f} s ({r['cpu_seconds'] / n * 1e6:.0f} us/msg)"
                    + f"\n  search index built afterwards: {r['indexed']} documents in {r['index_seconds']:.2f} s"
                    + f"\n  ratio to bare socket: {r['seconds'] / bare:.1f}x (initial phase {r['initial_seconds'] / bare:.1f}x)\n"
                    f"  RSS MB: before {r['rss_before_kb'] / 1024:.0f}, peak during initial phase "
                    f"{r['rss_peak_initial_kb'] / 1024:.0f}, peak during sync {r['rss_peak_kb'] / 1024:.0f}, "
                    f"after {r['rss_after_kb'] / 1024:.0f}; ru_maxrss {peak_rss_kb() / 1024:.0f}",
                    flush=True,
                )
                if r["stored"] != n:
                    print(f"error: {r['stored']} rows stored, expected {n}", file=sys.stderr)
                    return 1
            best = min(results, key=lambda r: r["seconds"])
            rates = sorted(args.messages / r["seconds"] for r in results)
            print(
                f"SUMMARY N={args.messages} batch={args.batch_size}: best {best['seconds']:.2f} s "
                f"({args.messages / best['seconds']:,.0f} msgs/s end to end, "
                f"{args.messages / best['initial_seconds']:,.0f} msgs/s initial phase); "
                f"spread {rates[0]:,.0f}–{rates[-1]:,.0f} msgs/s over {len(results)} run(s); "
                f"bare socket {bare:.3f} s (ratio {best['seconds'] / bare:.1f}x); "
                f"peak RSS {max(r['rss_peak_kb'] for r in results) / 1024:.0f} MB sampled, "
                f"ru_maxrss {peak_rss_kb() / 1024:.0f} MB",
                flush=True,
            )
        return 0


if __name__ == "__main__":
    sys.exit(main())

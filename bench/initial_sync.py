"""Benchmark: `mailbridge sync --once` of one big folder, as a user runs it.

Starts a private Dovecot, writes N generated messages into INBOX of a fresh user (Maildir,
no APPEND, from a child process), warms Dovecot's index with one untimed bare-socket
``UID FETCH 1:*`` and times a second one (the baseline: same items, same mailbox, same
run).  Then, per timed run: a throwaway database (on --dsn / DATABASE_URL_TEST, else an
embedded Postgres in a temp dir), migrated, with the account added, and
``mailbridge sync --once`` run as a subprocess with the shipped settings.

Per run it prints the command's wall time (spawn to exit: interpreter start, imports,
discovery, the sync, the search index; the command returns only when every message is
searchable), the time until the rows were in (the command's own "N messages mirrored"
line on stdout: the search index may still be building then), the child's peak RSS and
CPU (``os.wait4``'s rusage), and checks afterwards that every message is in ``messages``
with its search document and nothing is left in ``search_pending``.  Ratios are to the
bare socket of the same run.

    .venv/bin/python bench/initial_sync.py -n 50000 [--repeat 3] [--set MAILBRIDGE_BATCH_SIZE=1000]
"""

from __future__ import annotations

import argparse
import os
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

from mailbridge.aio.db import execute_once, with_database  # noqa: E402
from mailbridge.aio.loop import run as run_with_loop  # noqa: E402
from mailbridge.sync.folder import META_ITEMS  # noqa: E402

BARE_FETCH = f"UID FETCH 1:* {META_ITEMS}"


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


# --- one timed `sync --once` ---------------------------------------------------------


def mailbridge_command() -> list[str]:
    """The `mailbridge` console script of this interpreter's environment (else -m)."""
    script = Path(sys.executable).with_name("mailbridge")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mailbridge"]


async def prepare_database(server_dsn: str, dovecot, user, key: str) -> tuple[str, str]:
    """A fresh migrated database holding the one account; (its name, its DSN)."""
    from mailbridge.aio.db import Database
    from mailbridge.secrets import Cipher
    from mailbridge.store import accounts as account_store
    from mailbridge.store.accounts import NewAccount
    from mailbridge.store.migrations import migrate

    name = f"mb_bench_{secrets.token_hex(4)}"
    await execute_once(server_dsn, f'CREATE DATABASE "{name}"')
    dsn = with_database(server_dsn, name)
    await migrate(dsn)
    new = NewAccount(email=f"{user.username}@example.test", imap_host=dovecot.host,
                     imap_port=dovecot.port, imap_tls="none", imap_username=user.username,
                     verify_certificate=False)
    async with Database.connect(dsn, max_size=1) as db:
        await account_store.insert(db, new, Cipher((key,)).encrypt(user.password), limit=1000)
    return name, dsn


async def check_database(dsn: str) -> dict:
    """What the run left: rows, documents, the queue."""
    from mailbridge.aio.db import Database

    async with Database.connect(dsn, max_size=1) as db:
        row = await db.fetchrow(
            "SELECT (SELECT count(*) FROM messages) AS stored, (SELECT count(*) FROM message_search) AS indexed, "
            "(SELECT count(*) FROM search_pending) AS pending")
    assert row is not None
    return {k: int(row[k]) for k in ("stored", "indexed", "pending")}


def children_cpu(pid: int | None) -> float | None:
    """CPU seconds of `pid`'s reaped children (cutime + cstime of /proc/pid/stat): the
    Postgres backends and Dovecot imap processes a run used, once they have exited; None
    where the process is not on this machine."""
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


async def postmaster_pid(dsn: str) -> int | None:
    """The pid of the postmaster serving `dsn`, when it runs on this machine."""
    from mailbridge.aio.db import Database

    async with Database.connect(dsn, max_size=1) as db:
        backend = int(await db.fetchval("SELECT pg_backend_pid()"))
        try:  # read while the backend lives
            return int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            return None


def run_sync_once(dsn: str, key: str, home: Path, extra_env: dict[str, str],
                  profile: str | None, wrap: list[str] = [], repo: Path = REPO) -> dict:
    """Spawn `mailbridge sync --once`, read its stdout with timestamps, reap it with
    wait4; wall seconds, the seconds until its "mirrored" line, peak RSS and CPU."""
    import subprocess
    import threading

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILBRIDGE_", "DATABASE_URL"))}
    # the code of the checkout this bench is in, whatever the environment has installed
    path = [str(repo), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env.update(DATABASE_URL=dsn, MAILBRIDGE_ENCRYPTION_KEY=key, MAILBRIDGE_HOME=str(home),
               PYTHONPATH=os.pathsep.join(path))
    env.update(extra_env)
    command = mailbridge_command()
    if profile and not wrap:
        command = [sys.executable, "-m", "cProfile", "-o", profile, "-m", "mailbridge"]
    command = [*wrap, *command, "sync", "--once"]
    lines: list[tuple[float, str]] = []
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def read(stream, into: list) -> None:
        for raw in stream:
            into.append((time.perf_counter() - start, raw.decode(errors="replace").rstrip()))

    errors: list[tuple[float, str]] = []
    readers = [threading.Thread(target=read, args=(child.stdout, lines)),
               threading.Thread(target=read, args=(child.stderr, errors))]
    for t in readers:
        t.start()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    for t in readers:
        t.join()
    rows_at = next((t for t, line in lines if "messages mirrored" in line), None)
    return dict(wall=wall, rows=rows_at, exit=child.returncode, rss_kb=usage.ru_maxrss,
                cpu=usage.ru_utime + usage.ru_stime, stdout=lines, stderr=errors)


def timed_run(server_dsn: str, dovecot, user, args, profile: str | None, repo: Path = REPO) -> dict:
    from mailbridge.secrets import generate_key

    key = generate_key()
    name, dsn = run_with_loop(prepare_database, server_dsn, dovecot, user, key)
    postmaster = run_with_loop(postmaster_pid, dsn)
    time.sleep(0.3)  # the preparing connections' backends are reaped
    before = children_cpu(postmaster), children_cpu(dovecot.master_pid)
    home = Path(tempfile.mkdtemp(prefix="mb-bench-home-"))
    try:
        result = run_sync_once(dsn, key, home, args.env, profile, args.wrap.split() if profile else [], repo)
        time.sleep(0.3)  # the run's backends and imap process are reaped
        after = children_cpu(postmaster), children_cpu(dovecot.master_pid)
        result.update(pg_cpu=None if None in (before[0], after[0]) else after[0] - before[0],
                      imap_cpu=None if None in (before[1], after[1]) else after[1] - before[1])
        result.update(run_with_loop(check_database, dsn))
    finally:
        shutil.rmtree(home, ignore_errors=True)
        if not args.keep:
            run_with_loop(execute_once, server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            print(f"kept database {name}")
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
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL_TEST") or None,
                        help="Postgres server DSN to create the throwaway databases on "
                             "(default DATABASE_URL_TEST; unset: an embedded Postgres in a temp dir)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs (each into a fresh database)")
    parser.add_argument("--set", action="append", default=[], metavar="VAR=VALUE",
                        help="an environment variable for `sync --once` (repeatable), e.g. "
                             "MAILBRIDGE_BATCH_SIZE=1000; by default it runs with the shipped settings")
    parser.add_argument("--keep", action="store_true", help="keep the databases and the Dovecot directory")
    parser.add_argument("--profile", metavar="FILE", help="run the last sync under cProfile, written to FILE")
    parser.add_argument("--wrap", default="", metavar="COMMAND",
                        help="with --profile: run the last sync under this command prefix instead of cProfile "
                             "(e.g. 'py-spy record --idle -f raw -o FILE --'); FILE is not used then")
    parser.add_argument("--against", metavar="DIR", type=Path,
                        help="another checkout (e.g. a `git worktree` of main): each repeat runs its code "
                             "too, alternating with this one's, and the summary compares the two")
    parser.add_argument("--show-output", action="store_true", help="print the command's output, timestamped")
    args = parser.parse_args(argv)
    args.env = dict(item.split("=", 1) for item in args.set)
    n = args.messages

    with bench_servers(args.dsn, keep=args.keep, prefix="mb-bench-") as (_, dovecot, server_dsn):
        t = time.perf_counter()
        user = fill_mailbox(dovecot, n)
        print(f"filled INBOX with {n} messages in {time.perf_counter() - t:.1f} s", flush=True)

        t = time.perf_counter()
        count, _, _ = bare_fetch(dovecot.host, dovecot.port, user.username, user.password)
        print(f"warm-up bare fetch (index build): {count} messages in {time.perf_counter() - t:.2f} s", flush=True)
        bares = []
        for _ in range(3):
            count, nbytes, seconds = bare_fetch(dovecot.host, dovecot.port, user.username, user.password)
            bares.append(seconds)
        bare = min(bares)
        print(f"bare-socket UID FETCH 1:* : {count} messages, {nbytes / 1e6:.1f} MB in {bare:.3f} s "
              f"(best of 3) = {n / bare:,.0f} msgs/s", flush=True)
        if count != n:
            print(f"warning: the server returned {count} messages, not {n}", file=sys.stderr)
        if args.env:
            print(f"environment: {' '.join(args.set)}")

        repos = [REPO] if args.against is None else [REPO, args.against.resolve()]
        by_repo: dict[Path, list[dict]] = {repo: [] for repo in repos}
        failed = False
        for i, repo in ((i, repo) for i in range(args.repeat) for repo in repos):
            profile = args.profile if args.profile and i == args.repeat - 1 and repo == REPO else None
            r = timed_run(server_dsn, dovecot, user, args, profile, repo)
            by_repo[repo].append(r)
            rows = r["rows"]
            print(
                (f"[{repo}] " if args.against else "") + f"run {i + 1}: N={n} exit={r['exit']} stored={r['stored']} indexed={r['indexed']} "
                f"pending={r['pending']}\n"
                f"  searchable (wall, spawn to exit) {r['wall']:.2f} s = {n / r['wall']:,.0f} msgs/s, "
                f"{r['wall'] / bare:.1f}x the bare socket\n"
                + (f"  rows in (its 'mirrored' line)    {rows:.2f} s = {n / rows:,.0f} msgs/s, "
                   f"{rows / bare:.1f}x the bare socket\n" if rows else "  rows: no 'mirrored' line\n")
                + f"  child CPU {r['cpu']:.2f} s ({r['cpu'] / n * 1e6:.0f} us/msg); peak RSS {r['rss_kb'] / 1024:.0f} MB"
                + "".join(f"; {label} CPU {r[key]:.2f} s ({r[key] / n * 1e6:.0f} us/msg)"
                          for label, key in (("Postgres", "pg_cpu"), ("Dovecot", "imap_cpu"))
                          if r[key] is not None),
                flush=True,
            )
            if args.show_output or r["exit"] != 0:
                for t_, line in r["stdout"] + r["stderr"]:
                    print(f"    {t_:7.3f} {line}")
            if r["exit"] != 0 or r["stored"] != n or r["indexed"] != n or r["pending"]:
                print(f"error: exit {r['exit']}, {r['stored']} rows, {r['indexed']} documents, "
                      f"{r['pending']} queued; expected {n}, {n}, 0", file=sys.stderr)
                failed = True
        for repo, results in by_repo.items():
            if args.against:
                print(f"[{repo}]", end=" ")
            walls = sorted(r["wall"] for r in results)
            rows_times = sorted(r["rows"] for r in results if r["rows"])
            print(
                f"SUMMARY N={n}: searchable best {walls[0]:.2f} s = {n / walls[0]:,.0f} msgs/s "
                f"(median {walls[len(walls) // 2]:.2f} s, {walls[0] / bare:.1f}x bare)"
                + (f"; rows best {rows_times[0]:.2f} s = {n / rows_times[0]:,.0f} msgs/s ({rows_times[0] / bare:.1f}x bare)"
                   if rows_times else "")
                + "".join(f"; median {label} CPU {sorted(values)[len(values) // 2] / n * 1e6:.0f} us/msg"
                          for label, values in (("sync", [r["cpu"] for r in results]),
                                                ("Postgres", [r["pg_cpu"] for r in results if r["pg_cpu"] is not None]))
                          if values)
                + f"; bare socket {bare:.3f} s; peak RSS max {max(r['rss_kb'] for r in results) / 1024:.0f} MB; "
                f"{len(results)} run(s)",
                flush=True,
            )
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

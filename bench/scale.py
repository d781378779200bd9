"""Benchmark: N accounts over P `serve` processes on one small Postgres.

One private Dovecot with N users (limits raised for N sessions, 10 small messages in each
INBOX, NOTIFY on), one private Postgres with `max_connections` (default 100; `serve`
connects as an ordinary role, so the superuser slots stay free for this bench's sampler),
N accounts inserted directly, then P `mailbridge serve` processes started together.
Phases, each skippable:

  healthy   time until every account is `healthy` (owner column and advisory lock agree)
  steady    RSS per process and per account, the share each process owns
  idle      CPU (utime+stime from /proc) of the serve processes over --idle-seconds
  newmail   one message delivered into `new/` of each of --sample accounts; delay until
            its row is in `messages` (polled every 0.1 s): p50 / p99 / max
  join      one more `serve` starts: time until it owns its share N/(P+1) within the bound
  kill      `kill -9` of the process owning most: time until all its accounts are healthy
            on the others, and until no row names the dead process

Throughout, a sampler reads every 0.5 s, in one statement, the accounts' owner column,
the account advisory locks in `pg_locks` and `pg_stat_activity`; each lock's backend is
mapped to its serve process through the TCP port (pg_stat_activity.client_port, then
/proc/net/tcp and /proc/PID/fd).  "Owned twice" is a sample where two different live
processes claim one account (hold its lock, or are named by its owner column).

    .venv/bin/python bench/scale.py --n 1000 --processes 3
    .venv/bin/python bench/scale.py --n 100 --processes 2 --idle-seconds 30 --skip join

Prints a table; exits 1 when an acceptance bound fails (bounds scale with N and P: a
share within N/P ± 35·sqrt(N/1000), connections ≤ 20 per process, RSS ≤ 400 MB per
process, idle CPU ≤ 5 % of a core per 100 accounts, new mail p99 ≤ 5 s, takeover ≤ 30 s,
join ≤ 60 s, never owned twice, none unowned).  Runs as root (Dovecot's harness).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mailbridge.aio.db import Connection, close_connection, connect_once  # noqa: E402
from mailbridge.aio.loop import run as run_with_loop  # noqa: E402
from mailbridge.secrets import Cipher, generate_key  # noqa: E402
from mailbridge.testing.dovecot import DovecotServer, MailUser  # noqa: E402
from mailbridge.testing.postgres import start_private_postgres  # noqa: E402
from tests.support.processes import Serve  # noqa: E402

LOCK_CLASS = 0x6D62
PHASES = ("idle", "newmail", "join", "kill")
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = socket.gethostname()

SAMPLE_SQL = f"""
WITH db AS (SELECT oid FROM pg_database WHERE datname = current_database()),
locks AS (
  SELECT l.objid::bigint AS account_id, l.pid FROM pg_locks l, db
  WHERE l.locktype = 'advisory' AND l.classid = {LOCK_CLASS} AND l.objsubid = 2 AND l.granted
    AND l.database = db.oid),
act AS (
  SELECT pid, client_port, usename FROM pg_stat_activity
  WHERE datname = current_database() AND backend_type = 'client backend')
SELECT
  (SELECT coalesce(json_agg(json_build_array(a.id, a.owner, a.health)), '[]') FROM accounts a) AS accounts,
  (SELECT coalesce(json_agg(json_build_array(locks.account_id, act.client_port)), '[]')
     FROM locks LEFT JOIN act ON act.pid = locks.pid) AS locks,
  (SELECT count(*) FROM act WHERE pid <> pg_backend_pid() AND usename = $1) AS serve_connections,
  (SELECT count(*) FROM act) AS all_connections
"""


# --------------------------------------------------------------------------- /proc


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def _tcp_local_ports(pg_port: int) -> dict[int, int]:
    """inode → local port of every TCP socket whose remote end is port `pg_port`."""
    suffix = f":{pg_port:04X}"
    out: dict[int, int] = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if len(parts) > 9 and parts[2].endswith(suffix):
                        out[int(parts[9])] = int(parts[1].rsplit(":", 1)[1], 16)
        except OSError:
            continue
    return out


def cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# --------------------------------------------------------------------------- the run


@dataclass
class Sample:
    at: float
    owner_of: dict[int, str | None]       # account id → owner column
    health_of: dict[int, str]
    holder_of: dict[int, list[str]]        # account id → processes whose backend holds its lock
    serve_connections: int
    all_connections: int

    def owned_by(self, name: str) -> int:
        return sum(1 for holders in self.holder_of.values() if holders == [name])

    def healthy_on_live(self, live: set[str], ids: set[int] | None = None) -> int:
        """Accounts healthy whose owner column names a live process that holds the lock."""
        n = 0
        for aid, owner in self.owner_of.items():
            if ids is not None and aid not in ids:
                continue
            if self.health_of[aid] == "healthy" and owner in live and self.holder_of.get(aid) == [owner]:
                n += 1
        return n


@dataclass
class Bench:
    args: argparse.Namespace
    dovecot: DovecotServer
    pg_port: int
    admin_dsn: str
    serve_dsn: str
    role: str
    key: str
    home: Path
    procs: list[Serve] = field(default_factory=list)
    live: set[str] = field(default_factory=set)
    dead: set[str] = field(default_factory=set)
    samples: list[Sample] = field(default_factory=list)
    twice: list[tuple[float, int, list[str]]] = field(default_factory=list)  # (at, account, [phase, what])
    max_serve_connections: dict[str, int] = field(default_factory=dict)
    phase: str = "start"
    port_owner: dict[int, str] = field(default_factory=dict)

    # ---- processes

    def env(self) -> dict[str, str]:
        env = {"DATABASE_URL": self.serve_dsn, "MAILBRIDGE_ENCRYPTION_KEY": self.key,
               "MAILBRIDGE_HOME": str(self.home), "MAILBRIDGE_MAX_ACCOUNTS": str(self.args.n),
               "MAILBRIDGE_LOG_LEVEL": "warning"}
        if self.args.pool_size:
            env["MAILBRIDGE_DB_POOL_SIZE"] = str(self.args.pool_size)
        if self.args.lock_connections:
            env["MAILBRIDGE_LOCK_CONNECTIONS"] = str(self.args.lock_connections)
        return env

    def start_serve(self) -> Serve:
        proc = Serve(self.env())
        self.procs.append(proc)
        self.live.add(proc.owner)
        return proc

    def wait_started(self, proc: Serve, failures: list[str], attempts: int = 3) -> Serve:
        """Wait until `proc` serves; one that exits while starting is noted in `failures`
        (its first FAIL or error line) and started again, at most `attempts` times."""
        for _ in range(attempts):
            try:
                proc.wait_serving(90)
                return proc
            except AssertionError:
                if proc.proc.poll() is None:
                    raise
                proc.join_output(2)
                lines = [ln.strip() for ln in proc.text().splitlines() if ln.startswith("FAIL") or "error" in ln]
                failures.append(lines[0] if lines else f"exit {proc.proc.returncode}")
                self.live.discard(proc.owner)
                self.procs.remove(proc)
                proc = self.start_serve()
        raise SystemExit(f"serve did not start in {attempts} attempts: {failures}")

    def by_name(self, name: str) -> Serve:
        return next(p for p in self.procs if p.owner == name)

    def _map_ports(self) -> None:
        inode_port = _tcp_local_ports(self.pg_port)
        mapping: dict[int, str] = {}
        for p in self.procs:
            if p.owner not in self.live:
                continue
            for inode in _socket_inodes(p.proc.pid):
                port = inode_port.get(inode)
                if port is not None:
                    mapping[port] = p.owner
        self.port_owner = mapping

    # ---- the sampler

    async def sample(self, conn: Connection) -> Sample:
        row = await conn.fetchrow(SAMPLE_SQL, self.role)
        assert row is not None
        accounts = json.loads(row["accounts"])
        locks = json.loads(row["locks"])
        if any(port is not None and port not in self.port_owner for _, port in locks):
            await trio.to_thread.run_sync(self._map_ports)
        holder_of: dict[int, list[str]] = {}
        for aid, port in locks:
            holder_of.setdefault(aid, []).append(self.port_owner.get(port, f"?port {port}"))
        s = Sample(at=time.monotonic(), owner_of={a: o for a, o, _ in accounts},
                   health_of={a: h for a, _, h in accounts}, holder_of=holder_of,
                   serve_connections=int(row["serve_connections"]), all_connections=int(row["all_connections"]))
        for aid in s.owner_of:
            claims = set(holder_of.get(aid, ()))
            owner = s.owner_of[aid]
            if owner in self.live:
                claims.add(owner)
            if len(claims) > 1:
                holders = sorted(set(holder_of.get(aid, ())))
                kind = "two lock holders" if len(holders) > 1 else f"locked by {holders or 'none'}, owner column {owner}"
                self.twice.append((s.at, aid, [self.phase, kind]))
        self.max_serve_connections[self.phase] = max(self.max_serve_connections.get(self.phase, 0),
                                                     s.serve_connections)
        self.samples.append(s)
        if len(self.samples) > 4000:
            del self.samples[:1000]
        return s

    async def sampler(self, conn: Connection, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await self._map_ports_async()
        await self.sample(conn)
        task_status.started()
        while True:
            await trio.sleep(0.5)
            await self.sample(conn)

    async def _map_ports_async(self) -> None:
        await trio.to_thread.run_sync(self._map_ports)

    @property
    def last(self) -> Sample:
        return self.samples[-1]

    async def wait_for(self, predicate: Callable[[Sample], bool], timeout: float, stall: float | None = None,
                       progress: Callable[[Sample], int] | None = None) -> float | None:
        """Seconds until a sample satisfies `predicate`; None after `timeout` (or once
        `progress` has not risen for `stall` seconds)."""
        start = time.monotonic()
        best, best_at = -1, start
        seen = len(self.samples)
        if self.samples and predicate(self.last):
            return 0.0
        while time.monotonic() - start < timeout:
            await trio.sleep(0.1)
            if len(self.samples) == seen:
                continue
            seen = len(self.samples)
            s = self.last
            if predicate(s):
                return s.at - start
            if progress is not None and stall is not None:
                value = progress(s)
                if value > best:
                    best, best_at = value, time.monotonic()
                elif time.monotonic() - best_at > stall:
                    return None
        return None

    def shares(self, s: Sample) -> dict[str, int]:
        return {p.owner: s.owned_by(p.owner) for p in self.procs if p.owner in self.live}


def health_summary(s: Sample) -> str:
    counts: dict[str, int] = {}
    for h in s.health_of.values():
        counts[h] = counts.get(h, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def tolerance(n: int) -> int:
    return max(3, math.ceil(35 * math.sqrt(n / 1000)))


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, bool | None]] = []

    def add(self, what: str, value: str, bound: str = "", ok: bool | None = None) -> None:
        self.rows.append((what, value, bound, ok))
        mark = "" if ok is None else ("ok" if ok else "FAIL")
        print(f"  {what:<44} {value:<44} {bound:<20} {mark}", flush=True)

    @property
    def failed(self) -> list[str]:
        return [r[0] for r in self.rows if r[3] is False]


async def insert_accounts(conn: Connection, key: str, users: list[MailUser], port: int) -> None:
    cipher = Cipher([key])
    await conn.executemany(
        """INSERT INTO accounts (email, imap_host, imap_port, imap_tls, imap_username, password_encrypted,
                                 verify_certificate) VALUES ($1, $2, $3, 'none', $4, $5, false)""",
        [(f"{u.username}@scale.test", "127.0.0.1", port, u.username, cipher.encrypt(u.password)) for u in users])


def _message(i: int, token: str) -> tuple[str, bytes]:
    mid = f"scale-{token}-{i}@bench.test"
    body = (f"From: Bench <bench@bench.test>\r\nTo: user{i}@scale.test\r\nSubject: new mail {i}\r\n"
            f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
            f"Message-ID: <{mid}>\r\n\r\nhello {i}\r\n").encode()
    return mid, body


async def run(args: argparse.Namespace, bench: Bench, report: Report, users_by_account: dict[int, MailUser]) -> None:
    n, p = args.n, args.processes
    conn = await connect_once(bench.admin_dsn)  # the sampler's
    probe = await connect_once(bench.admin_dsn)  # everything else's
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(bench.sampler, conn)
            # ---------------------------------------------------------------- healthy
            bench.phase = "healthy"
            t0 = time.monotonic()
            starting = [bench.start_serve() for _ in range(p)]
            failed_starts: list[str] = []
            for proc in starting:
                await trio.to_thread.run_sync(bench.wait_started, proc, failed_starts)
            report.add("serve starts that failed (each retried)", f"{len(failed_starts)}"
                       + (f": {failed_starts[0]}" if failed_starts else ""), "0", not failed_starts)
            took = await bench.wait_for(lambda s: s.healthy_on_live(bench.live) == n, args.healthy_timeout,
                                        stall=args.stall, progress=lambda s: s.healthy_on_live(bench.live))
            s = bench.last
            healthy = s.healthy_on_live(bench.live)
            since_start = time.monotonic() - t0
            report.add("every account healthy", f"{since_start:.1f} s from the first start" if took is not None
                       else f"no: {healthy}/{n} after {since_start:.0f} s", "all", took is not None)
            report.add("  health states", health_summary(s))
            await trio.sleep(args.settle)
            # ---------------------------------------------------------------- steady
            bench.phase = "steady"
            s = bench.last
            shares = bench.shares(s)
            tol = tolerance(n)
            expect = n / p
            report.add("share per process", " ".join(str(v) for v in shares.values()),
                       f"{expect:.0f} ± {tol}", all(abs(v - expect) <= tol for v in shares.values()))
            unowned = sum(1 for aid in s.owner_of if not s.holder_of.get(aid))
            report.add("accounts without a lock holder", str(unowned), "0", unowned == 0)
            rss = {name: rss_mb(bench.by_name(name).proc.pid) or 0.0 for name in shares}
            report.add("RSS per process", " ".join(f"{v:.0f}" for v in rss.values()) + " MB", "≤ 400 MB",
                       all(v <= 400 for v in rss.values()))
            per_account = [rss[k] / shares[k] for k in shares if shares[k]]
            report.add("RSS per account (process RSS / its share)",
                       " ".join(f"{v:.2f}" for v in per_account) + " MB")
            report.add("RSS of all processes / N", f"{sum(rss.values()) / n:.2f} MB")
            conn_bound = 20 * p
            maxc = max(bench.max_serve_connections.get(ph, 0) for ph in ("healthy", "steady"))
            report.add("Postgres connections of serve (max so far)", f"{maxc} (now {s.serve_connections}; "
                       f"all clients {s.all_connections})", f"≤ {conn_bound}", maxc <= conn_bound)
            # ---------------------------------------------------------------- idle
            if "idle" not in args.skip:
                bench.phase = "idle"
                pids = [bench.by_name(name).proc.pid for name in bench.live]
                before = [cpu_seconds(pid) or 0.0 for pid in pids]
                t = time.monotonic()
                await trio.sleep(args.idle_seconds)
                spent = sum((cpu_seconds(pid) or 0.0) - b for pid, b in zip(pids, before))
                pct = 100 * spent / (time.monotonic() - t)
                per100 = pct * 100 / n
                report.add(f"idle CPU, all serve processes ({args.idle_seconds:g} s)",
                           f"{pct:.1f} % of a core = {per100:.2f} % per 100 accounts",
                           "≤ 5 % per 100" + ("" if args.notify else " (NOTIFY off)"),
                           per100 <= 5 if args.notify else None)
            # ---------------------------------------------------------------- newmail
            if "newmail" not in args.skip:
                bench.phase = "newmail"
                await newmail(args, bench, report, probe, users_by_account)
            # ---------------------------------------------------------------- join
            if "join" not in args.skip:
                bench.phase = "join"
                newcomer = bench.start_serve()
                t = time.monotonic()
                failed_join: list[str] = []
                newcomer = await trio.to_thread.run_sync(bench.wait_started, newcomer, failed_join)
                if failed_join:
                    report.add("join: newcomer's failed starts", f"{len(failed_join)}: {failed_join[0]}", "0", False)
                expect = n / (p + 1)
                took = await bench.wait_for(lambda s: abs(s.owned_by(newcomer.owner) - expect) <= tol
                                            and s.healthy_on_live(bench.live) == n, args.join_timeout)
                s = bench.last
                report.add("join: newcomer owns its share", f"{took:.1f} s" if took is not None else
                           f"no: owns {s.owned_by(newcomer.owner)} after {time.monotonic() - t:.0f} s",
                           f"{expect:.0f} ± {tol} in ≤ 60 s", took is not None and took <= 60)
                await trio.sleep(2)
                s = bench.last
                report.add("  shares after the join", " ".join(str(v) for v in bench.shares(s).values()))
                report.add("  healthy after the join", f"{s.healthy_on_live(bench.live)}/{n}; {health_summary(s)}")
                report.add("  serve connections, max during the join", str(bench.max_serve_connections["join"]),
                           f"≤ {20 * (p + 1)}", bench.max_serve_connections["join"] <= 20 * (p + 1))
            # ---------------------------------------------------------------- kill
            if "kill" not in args.skip:
                bench.phase = "kill"
                s = bench.last
                shares = bench.shares(s)
                victim_name = max(shares, key=lambda k: shares[k])
                victim = bench.by_name(victim_name)
                theirs = {aid for aid, h in s.holder_of.items() if h == [victim_name]}
                t = time.monotonic()
                victim.proc.send_signal(signal.SIGKILL)
                await trio.to_thread.run_sync(victim.proc.wait)
                bench.live.discard(victim_name)
                bench.dead.add(victim_name)
                took = await bench.wait_for(lambda s: s.healthy_on_live(bench.live, theirs) == len(theirs),
                                            args.takeover_timeout)
                s = bench.last
                report.add(f"kill -9 of the owner of {len(theirs)}: all healthy on others",
                           f"{took:.1f} s" if took is not None else
                           f"no: {s.healthy_on_live(bench.live, theirs)}/{len(theirs)} after "
                           f"{time.monotonic() - t:.0f} s", "≤ 30 s", took is not None and took <= 30)
                truth = await bench.wait_for(lambda s: not any(o == victim_name for o in s.owner_of.values()),
                                             max(0.0, args.takeover_timeout - (time.monotonic() - t)))
                stale = sum(1 for o in bench.last.owner_of.values() if o == victim_name)
                truth_at = bench.last.at - t
                report.add("  no row names the dead owner", f"{truth_at:.1f} s after the kill"
                           if truth is not None else f"no: {stale} rows still name it after {truth_at:.0f} s",
                           "≤ 30 s", truth is not None and truth_at <= 30)
                await trio.sleep(2)
                s = bench.last
                unowned = sum(1 for aid in s.owner_of if not s.holder_of.get(aid))
                report.add("  accounts without a lock holder afterwards", str(unowned), "0", unowned == 0)
                report.add("  shares after the kill", " ".join(str(v) for v in bench.shares(s).values()))
                report.add("  health after the kill", health_summary(s))
            nursery.cancel_scope.cancel()
    finally:
        await close_connection(conn)
        await close_connection(probe)
    twice_accounts = {aid for _, aid, _ in bench.twice}
    report.add("samples where an account was owned twice", f"{len(bench.twice)} ({len(twice_accounts)} accounts)"
               + (f", e.g. account {bench.twice[0][1]} ({bench.twice[0][2][0]}): {bench.twice[0][2][1]}"
                  if bench.twice else ""),
               "0", not bench.twice)
    report.add("samples taken (every 0.5 s)", str(len(bench.samples)))
    overall = max(bench.max_serve_connections.values(), default=0)
    report.add("serve connections, max over the run", str(overall))


async def newmail(args: argparse.Namespace, bench: Bench, report: Report, conn: Connection,
                  users_by_account: dict[int, MailUser]) -> None:
    ids = sorted(users_by_account)
    step = max(1, len(ids) // max(1, args.sample))
    chosen = ids[::step][: args.sample]
    token = secrets.token_hex(4)
    sent: dict[str, float] = {}
    # deliveries spread over --spread seconds, as mail arrives, not in one burst
    gap = args.spread / max(1, len(chosen))
    limiter = trio.CapacityLimiter(4)

    async def deliver(aid: int) -> None:
        mid, body = _message(aid, token)
        start = time.monotonic()
        await trio.to_thread.run_sync(lambda: bench.dovecot.deliver(users_by_account[aid], body, via=args.deliver),
                                      limiter=limiter)
        sent[mid] = start if args.deliver == "maildir" else time.monotonic()

    seen: dict[str, float] = {}
    mids = [_message(aid, token)[0] for aid in chosen]

    async def poll() -> None:
        # from before the first delivery, so an early message is seen when it lands
        deadline = time.monotonic() + args.spread + args.newmail_timeout
        while len(seen) < len(mids) and time.monotonic() < deadline:
            rows = await conn.fetch("SELECT message_id FROM messages WHERE message_id = ANY($1::text[])", mids)
            now = time.monotonic()
            for r in rows:
                seen.setdefault(r["message_id"], now)
            await trio.sleep(0.1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        for aid in chosen:
            nursery.start_soon(deliver, aid)
            await trio.sleep(gap)
    delays = sorted(max(0.0, seen[m] - sent[m]) for m in seen if m in sent)
    missing = len(sent) - len(seen)
    if delays:
        p50 = statistics.median(delays)
        p99 = delays[min(len(delays) - 1, math.ceil(0.99 * len(delays)) - 1)]
        value = f"p50 {p50:.2f} s, p99 {p99:.2f} s, max {delays[-1]:.2f} s"
    else:
        p99, value = math.inf, "none arrived"
    if missing:
        value += f"; {missing} of {len(sent)} missing after {args.newmail_timeout:g} s"
    report.add(f"new mail ({args.deliver}), {len(sent)} accounts over {args.spread:g} s", value, "p99 ≤ 5 s",
               p99 <= 5 and not missing)


def raise_inotify_limit(wanted: int) -> None:
    """Dovecot wakes an IDLEing session through inotify; past the kernel's per-user limit
    of inotify instances (128 on many machines) it polls instead, which is Dovecot's
    delay, not mailbridge's.  Raise the limit when we may (root), else say so."""
    path = Path("/proc/sys/fs/inotify/max_user_instances")
    try:
        current = int(path.read_text().strip())
        if current < wanted:
            path.write_text(str(wanted))
            print(f"fs.inotify.max_user_instances raised from {current} to {wanted} (for Dovecot's IDLE)")
    except (OSError, ValueError) as exc:
        print(f"fs.inotify.max_user_instances not raised ({exc}): past it Dovecot polls IDLEing sessions")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="accounts = Dovecot users (default 1000)")
    parser.add_argument("--processes", type=int, default=3, help="serve processes started together (default 3)")
    parser.add_argument("--max-connections", type=int, default=100, help="the private Postgres' max_connections")
    parser.add_argument("--messages", type=int, default=10, help="messages in each INBOX (default 10)")
    parser.add_argument("--sample", type=int, default=200, help="accounts given a new message (default 200)")
    parser.add_argument("--spread", type=float, default=5.0, help="seconds the new messages are spread over")
    parser.add_argument("--deliver", choices=("doveadm", "maildir"), default="doveadm",
                        help="new mail by `doveadm save` (indexes updated, as Dovecot's LDA/LMTP; the default) "
                             "or written into new/ behind Dovecot's back")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="idle CPU measured over this long")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after all healthy before measuring")
    parser.add_argument("--healthy-timeout", type=float, default=300.0)
    parser.add_argument("--stall", type=float, default=60.0,
                        help="stop waiting for health when no account became healthy for this long")
    parser.add_argument("--takeover-timeout", type=float, default=60.0)
    parser.add_argument("--join-timeout", type=float, default=90.0)
    parser.add_argument("--newmail-timeout", type=float, default=60.0)
    parser.add_argument("--skip", action="append", default=[], choices=PHASES, help="skip a phase (repeatable)")
    parser.add_argument("--no-notify", dest="notify", action="store_false",
                        help="Dovecot without its mailbox list index, so without NOTIFY (idle CPU without it)")
    parser.add_argument("--idle-notify-interval", type=float, default=120.0,
                        help="Dovecot's imap_idle_notify_interval (its default, 120 s)")
    parser.add_argument("--idle-check-interval", type=float, default=1.0,
                        help="Dovecot's mailbox_idle_check_interval (the fallback past the inotify limit)")
    parser.add_argument("--pool-size", type=int, help="MAILBRIDGE_DB_POOL_SIZE for serve")
    parser.add_argument("--lock-connections", type=int, help="MAILBRIDGE_LOCK_CONNECTIONS for serve")
    parser.add_argument("--stderr-lines", type=int, default=3, help="serve's last stderr lines to print")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()

    raise_inotify_limit(2 * args.n + 256)
    work = Path(tempfile.mkdtemp(prefix="mbscale-"))
    report = Report()
    dovecot = DovecotServer(work / "dovecot", list_index=args.notify, max_clients=2 * args.n + 50,
                            idle_notify_interval=args.idle_notify_interval,
                            idle_check_interval=args.idle_check_interval)
    bench: Bench | None = None
    try:
        t = time.monotonic()
        dovecot.start()
        users = dovecot.add_users(args.n, prefix="scale", messages=args.messages)
        print(f"dovecot: {args.n} users with {args.messages} messages each in {time.monotonic() - t:.1f} s "
              f"(inotify instances limit {dovecot.inotify_instances_limit()}; past it Dovecot polls every "
              f"{args.idle_check_interval:g} s); NOTIFY {'on' if args.notify else 'off'}", flush=True)
        with start_private_postgres(work / "pg", max_connections=args.max_connections, database="bench") as pg:
            role = "mailbridge_bench"
            admin = pg.dsn
            key = generate_key()
            serve_dsn = f"postgresql://{role}@127.0.0.1:{pg.port}/bench"

            async def prepare() -> dict[int, MailUser]:
                c = await connect_once(admin)
                try:
                    await c.execute(f"CREATE ROLE {role} LOGIN")
                    await c.execute(f"ALTER DATABASE bench OWNER TO {role}")
                finally:
                    await close_connection(c)
                from mailbridge.store.migrations import migrate

                await migrate(serve_dsn)
                c = await connect_once(serve_dsn)
                try:
                    await insert_accounts(c, key, users, dovecot.port)
                    rows = await c.fetch("SELECT id, imap_username FROM accounts")
                finally:
                    await close_connection(c)
                by_name = {u.username: u for u in users}
                return {r["id"]: by_name[r["imap_username"]] for r in rows}

            users_by_account = run_with_loop(prepare)
            print(f"postgres: max_connections={args.max_connections}, {args.n} accounts inserted; "
                  f"starting {args.processes} serve process(es)", flush=True)
            home = work / "home"
            home.mkdir()
            bench = Bench(args=args, dovecot=dovecot, pg_port=pg.port, admin_dsn=admin, serve_dsn=serve_dsn,
                          role=role, key=key, home=home)
            print(f"N={args.n} P={args.processes} max_connections={args.max_connections}")
            print(f"  {'measure':<44} {'figure':<44} {'bound':<20}")
            try:
                run_with_loop(run, args, bench, report, users_by_account)
            finally:
                stop_all(bench)
    finally:
        dovecot.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if bench is not None:
        for proc in bench.procs:
            lines = [line.rstrip() for line in proc.err if line.strip()]
            if lines:
                print(f"{proc.owner}: exit {proc.proc.returncode}; {len(lines)} line(s) on stderr, last ones:")
                for line in lines[-args.stderr_lines:]:
                    print(f"    {line[:300]}")
    if report.failed:
        print(f"FAILED: {', '.join(report.failed)}")
        raise SystemExit(1)
    print("all bounds hold")


def stop_all(bench: Bench) -> None:
    """SIGTERM every serve still running (10 s each), then SIGKILL."""
    for proc in bench.procs:
        if proc.proc.poll() is None:
            proc.proc.send_signal(signal.SIGTERM)
    for proc in bench.procs:
        try:
            proc.proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        proc.join_output(2)


if __name__ == "__main__":
    main()

"""A private, throwaway Postgres server for tests and benchmarks.

    with running_postgres(tmp_path / "pg", max_connections=20) as dsn:
        ...  # postgresql://postgres@127.0.0.1:<port>/mailbridge, trust auth

The server gets its own data directory (`initdb`), listens on a free loopback TCP port
only (no Unix socket), runs with the settings given (`max_connections` among them) and
durability off (fsync, synchronous_commit, full_page_writes: it is thrown away), and is
stopped and removed when the block ends, whatever ended it.

Binaries: the system's (`/usr/lib/postgresql/<newest>/bin`) when installed, else the
ones bundled with the `pgserver` package.  Synchronous on purpose (stdlib subprocess
only), so it works before, after or outside trio.

Running as root (tests and CI): initdb and postgres refuse root, so, as pgserver does,
they run as an unprivileged system user (`postgres`, else `pgserver`, else `nobody`)
that owns the data directory.  That user must be able to reach the directory: when an
ancestor of `base` is closed to it (pytest's /tmp/pytest-of-root is mode 0700), the data
directory goes in a fresh directory under the system temp dir instead (`base/pgdata`
is then a symlink to it) rather than opening up someone else's directory modes.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from mailbridge.errors import DatabaseUnavailable

__all__ = ["PrivatePostgres", "find_postgres_bin", "running_postgres"]

_RUN_AS = ("postgres", "pgserver", "nobody")
_START_TIMEOUT = 60.0
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def find_postgres_bin() -> Path | None:
    """Directory holding initdb/pg_ctl/postgres: the newest system install, else pgserver's; None if neither."""
    def version(path: str) -> tuple[int, ...]:
        parts = Path(path).parts[-3]
        return tuple(int(p) for p in re.findall(r"\d+", parts)) or (0,)

    system = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    for initdb in reversed(system):
        bin_dir = Path(initdb).parent
        if all(os.access(bin_dir / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres")):
            return bin_dir
    try:
        import pgserver  # noqa: F401  (only its bundled binaries are used)
    except ImportError:
        return None
    bundled = Path(pgserver.__file__).parent / "pginstall" / "bin"
    return bundled if (bundled / "initdb").exists() else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reachable_by(path: Path, pw: pwd.struct_passwd) -> bool:
    """True when every ancestor of `path` lets `pw` search it (mode bits only, no ACLs)."""
    groups = {pw.pw_gid} | {g for g in os.getgrouplist(pw.pw_name, pw.pw_gid)}
    for ancestor in [path, *path.parents]:
        try:
            st = ancestor.stat()
        except FileNotFoundError:
            continue
        if st.st_uid == pw.pw_uid:
            ok = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid in groups:
            ok = bool(st.st_mode & stat.S_IXGRP)
        else:
            ok = bool(st.st_mode & stat.S_IXOTH)
        if not ok:
            return False
    return True


@dataclass(frozen=True)
class PrivatePostgres:
    """A running private server (see `running_postgres`)."""

    bin_dir: Path
    data_dir: Path
    port: int
    database: str
    log_path: Path

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def dsn_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


class _Runner:
    """Runs the server's binaries, as an unprivileged user when we are root."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.pw: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            for name in _RUN_AS:
                with contextlib.suppress(KeyError):
                    self.pw = pwd.getpwnam(name)
                    break
            if self.pw is None:
                raise DatabaseUnavailable(
                    "running as root, a private Postgres needs an unprivileged system user to run as "
                    f"(one of {', '.join(_RUN_AS)}); create one, e.g. `useradd postgres`")

    def chown(self, path: Path) -> None:
        if self.pw is not None:
            os.chown(path, self.pw.pw_uid, self.pw.pw_gid)

    def run(self, name: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = env.get("LC_ALL") or "C.UTF-8"
        extra: dict[str, object] = {}
        if self.pw is not None:
            env.update(HOME=self.pw.pw_dir or "/", USER=self.pw.pw_name, LOGNAME=self.pw.pw_name)
            extra = {"user": self.pw.pw_uid, "group": self.pw.pw_gid, "extra_groups": []}
        return subprocess.run([str(self.bin_dir / name), *args], env=env, cwd="/", capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL, **extra)  # type: ignore[call-overload]


def _settings_text(port: int, max_connections: int, extra: Mapping[str, str | int | float]) -> str:
    settings: dict[str, str | int | float] = {
        "listen_addresses": "'127.0.0.1'",
        "port": port,
        "unix_socket_directories": "''",
        "max_connections": max_connections,
        "superuser_reserved_connections": min(3, max(0, max_connections - 1)),
        "shared_buffers": "'32MB'",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "logging_collector": "off",
        "log_min_messages": "warning",
        "max_wal_size": "'256MB'",
    }
    settings.update(extra)
    lines = "".join(f"{k} = {v}\n" for k, v in settings.items())
    return "\n# --- mailbridge.testing.postgres (a private throwaway server) ---\n" + lines


@contextlib.contextmanager
def running_postgres(base: Path, *, max_connections: int = 100, database: str = "mailbridge",
                     settings: Mapping[str, str | int | float] | None = None,
                     start_timeout: float = _START_TIMEOUT) -> Iterator[str]:
    """Start a private Postgres under `base` and yield a DSN to `database` (created empty).

    `settings` are extra postgresql.conf lines (values verbatim, strings quoted by the
    caller).  The server is stopped (fast shutdown, then SIGKILL after 10 s) and its data
    directory removed when the block ends, also when it ends by an exception or
    KeyboardInterrupt.  Raises DatabaseUnavailable (with the server log's tail) when the
    server does not start.
    """
    with start_private_postgres(base, max_connections=max_connections, database=database,
                                settings=settings, start_timeout=start_timeout) as server:
        yield server.dsn


@contextlib.contextmanager
def start_private_postgres(base: Path, *, max_connections: int = 100, database: str = "mailbridge",
                           settings: Mapping[str, str | int | float] | None = None,
                           start_timeout: float = _START_TIMEOUT) -> Iterator[PrivatePostgres]:
    """As `running_postgres`, yielding the PrivatePostgres (port, data directory, log)."""
    if not _NAME_RE.match(database):
        raise ValueError(f"database name {database!r}: use letters, digits and _")
    if max_connections < 1:
        raise ValueError("max_connections must be at least 1")
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise DatabaseUnavailable("no Postgres binaries found: apt-get install postgresql, or pip install pgserver")
    runner = _Runner(bin_dir)
    base = Path(base).absolute()
    base.mkdir(parents=True, exist_ok=True)
    link = base / "pgdata"
    outside: Path | None = None
    if runner.pw is not None and not _reachable_by(base, runner.pw):
        outside = Path(tempfile.mkdtemp(prefix="mailbridge-pg-"))
        os.chmod(outside, 0o711)
        data_dir = outside / "pgdata"
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(data_dir, target_is_directory=True)
    else:
        data_dir = link
        if data_dir.is_symlink():
            data_dir.unlink()
        elif data_dir.exists():
            shutil.rmtree(data_dir)
    log_path = data_dir.parent / "postgres.log"
    started = False
    try:
        data_dir.mkdir(mode=0o700)
        runner.chown(data_dir)
        res = runner.run("initdb", "-D", str(data_dir), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                         "--no-sync", "--no-instructions", timeout=120)
        if res.returncode != 0 and "--no-instructions" in res.stderr:  # Postgres < 14
            res = runner.run("initdb", "-D", str(data_dir), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                             "--no-sync", timeout=120)
        if res.returncode != 0:
            raise DatabaseUnavailable(f"initdb failed (exit {res.returncode}): {res.stderr.strip()[-2000:]}")
        log_path.touch()
        runner.chown(log_path)
        port = 0
        for _attempt in range(5):
            port = _free_port()
            with open(data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
                conf.write(_settings_text(port, max_connections, settings or {}))
            res = runner.run("pg_ctl", "-D", str(data_dir), "-l", str(log_path), "-w", "-t",
                             str(int(start_timeout)), "start", timeout=start_timeout + 10)
            if res.returncode == 0:
                started = True
                break
            if "Address already in use" not in _tail(log_path):
                raise DatabaseUnavailable(f"the private Postgres did not start (pg_ctl exit {res.returncode}): "
                                          f"{res.stderr.strip()[-1000:]}\nlog tail ({log_path}):\n{_tail(log_path)}")
        if not started:
            raise DatabaseUnavailable(f"the private Postgres found no free port:\n{_tail(log_path)}")
        server = PrivatePostgres(bin_dir=bin_dir, data_dir=data_dir, port=port, database=database,
                                 log_path=log_path)
        if database != "postgres":
            _create_database(runner, server)
        yield server
    finally:
        try:
            if started:
                _stop(runner, data_dir)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                log_path.unlink()
            if outside is not None:
                shutil.rmtree(outside, ignore_errors=True)
                with contextlib.suppress(FileNotFoundError):
                    link.unlink()


def _create_database(runner: _Runner, server: PrivatePostgres) -> None:
    # `postgres --single` cannot run beside the server; the server is up, so ask it
    deadline = time.monotonic() + 20
    while True:
        res = runner.run("createdb", "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres",
                         server.database, timeout=30) if (server.bin_dir / "createdb").exists() else \
            runner.run("psql", "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "-d", "postgres",
                       "-c", f'CREATE DATABASE "{server.database}"', timeout=30)
        if res.returncode == 0:
            return
        if "starting up" not in res.stderr or time.monotonic() > deadline:
            raise DatabaseUnavailable(f"could not create database {server.database!r} on the private Postgres: "
                                      f"{res.stderr.strip()[-1000:]}")
        time.sleep(0.1)


def _stop(runner: _Runner, data_dir: Path) -> None:
    """Fast shutdown, waiting at most 10 s; then immediate; then SIGKILL of the postmaster."""
    for mode, wait in (("fast", 10), ("immediate", 5)):
        with contextlib.suppress(subprocess.TimeoutExpired):
            res = runner.run("pg_ctl", "-D", str(data_dir), "-m", mode, "-w", "-t", str(wait), "stop",
                             timeout=wait + 5)
            if res.returncode == 0 or "No such file" in res.stderr or "is not running" in res.stderr:
                return
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 9)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return ""

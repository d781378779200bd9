"""The private throwaway Postgres (mailbridge.testing.postgres): its settings hold, it is
gone afterwards, also when the block fails."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from mailbridge.aio.db import close_connection, connect_once
from mailbridge.aio.loop import run as run_with_loop
from mailbridge.errors import DatabaseUnavailable
from mailbridge.testing.postgres import find_postgres_bin, running_postgres, start_private_postgres

pytestmark = pytest.mark.skipif(find_postgres_bin() is None, reason="no Postgres binaries (postgresql or pgserver)")


async def _show(dsn: str) -> tuple[str, str, str]:
    conn = await connect_once(dsn)
    try:
        return (await conn.fetchval("SHOW max_connections"), await conn.fetchval("SELECT current_database()"),
                await conn.fetchval("SHOW fsync"))
    finally:
        await close_connection(conn)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _postmaster_alive(data_dir: Path) -> bool:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                argv = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(data_dir).encode() in argv:
                return True
    return False


def test_starts_with_the_given_max_connections_and_is_removed_afterwards(tmp_path: Path) -> None:
    with start_private_postgres(tmp_path / "pg", max_connections=17, database="bench_db") as server:
        assert run_with_loop(_show, server.dsn) == ("17", "bench_db", "off")
        assert server.dsn.startswith("postgresql://postgres@127.0.0.1:")
        assert server.data_dir.is_dir() and _port_open(server.port)
    assert not _port_open(server.port)
    assert not server.data_dir.exists() and not (tmp_path / "pg" / "pgdata").exists()
    assert not _postmaster_alive(server.data_dir)


def test_an_error_inside_the_block_still_stops_and_removes_it(tmp_path: Path) -> None:
    seen: list[str] = []
    with pytest.raises(RuntimeError, match="boom"):
        with running_postgres(tmp_path / "pg", max_connections=5) as dsn:
            seen.append(dsn)
            assert run_with_loop(_show, dsn)[0] == "5"
            raise RuntimeError("boom")
    port = int(seen[0].rsplit(":", 1)[1].split("/")[0])
    assert not _port_open(port)
    assert not (tmp_path / "pg" / "pgdata").exists()


def test_a_refused_setting_says_why(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUnavailable, match="did not start"):
        with running_postgres(tmp_path / "pg", settings={"shared_buffers": "'not-a-size'"}, start_timeout=10):
            pass  # pragma: no cover
    assert not (tmp_path / "pg" / "pgdata").exists()

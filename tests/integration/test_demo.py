"""`mailbridge demo` as a real process: it prints the dashboard URL with a token, the
demo account syncs and new mail keeps arriving; SIGINT stops it with exit 0 and removes
its Dovecot, its files and its database.

DATABASE_URL points at the test server, so the demo makes its throwaway database next to
the test's (the embedded variant differs only in where that database lives).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import trio

from mailbridge.aio.db import Database
from tests.e2e.support import Http
from tests.support.processes import MailbridgeProcess


class Demo(MailbridgeProcess):
    """A `mailbridge demo` subprocess with `env` as its whole environment."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(["demo"], env)

    def line(self, label: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.out):
                if line.strip().startswith(label + " "):
                    return line.strip()[len(label):].strip()
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"the demo printed no {label!r} line: {''.join(self.out)} {''.join(self.err)}")


def dovecot_pids(workdir: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode("utf-8", "replace")
        except OSError:
            continue
        if workdir in argv:
            pids.append(int(entry.name))
    return pids


async def test_demo_runs_syncs_appends_and_cleans_up(db_dsn, tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MAILBRIDGE_") and k not in ("DATABASE_URL", "PORT", "IMAP_ENCRYPTION_KEY")}
    env.update(DATABASE_URL=db_dsn, MAILBRIDGE_HOME=str(tmp_path / "home"), MAILBRIDGE_LOG_LEVEL="info")
    demo = Demo(env)
    try:
        url = demo.line("dashboard", timeout=120)
        parts = urlsplit(url)
        token = parse_qs(parts.query)["access_token"][0]
        assert parts.hostname == "127.0.0.1" and parts.path == "/" and len(token) >= 24
        workdir = demo.line("files", timeout=5)
        database = re.search(r"database (mailbridge_demo_\w+)", demo.line("database", timeout=5)).group(1)
        http = Http(f"{parts.scheme}://{parts.netloc}", token=token)

        # the account syncs: every folder fully mirrored, healthy
        deadline = time.monotonic() + 120
        actor = None
        while time.monotonic() < deadline:
            actors = (await http.ok("GET", "/actors"))["actors"]
            actor = actors[0] if actors else None
            if (actor and actor["health"] == "healthy" and len(actor["folders"]) == 5
                    and all(f["phase"] != "initial" and f["synced"] >= 200 for f in actor["folders"])):
                break
            await trio.sleep(0.5)
        else:
            raise AssertionError(f"the demo account did not sync: {actor} {demo.text()[-3000:]}")
        assert actor["email"] == "demo@mailbridge.localhost" and actor["lock_held"]
        mirrored = sum(f["synced"] for f in actor["folders"])
        assert mirrored >= 3400, actor

        # new mail arrives by itself (one every few seconds)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            actor = (await http.ok("GET", "/actors"))["actors"][0]
            if sum(f["synced"] for f in actor["folders"]) >= mirrored + 2:
                break
            await trio.sleep(0.5)
        else:
            raise AssertionError(f"no new mail arrived: {actor} {demo.text()[-3000:]}")

        # the dashboard answers with the printed URL; a body comes from the server
        page = await http.get("/", token=None, params={"access_token": token})
        assert page.status == 200 and page.content_type.startswith("text/html")
        newest = (await http.ok("GET", f"/accounts/{actor['account_id']}/messages", params={"limit": 1}))
        body = await http.ok("GET", f"/messages/{newest['messages'][0]['id']}/body")
        assert body["text"] or body["html"]

        # SIGINT: exit 0, Dovecot gone, files and database removed
        demo.proc.send_signal(signal.SIGINT)
        code = demo.proc.wait(30)
        demo.join_output(5)
        assert code == 0, demo.text()[-3000:]
        assert "Traceback" not in demo.text()
        assert "demo removed" in "".join(demo.out)
        assert dovecot_pids(workdir) == []
        assert not Path(workdir).exists()
        async with Database.connect(db_dsn, max_size=1) as db:
            assert await db.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", database) == 0
        assert not (tmp_path / "home").exists()  # nothing written where your own data would live
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
            demo.proc.wait(10)


async def test_a_second_ctrl_c_exits_at_once_and_still_removes_dovecot_and_files(db_dsn, tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MAILBRIDGE_") and k not in ("DATABASE_URL", "PORT", "IMAP_ENCRYPTION_KEY")}
    env.update(DATABASE_URL=db_dsn, MAILBRIDGE_HOME=str(tmp_path / "home"))
    demo = Demo(env)
    database = None
    try:
        demo.line("dashboard", timeout=120)
        workdir = demo.line("files", timeout=5)
        database = re.search(r"database (mailbridge_demo_\w+)", demo.line("database", timeout=5)).group(1)
        assert dovecot_pids(workdir)
        demo.proc.send_signal(signal.SIGINT)
        await trio.sleep(0.05)
        demo.proc.send_signal(signal.SIGINT)
        code = demo.proc.wait(30)
        demo.join_output(5)
        assert code == 128 + signal.SIGINT, demo.text()[-3000:]
        assert "Traceback" not in demo.text()
        deadline = time.monotonic() + 10
        while dovecot_pids(workdir) and time.monotonic() < deadline:
            await trio.sleep(0.1)  # the master's children exit after it
        assert dovecot_pids(workdir) == []
        assert not Path(workdir).exists(), (list(Path(workdir).rglob("*"))[:20], demo.text()[-2000:])
        if "demo removed" not in "".join(demo.out):  # the graceful cleanup did not finish first
            assert f'DROP DATABASE \\"{database}\\"' in "".join(demo.err) or database in "".join(demo.err)
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
            demo.proc.wait(10)
        if database is not None:
            async with Database.connect(db_dsn, max_size=1) as db:
                await db.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

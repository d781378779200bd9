"""Several `serve` processes on one database share the accounts (real Dovecot, real
Postgres, real processes): a fair split, hand-over on join and on SIGTERM, takeover
after kill -9, one deployment-wide account limit, and an accounts table that never shows
a dead process as an account's healthy owner."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from collections import Counter

import pytest
import trio

from mailbridge.aio.db import Database
from mailbridge.store import members as member_store
from mailbridge.testing.imapctl import MailboxClient
from mailbridge.testing.mailgen import corpus, make_message
from tests.support.mirror import add_account, base_env
from tests.support.processes import Serve

ACCOUNTS = 10


@pytest.fixture
def env(db_dsn, encryption_key, tmp_path):
    return base_env(db_dsn, encryption_key, tmp_path, MAILBRIDGE_MEMBER_TIMEOUT="3",
                    MAILBRIDGE_MAX_ACCOUNTS="50", MAILBRIDGE_POLL_SECONDS="30")


@pytest.fixture
def accounts(env, dovecot):
    """ACCOUNTS accounts with a few messages each; their ids, oldest first."""
    ids = []
    for n in range(ACCOUNTS):
        user = dovecot.add_user()
        with MailboxClient(dovecot, user) as client:
            client.append_many("INBOX", list(corpus(3, seed=n)))
        ids.append(add_account(env, dovecot, user))
    return ids


async def owners(db) -> dict[int, tuple[str | None, str]]:
    rows = await db.fetch("SELECT id, owner, health FROM accounts ORDER BY id")
    return {r["id"]: (r["owner"], r["health"]) for r in rows}


async def wait_until(db, predicate, timeout: float, what: str) -> float:
    """Seconds until `predicate(owners)` holds; AssertionError with the last view after `timeout`."""
    start = time.monotonic()
    while True:
        view = await owners(db)
        if predicate(view):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}: {view}")
        await trio.sleep(0.1)


def all_healthy_on(view, names) -> bool:
    return all(owner in names and health == "healthy" for owner, health in view.values())


class ActorsSampler:
    """Reads every process's `/actors` every 0.2 s (in a thread) and records any moment
    at which two processes both said they hold one account's lock."""

    def __init__(self, processes: list[Serve]) -> None:
        self.processes = processes
        self.doubles: list[tuple[int, list[str]]] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ActorsSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            holders: dict[int, list[str]] = {}
            for serve in list(self.processes):
                if serve.proc.poll() is not None:
                    continue
                try:
                    with urllib.request.urlopen(serve.url + "/actors", timeout=2) as response:
                        actors = json.load(response)["actors"]
                except (OSError, ValueError, KeyError, AssertionError):
                    continue
                for actor in actors:
                    if actor.get("lock_held"):
                        holders.setdefault(actor["account_id"], []).append(serve.owner)
            self.samples += 1
            self.doubles += [(a, names) for a, names in holders.items() if len(names) > 1]
            self._stop.wait(0.2)


async def test_two_processes_split_hand_over_on_join_and_on_sigterm(env, accounts, db_dsn):
    first = Serve(env)
    second = third = None
    try:
        first.wait_serving()
        async with Database.connect(db_dsn) as db:
            await wait_until(db, lambda v: all_healthy_on(v, {first.owner}), 60, "the first process to own all")
            second = Serve(env)
            with ActorsSampler([first, second]) as sampler:
                second.wait_serving()
                joined = await wait_until(
                    db, lambda v: all_healthy_on(v, {first.owner, second.owner})
                    and {o for o, _ in v.values()} == {first.owner, second.owner}, 60, "a share for the newcomer")
                shares = Counter(o for o, _ in (await owners(db)).values())
                assert sorted(shares.values()) == [5, 5] or max(shares.values()) <= 6, shares
                assert joined < 30

                code, took = second.stop()  # SIGTERM: hands its accounts over before it exits
                assert code == 0, second.text()
                assert took < 9
                handed = await wait_until(db, lambda v: all_healthy_on(v, {first.owner}), 30,
                                          "the first process to take the leaver's accounts")
                assert handed < 10
                print(f"join: newcomer's share after {joined:.1f} s ({dict(shares)}); "
                      f"SIGTERM: exit in {took:.1f} s, all healthy on the other after {handed:.1f} s")
            assert sampler.samples > 10 and sampler.doubles == []
            assert "handed over" in first.text() or "handed over" in second.text()
            assert await db.fetchval("SELECT count(*) FROM members") == 1
    finally:
        for serve in (first, second, third):
            if serve is not None:
                serve.kill()


async def test_kill_9_moves_the_accounts_and_the_table_tells_the_truth(env, accounts, dovecot, db_dsn):
    first, second = Serve(env), Serve(env)
    try:
        first.wait_serving()
        second.wait_serving()
        async with Database.connect(db_dsn) as db:
            await wait_until(db, lambda v: all_healthy_on(v, {first.owner, second.owner})
                             and len({o for o, _ in v.values()}) == 2, 60, "both processes to own a share")
            victims = [a for a, (o, _) in (await owners(db)).items() if o == first.owner]
            first.kill()  # SIGKILL: no cleanup at all
            killed = time.monotonic()
            stale: list[float] = []
            while True:
                view = await owners(db)
                if any(view[a][0] == first.owner for a in victims):
                    stale.append(time.monotonic() - killed)
                if all_healthy_on(view, {second.owner}):
                    break
                assert time.monotonic() - killed < 30, f"no takeover within 30 s: {view}"
                await trio.sleep(0.1)
            took = time.monotonic() - killed
            assert took < 30
            # the dead process stops being shown as an owner within the takeover bound
            assert not stale or max(stale) < 10, max(stale)
            # new mail in a taken-over account arrives
            user_row = await db.fetchrow("SELECT imap_username FROM accounts WHERE id = $1", victims[0])
            user = dovecot.users[user_row["imap_username"]]
            with MailboxClient(dovecot, user) as client:
                client.append("INBOX", make_message(9100, rng=random.Random(9)))
            with trio.fail_after(15):
                while await db.fetchval("SELECT count(*) FROM messages WHERE account_id = $1", victims[0]) < 4:
                    await trio.sleep(0.1)
            assert [m.name for m in await member_store.live(db, 3)] == [second.owner]
            print(f"kill -9: {len(victims)} account(s) healthy on the survivor after {took:.1f} s; "
                  f"the dead owner shown for {max(stale) if stale else 0:.1f} s")
    finally:
        first.kill()
        second.kill()


async def test_the_account_limit_is_the_same_oldest_accounts_in_every_process(env, accounts, db_dsn):
    limited = {**env, "MAILBRIDGE_MAX_ACCOUNTS": "6"}
    first, second = Serve(limited), Serve(limited)
    try:
        first.wait_serving()
        second.wait_serving()
        async with Database.connect(db_dsn) as db:
            oldest, newest = accounts[:6], accounts[6:]
            await wait_until(db, lambda v: all(v[a][1] == "healthy" for a in oldest)
                             and all(v[a] == (None, "over_limit") for a in newest), 60,
                             "the oldest 6 synced by someone and the rest over the limit")
            view = await owners(db)
            assert {view[a][0] for a in oldest} == {first.owner, second.owner}
    finally:
        first.kill()
        second.kill()

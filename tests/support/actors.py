"""Run a real Supervisor with real AccountActors inside a test (real Postgres, Dovecot)."""

from __future__ import annotations

import functools
import random
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Callable

import trio

from actors.account import AccountActor, ActorDeps, ActorTiming
from actors.registry import Registry
from actors.status import IDLE, ActorStatus
from actors.supervisor import DbAccountSource, RestartPolicy, Supervisor
from mailbridge.aio.db import Database
from mailbridge.aio.locks import LockConnections
from mailbridge.config import Settings, load_settings
from mailbridge.metrics import install_snapshot_collector
from mailbridge.secrets import Cipher
from mailbridge.store import accounts as account_store
from mailbridge.store.accounts import NewAccount

FAST = ActorTiming(standby_retry=0.5, heartbeat=1.0, rediscover=0.0)
QUICK_RESTARTS = RestartPolicy(base=0.2, cap=2.0, jitter=0.1, intensity=5, period=60.0, cooldown=30.0)


def settings_for(db_dsn: str, key: str, **overrides: str) -> Settings:
    env = {"DATABASE_URL": db_dsn, "MAILBRIDGE_ENCRYPTION_KEY": key, "MAILBRIDGE_POLL_SECONDS": "0.5",
           "MAILBRIDGE_BATCH_SIZE": "100"}
    env.update(overrides)
    return load_settings(environ=env, dotenv=None)


async def insert_account(db: Database, settings: Settings, *, username: str, password: str, port: int,
                         host: str = "127.0.0.1") -> int:
    """Save an account without the login test (so a wrong password can be stored)."""
    new = NewAccount(email=f"{username}@example.test", imap_host=host, imap_port=port, imap_tls="none",
                     imap_username=username)
    token = Cipher(settings.require_keys()).encrypt(password)
    return await account_store.insert(db, new, token, limit=settings.max_accounts)


def synced(status: ActorStatus) -> bool:
    """The actor finished its first full cycle and waits for the next."""
    return status.state == IDLE and status.cycles >= 1


@dataclass
class Harness:
    db: Database
    settings: Settings
    registry: Registry
    supervisor: Supervisor

    def status(self, account_id: int) -> ActorStatus | None:
        return self.registry.status(account_id)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> float:
        """Seconds until `predicate()` holds; AssertionError naming `what` after `timeout`."""
        start = trio.current_time()
        with trio.move_on_after(timeout):
            while not predicate():
                await trio.sleep(0.02)
            return trio.current_time() - start
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; statuses: "
                             f"{[s.to_json() for s in self.registry.snapshots()]}")

    async def wait_status(self, account_id: int, predicate: Callable[[ActorStatus], bool], timeout: float,
                          what: str) -> float:
        return await self.wait_for(lambda: (s := self.status(account_id)) is not None and predicate(s),
                                   timeout, what)

    async def advisory_lock_held(self, account_id: int) -> bool:
        return bool(await self.db.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2 "
            "AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            0x6D62, account_id))


@asynccontextmanager
async def running_supervisor(db_dsn: str, settings: Settings, *, timing: ActorTiming = FAST,
                             policy: RestartPolicy = QUICK_RESTARTS, rescan_seconds: float = 60.0,
                             owner: str = "test-host:1") -> AsyncIterator[Harness]:
    """A Supervisor with real actors for the block; cancelled (cleanly) on exit."""
    async with Database.connect(db_dsn, max_size=6) as db, LockConnections.open(db_dsn, count=2) as locks:
        registry = Registry()
        install_snapshot_collector(registry.snapshots)
        deps = ActorDeps(db=db, settings=settings, registry=registry, owner=owner, timing=timing, locks=locks)
        supervisor = Supervisor(
            DbAccountSource(db), registry, max_accounts=settings.max_accounts,
            commands_per_minute=settings.commands_per_minute,
            actor_factory=lambda account, throttle, restarts: AccountActor(
                account, deps, throttle=throttle, restarts=restarts),
            policy=policy, rescan_seconds=rescan_seconds, rng=random.Random(7))
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(locks.run_probe, every=0.5, timeout=2.0))
            await nursery.start(supervisor.run)
            yield Harness(db, settings, registry, supervisor)
            nursery.cancel_scope.cancel()

"""The Supervisor's policy with fake actors and trio's autojump clock (no I/O)."""

from __future__ import annotations

import dataclasses
import random
from contextlib import asynccontextmanager
from datetime import datetime, timezone

import pytest
import trio

from actors import status as st
from actors.registry import Registry
from actors.supervisor import RestartPolicy, Supervisor
from mailbridge.errors import DatabaseError, ImapConnectionLost
from mailbridge.store.accounts import Account

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def account(aid: int, *, enabled=True, password_age=0, host="imap.example.test") -> Account:
    return Account(id=aid, email=f"u{aid}@example.test", imap_host=host, imap_port=993, imap_tls="tls",
                   imap_username=f"u{aid}", verify_certificate=True, enabled=enabled, health="starting",
                   health_reason=None, health_changed_at=T0, owner=None, heartbeat_at=None, excluded_folders=None,
                   credentials_changed_at=datetime(2026, 1, 1, 0, password_age, tzinfo=timezone.utc),
                   created_at=datetime(2026, 1, 1, 0, 0, aid, tzinfo=timezone.utc), updated_at=T0)


class Source:
    def __init__(self, accounts):
        self.accounts = list(accounts)
        self.recorded = []

    async def load(self):
        return list(self.accounts)

    @asynccontextmanager
    async def listen(self):
        send, receive = trio.open_memory_channel(10)
        self.notify = send
        async with receive:
            yield receive

    async def record(self, account_id, health, reason):
        self.recorded.append((account_id, health))


class FakeActor:
    """Crashes `crashes` times (per account), then runs a cycle and stays up."""

    plan: dict[int, int] = {}
    fail_on_stop: set[int] = set()  # accounts whose actor also fails while being cancelled
    errors: dict[int, Exception] = {}  # what a crash raises (default: a lost connection)
    hints: dict[int, float] = {}  # the actor's own retry_after after a crash
    starts: dict[int, list[float]] = {}
    live: set[int] = set()

    handed: list[int] = []  # accounts whose actor was asked to hand over

    def __init__(self, account, throttle, restarts, registry):
        self.account, self.cycles = account, 0
        self.scope = trio.CancelScope()
        self.retry_after = None
        self.status = st.ActorStatus(account_id=account.id, email=account.email, state=st.STARTING,
                                     health="starting", restarts=restarts)
        registry.publish(self.status)
        self.registry = registry

    async def run(self):
        aid = self.account.id
        FakeActor.starts.setdefault(aid, []).append(trio.current_time())
        if FakeActor.plan.get(aid, 0) > 0:
            FakeActor.plan[aid] -= 1
            await trio.sleep(0.5)
            self.retry_after = FakeActor.hints.get(aid)
            raise FakeActor.errors.get(aid, ImapConnectionLost("connection reset"))
        FakeActor.live.add(aid)
        try:
            with self.scope:
                await self._serve(aid)
        finally:
            FakeActor.live.discard(aid)

    def hand_over(self):
        FakeActor.handed.append(self.account.id)
        self.scope.cancel()

    async def _serve(self, aid):
        if True:
            self.cycles = 1
            self.registry.publish(self.status.evolve(state=st.IDLE, lock_held=True))
            async with trio.open_nursery() as nursery:
                if aid in FakeActor.fail_on_stop:
                    nursery.start_soon(self._write_that_fails_when_cancelled)
                await trio.sleep_forever()


    async def _write_that_fails_when_cancelled(self):
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            raise DatabaseError("the account's row is gone") from None


@pytest.fixture(autouse=True)
def reset():
    FakeActor.plan, FakeActor.starts, FakeActor.live, FakeActor.fail_on_stop = {}, {}, set(), set()
    FakeActor.errors, FakeActor.hints, FakeActor.handed = {}, {}, []


def supervisor(source, registry, **kw):
    policy = kw.pop("policy", RestartPolicy(base=1.0, cap=60.0, jitter=0.0, intensity=3, period=100.0,
                                            cooldown=500.0))
    return Supervisor(source, registry, max_accounts=kw.pop("max_accounts", 20), commands_per_minute=200,
                      actor_factory=lambda a, t, r: FakeActor(a, t, r, registry), policy=policy,
                      rescan_seconds=30.0, rng=random.Random(1), **kw)


@pytest.mark.trio(run=trio.run)
async def test_backoff_doubles_then_the_budget_imposes_a_cooldown(autojump_clock):
    registry, source = Registry(), Source([account(1)])
    FakeActor.plan[1] = 5
    sup = supervisor(source, registry)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(2000)
        assert registry.status(1).restarts == 5 and 1 in FakeActor.live
        nursery.cancel_scope.cancel()
    starts = FakeActor.starts[1]
    gaps = [round(b - a - 0.5, 3) for a, b in zip(starts, starts[1:])]
    assert gaps[:3] == [1.0, 2.0, 4.0]          # exponential backoff
    assert gaps[3] == 500.0                     # 4 restarts within 100 s: cooldown
    assert gaps[4] == 16.0                      # still failing after the rest: backoff goes on


@pytest.mark.trio(run=trio.run)
async def test_backoff_starts_over_after_a_good_cycle_and_status_shows_backoff(autojump_clock):
    registry, source = Registry(), Source([account(1)])
    FakeActor.plan[1] = 1
    sup = supervisor(source, registry)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(0.75)
        status = registry.status(1)
        assert status.state == st.BACKOFF and status.restarts == 1 and status.retry_at is not None
        assert "connection reset" in status.last_error
        await trio.sleep(5)
        assert registry.status(1).state == st.IDLE
        nursery.cancel_scope.cancel()


@pytest.mark.trio(run=trio.run)
async def test_limit_disabled_changed_and_removed_accounts(autojump_clock):
    registry = Registry()
    source = Source([account(1), account(2), account(3), account(4, enabled=False)])
    sup = supervisor(source, registry, max_accounts=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(1)
        assert sup.running == [1, 2] and FakeActor.live == {1, 2}
        assert registry.status(3).health == "over_limit" and registry.status(4).health == "disabled"
        assert sorted(source.recorded) == [(3, "over_limit"), (4, "disabled")]

        first_start = FakeActor.starts[2][0]
        source.accounts[1] = account(2, password_age=5)   # new credentials: a fresh actor
        source.accounts = [a for a in source.accounts if a.id != 1]  # account 1 removed
        sup.wake()
        await trio.sleep(1)
        assert len(FakeActor.starts[2]) == 2 and FakeActor.starts[2][1] > first_start
        assert sup.running == [2, 3]  # 3 moves up under the limit
        assert registry.status(1) is None
        assert FakeActor.live == {2, 3}
        nursery.cancel_scope.cancel()


@pytest.mark.trio(run=trio.run)
async def test_an_actor_failing_while_it_is_stopped_does_not_take_the_supervisor_down(autojump_clock):
    registry, source = Registry(), Source([account(1), account(2)])
    FakeActor.fail_on_stop.add(1)
    sup = supervisor(source, registry)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(1)
        source.accounts = [account(2)]  # account 1 removed: its actor raises on the way out
        sup.wake()
        await trio.sleep(1)
        assert sup.running == [2] and FakeActor.live == {2} and registry.status(1) is None
        source.accounts = [account(2), account(3)]  # the supervisor still answers changes
        sup.wake()
        await trio.sleep(1)
        assert sup.running == [2, 3] and FakeActor.live == {2, 3}
        nursery.cancel_scope.cancel()


@pytest.mark.trio(run=trio.run)
async def test_a_hint_from_the_failure_is_a_floor_under_the_backoff(autojump_clock):
    from mailbridge.errors import ImapThrottled, ImapUnavailable

    registry, source = Registry(), Source([account(1), account(2)])
    FakeActor.plan.update({1: 2, 2: 2})
    FakeActor.errors[1] = ImapUnavailable("* BYE too many connections", reason_code="TOOMANYCONNECTIONS")
    FakeActor.hints[1] = 45.0  # the actor's verdict: one poll tick at least
    FakeActor.errors[2] = ImapThrottled("Request is throttled", retry_after=7.0)  # the error's own hint
    sup = supervisor(source, registry)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(1.0)
        status = registry.status(1)
        assert status.state == st.BACKOFF and "45 s" in status.step and "too many connections" in status.last_error
        await trio.sleep(200)
        assert {1, 2} <= FakeActor.live
        nursery.cancel_scope.cancel()
    for aid, floor in ((1, 45.0), (2, 7.0)):
        starts = FakeActor.starts[aid]
        gaps = [b - a - 0.5 for a, b in zip(starts, starts[1:])]
        assert len(gaps) == 2 and all(floor <= g <= floor * 1.25 + 1e-6 for g in gaps), (aid, gaps)


def test_the_floor_never_shortens_a_longer_backoff():
    from actors.supervisor import retry_hint

    policy = RestartPolicy(base=1.0, cap=300.0, jitter=0.0)
    rng = random.Random(1)
    assert policy.backoff(8, rng, floor=30.0) == 128.0
    assert policy.backoff(1, rng, floor=30.0) == 30.0
    assert policy.backoff(1, rng, floor=None) == 1.0

    class Hinted:
        retry_after = 5.0
    assert retry_hint(Hinted(), ValueError()) == 5.0
    assert retry_hint(object(), ValueError()) is None


class Shares:
    """A fixed split: account id → process name; this process is "me"."""

    own_name = "me"

    def __init__(self, placed):
        self.placed = dict(placed)

    def split(self, account_ids):
        return {a: self.placed.get(a, "me") for a in account_ids}

    async def refresh(self):
        pass


@pytest.mark.trio(run=trio.run)
async def test_only_this_process_share_runs_and_a_moved_share_is_handed_over(autojump_clock):
    registry = Registry()
    accounts = [account(1), account(2), account(3), account(4)]
    accounts[1] = dataclasses.replace(account(2), owner="other:7", health="healthy")
    source = Source(accounts)
    shares = Shares({2: "other:7", 4: "other:7"})
    sup = supervisor(source, registry, shares=shares)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(1)
        assert sup.running == [1, 3] and FakeActor.live == {1, 3}
        elsewhere = registry.status(2)
        assert elsewhere.state == st.ELSEWHERE and elsewhere.owner == "other:7" and elsewhere.health == "healthy"
        assert "synced by other:7" in elsewhere.step
        assert "unowned" in registry.status(4).step  # no owner recorded yet: who is to take it

        shares.placed[3] = "other:7"
        sup.wake()
        await trio.sleep(1)
        assert FakeActor.handed == [3] and FakeActor.live == {1}
        assert len(FakeActor.starts[3]) == 1  # handed over, not restarted
        assert sup.running == [1] and sup.stopping == []
        nursery.cancel_scope.cancel()


@pytest.mark.trio(run=trio.run)
async def test_a_database_or_lock_outage_uses_no_restart_budget(autojump_clock):
    from mailbridge.errors import LockLost

    registry, source = Registry(), Source([account(1), account(2)])
    FakeActor.plan[1] = FakeActor.plan[2] = 8
    FakeActor.errors[1] = DatabaseError("Postgres went away")
    FakeActor.errors[2] = LockLost("the lock connection was lost")
    sup = supervisor(source, registry)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(400)
        assert {1, 2} <= FakeActor.live
        nursery.cancel_scope.cancel()
    for aid in (1, 2):
        starts = FakeActor.starts[aid]
        gaps = [b - a - 0.5 for a, b in zip(starts, starts[1:])]
        assert len(gaps) == 8 and max(gaps) <= 30.0, gaps  # no 500 s cooldown, the backoff capped

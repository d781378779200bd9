"""The registry's admission of requests (pure trio, no actor behind the mailbox)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors import status as st
from actors.messages import SyncNow
from actors.registry import MAILBOX_SIZE, ActorBusy, Registry


def registry_with_mailbox(account_id: int = 1):
    registry = Registry()
    registry.publish(st.ActorStatus(account_id=account_id, email="a@example.test", state=st.SYNCING,
                                    health="syncing"))
    send, receive = trio.open_memory_channel(MAILBOX_SIZE)
    registry.attach_mailbox(account_id, send)
    return registry, receive


async def test_a_lowered_limit_refuses_requests_at_once_and_a_raised_one_admits_again():
    registry, receive = registry_with_mailbox()
    registry.limit_waiting(1, 2)
    async with trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(lambda: registry.request(1, SyncNow(), timeout=5))
        await trio.testing.wait_all_tasks_blocked()
        assert registry.mailbox_depth(1) == 2
        with trio.fail_after(0.1), pytest.raises(ActorBusy, match="throttle"):
            await registry.request(1, SyncNow(), timeout=5)
        registry.limit_waiting(1, MAILBOX_SIZE)
        nursery.start_soon(lambda: registry.request(1, SyncNow(), timeout=5))
        await trio.testing.wait_all_tasks_blocked()
        assert registry.mailbox_depth(1) == 3
        nursery.cancel_scope.cancel()


async def test_the_limit_stays_within_one_and_the_mailbox_size():
    registry, _ = registry_with_mailbox()
    registry.limit_waiting(1, 0)
    assert registry._entries[1].admit == 1
    registry.limit_waiting(1, 10 * MAILBOX_SIZE)
    assert registry._entries[1].admit == MAILBOX_SIZE
    registry.limit_waiting(99, 3)  # an unknown account: nothing to limit

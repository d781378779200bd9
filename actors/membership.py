"""This serve process among the others: its `members` row, the live members, the owned
accounts' heartbeat, and the accounts table's truth about owners.

`Membership.run` joins (a row, and the membership lock on a lock connection), then every
`every` seconds, until cancelled:

- refreshes its heartbeat (joining again if its row or its lock went: a lost lock
  connection, a long stall);
- reads the live members (`mailbridge.store.members.live`); when the set changed it calls
  `on_change` (the supervisor rescans and hands accounts over or takes them);
- every `heartbeat_every` seconds writes the owner and heartbeat of every account whose
  lock this process holds, in one statement (not one per actor);
- clears the owner of every account whose lock nobody holds (`clear_dead_owners`): a
  process that died shows as gone within one period, not as a frozen `healthy`.

`leave()` removes the row and tells the others at once (a clean stop hands the accounts
over before the actors stop).  Database errors are logged and retried next period; they
never end the task.  Cancellation: the row is left to the others' timeout (shutdown calls
`leave()` first).
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import trio

from actors.shares import assign
from mailbridge.aio.locks import MEMBER_LOCK_CLASS, Lease, LockConnections
from mailbridge.errors import DatabaseError
from mailbridge.store import members as member_store
from mailbridge.store.db import Db
from mailbridge.store.members import Member

log = logging.getLogger(__name__)
CLEANUP_TIMEOUT = 5.0


class Membership:
    """See the module doc."""

    def __init__(self, db: Db, locks: LockConnections, name: str, *, timeout: float = 15.0,
                 every: float | None = None, heartbeat_every: float = 15.0,
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.db = db
        self.locks = locks
        self.name = name
        self.timeout = timeout
        self.every = every if every is not None else max(0.5, timeout / 3)
        self.heartbeat_every = heartbeat_every
        self.on_change = on_change
        self.me: Member | None = None
        self.members: tuple[Member, ...] = ()  # live, by id; this process among them once joined
        self._lease: Lease | None = None
        self._last_owned_beat = float("-inf")
        self.left = False

    def member_ids(self) -> list[int]:
        """Ids of the live members (this process's included once it joined)."""
        ids = {m.id for m in self.members}
        if self.me is not None:
            ids.add(self.me.id)
        return sorted(ids)

    @property
    def own_name(self) -> str:
        return self.name

    def split(self, account_ids: Sequence[int]) -> dict[int, str]:
        """account id → the name of the member that should own it (`actors.shares`).
        Not joined yet (Postgres unreachable at start): every account is ours, the locks
        decide.  Left (stopping): none is."""
        if self.left:
            return {a: "the other processes" for a in account_ids}
        if self.me is None:
            return {a: self.name for a in account_ids}
        members = {m.id: m.name for m in self.members}
        members[self.me.id] = self.name
        return assign(account_ids, members)

    def name_of(self, member_id: int) -> str:
        for m in self.members:
            if m.id == member_id:
                return m.name
        return self.me.name if self.me is not None and self.me.id == member_id else f"member {member_id}"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Join, then keep the membership until cancelled; `started()` once joined (or
        after a first failed attempt, so serving never waits on it)."""
        started = False
        while True:
            try:
                await self._round()
            except DatabaseError as exc:
                log.warning("membership: %s; retrying in %g s", exc, self.every)
            if not started:
                started = True
                task_status.started()
            await trio.sleep(self.every)

    async def _round(self) -> None:
        if self.left:
            return
        if self.me is None or self._lease is None or not self._lease.held:
            await self._join()
        elif not await member_store.heartbeat(self.db, self.me):
            log.warning("membership: this process's row was removed (a long stall?); joining again")
            await self._join()
        if await self._read_live():
            self.on_change()
        now = trio.current_time()
        if now - self._last_owned_beat >= self.heartbeat_every:
            await member_store.heartbeat_owned(self.db, self.name, self.locks.backend_pids())
            self._last_owned_beat = now
        cleared = await member_store.clear_dead_owners(self.db)
        if cleared:
            log.info("accounts %s: their owner is gone; marked unowned", ", ".join(map(str, cleared)))
            self.on_change()  # the supervisor republishes them as the table now has them

    async def _read_live(self) -> bool:
        """Read the live members; True when the set changed."""
        live = tuple(await member_store.live(self.db, self.timeout))
        if [m.id for m in live] == [m.id for m in self.members]:
            return False
        log.info("members: %s", ", ".join(f"{m.name} (#{m.id})" for m in live) or "none")
        self.members = live
        return True

    async def refresh(self) -> None:
        """Read the live members now (the supervisor, before it splits the accounts after
        a notification: a process joined or left).  Never raises: on a database error the
        last known members stand."""
        try:
            await self._read_live()
        except DatabaseError as exc:
            log.info("membership: cannot read the members now (%s); using the last known", exc)

    async def _join(self) -> None:
        if self._lease is not None:
            await self._lease.release()
            self._lease = None
        me = await member_store.join(self.db, self.name)
        lease = await self.locks.try_lock(me.id, MEMBER_LOCK_CLASS)
        if lease is None:  # cannot happen for a fresh id; be safe
            raise DatabaseError(f"membership lock {me.id} is held by another session")
        self.me, self._lease = me, lease
        log.info("joined as member #%d (%s)", me.id, me.name)
        await member_store.announce(self.db)

    def beat_owned_now(self) -> None:
        """Write the owned accounts' heartbeat at the next round (an account was taken)."""
        self._last_owned_beat = float("-inf")

    async def leave(self) -> None:
        """Stop counting as a member, and tell the others (shielded, bounded; never raises)."""
        self.left = True
        with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT):
            try:
                if self.me is not None:
                    await member_store.leave(self.db, self.me)
                if self._lease is not None:
                    await self._lease.release()
            except DatabaseError as exc:
                log.warning("membership: leaving: %s (the others notice after %g s)", exc, self.timeout)
        self.members = ()


__all__ = ["Membership"]

"""SQL for the `members` table (the live serve processes) and the owners' truth.

A member counts as live while its row's heartbeat is younger than the timeout and its
membership advisory lock is held (Postgres drops the lock with the session of a process
that died).  `clear_dead_owners` makes the accounts table tell the truth: an account
whose lock nobody holds has no owner, whatever a dead process last wrote.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailbridge.store.db import Db

ACCOUNT_LOCK_CLASS = 0x6D62  # as mailbridge.aio.locks
MEMBER_LOCK_CLASS = 0x6D63

# the advisory locks of this database with the given first key (two-key form: objsubid 2)
_HELD = """SELECT l.objid::bigint AS key FROM pg_locks l
           WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = {cls}
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"""


@dataclass(frozen=True, slots=True, order=True)
class Member:
    """One live serve process."""

    id: int
    name: str  # host:pid


async def join(db: Db, name: str) -> Member:
    """A new member row for this process."""
    member_id = await db.fetchval("INSERT INTO members (name) VALUES ($1) RETURNING id", name)
    return Member(int(member_id), name)


async def heartbeat(db: Db, member: Member) -> bool:
    """Refresh the member's heartbeat; False when its row is gone (removed as dead by
    another process after a long stall): the caller joins again."""
    status = await db.execute("UPDATE members SET heartbeat_at = now() WHERE id = $1", member.id)
    return not status.endswith(" 0")


async def leave(db: Db, member: Member) -> None:
    """Remove the member's row, and tell the other processes at once (they rescan)."""
    await db.execute("DELETE FROM members WHERE id = $1", member.id)
    await db.execute("SELECT pg_notify('mailbridge_accounts', '{\"op\": \"members\"}')")


async def announce(db: Db) -> None:
    """Tell the other processes the membership changed (they rescan now)."""
    await db.execute("SELECT pg_notify('mailbridge_accounts', '{\"op\": \"members\"}')")


async def live(db: Db, timeout: float) -> list[Member]:
    """The live members, by id: a fresh heartbeat and the membership lock held.  Rows
    dead for ten timeouts are deleted on the way."""
    await db.execute("DELETE FROM members WHERE heartbeat_at < now() - make_interval(secs => $1)",
                     timeout * 10)
    rows = await db.fetch(
        f"""SELECT m.id, m.name FROM members m
            WHERE m.heartbeat_at > now() - make_interval(secs => $1)
              AND m.id IN ({_HELD.format(cls=MEMBER_LOCK_CLASS)})
            ORDER BY m.id""", timeout)
    return [Member(int(r["id"]), r["name"]) for r in rows]


async def clear_dead_owners(db: Db) -> list[int]:
    """Accounts recorded as owned whose lock no session holds: owner cleared, health
    `unowned` (with an `account_health` event), in one statement.  Their ids."""
    rows = await db.fetch(
        f"""WITH dead AS (
                SELECT id, owner, health FROM accounts
                WHERE owner IS NOT NULL AND id NOT IN ({_HELD.format(cls=ACCOUNT_LOCK_CLASS)})
                FOR UPDATE SKIP LOCKED),
            upd AS (
                UPDATE accounts a SET owner = NULL, health = 'unowned',
                       health_reason = 'its owner ' || dead.owner || ' is gone; waiting for a process to take it over',
                       health_changed_at = CASE WHEN a.health = 'unowned' THEN a.health_changed_at ELSE now() END
                FROM dead WHERE a.id = dead.id
                RETURNING a.id),
            ev AS (
                INSERT INTO events (account_id, kind, payload)
                SELECT dead.id, 'account_health',
                       jsonb_build_object('health', 'unowned', 'reason', 'its owner ' || dead.owner || ' is gone',
                                          'previous', dead.health)
                FROM dead WHERE dead.health IS DISTINCT FROM 'unowned')
            SELECT id FROM upd ORDER BY id""")
    return [int(r["id"]) for r in rows]


async def heartbeat_owned(db: Db, owner: str, lock_pids: list[int]) -> list[int]:
    """Record `owner` and its heartbeat on every account whose lock one of the backends
    `lock_pids` (the owner's lock connections) holds at this statement's moment, in one
    statement: never on an account whose lock went to another process meanwhile (a truth
    sweep that raced the taking of a lock is undone here).  The ids written."""
    if not lock_pids:
        return []
    rows = await db.fetch(
        f"""UPDATE accounts SET owner = $1, heartbeat_at = now()
            WHERE id IN ({_HELD.format(cls=ACCOUNT_LOCK_CLASS)} AND l.pid = ANY($2::int[]))
            RETURNING id""", owner, lock_pids)
    return sorted(int(r["id"]) for r in rows)


async def record_owner(conn: Db, account_id: int, owner: str | None, *, only_if: str | None = None) -> None:
    """Record `owner` (None: clear it, only where `only_if` is recorded), with the
    heartbeat; run on the lock's own connection, next to taking or releasing the lock."""
    if owner is None:
        await conn.execute("UPDATE accounts SET owner = NULL WHERE id = $1 AND owner = $2", account_id, only_if)
    else:
        await conn.execute("UPDATE accounts SET owner = $2, heartbeat_at = now() WHERE id = $1", account_id, owner)


__all__ = ["Member", "announce", "clear_dead_owners", "record_owner", "heartbeat", "heartbeat_owned", "join", "leave",
           "live"]

"""A lost lock connection stops exactly the actors whose locks it held (in-process
supervisor and actors, real Postgres and Dovecot)."""

from __future__ import annotations

import trio

from tests.support.actors import insert_account, running_supervisor, settings_for, synced


async def lock_backend(db, account_id: int) -> int:
    return await db.fetchval(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2 AND granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())", 0x6D62, account_id)


async def test_losing_one_lock_connection_stops_only_the_actors_on_it(dovecot, db_dsn, encryption_key):
    users = [dovecot.add_user() for _ in range(4)]
    settings = settings_for(db_dsn, encryption_key, MAILBRIDGE_POLL_SECONDS="30")
    async with running_supervisor(db_dsn, settings) as h:
        ids = [await insert_account(h.db, settings, username=u.username, password=u.password, port=dovecot.port)
               for u in users]
        for account_id in ids:
            await h.wait_status(account_id, synced, 30, f"account {account_id}'s first cycle")
        pids = {a: await lock_backend(h.db, a) for a in ids}
        assert len(set(pids.values())) == 2  # four locks on the process's two lock connections
        victim = pids[ids[0]]
        hit = [a for a in ids if pids[a] == victim]
        spared = [a for a in ids if pids[a] != victim]
        await h.db.execute("SELECT pg_terminate_backend($1)", victim)
        for account_id in hit:
            await h.wait_status(account_id, lambda s: s.restarts >= 1, 10, f"account {account_id} to lose its lock")
        for account_id in hit:
            await h.wait_status(account_id, lambda s: s.lock_held and synced(s), 30,
                                f"account {account_id} to take its lock again and sync")
        for account_id in spared:
            status = h.status(account_id)
            assert status is not None and status.restarts == 0 and status.lock_held, status
        assert None not in [await lock_backend(h.db, a) for a in ids]

"""Idle accounts cost little: where the server pushes changes (NOTIFY for every folder
but INBOX, which IDLE watches) a tick sends LIST and visits INBOX, but asks no STATUS of
the other folders; the full cycle runs as a safety net, and what is on its own clock
(reconciles) still runs; changes still arrive within seconds; without NOTIFY, or once
the server stops notifying, the full schedule holds.  Commands are counted by a proxy
in front of real Dovecot; the mirror is real Postgres."""

from __future__ import annotations

import random
from contextlib import asynccontextmanager

import pytest
import trio

from actors import status as st
from mailbridge.testing.imapctl import MailboxClient
from mailbridge.testing.mailgen import make_message
from tests.support.actors import insert_account, running_supervisor, settings_for
from tests.support.dovecot import running_dovecot
from tests.support.imap_proxy import ImapProxy
from tests.support.mirror import fill_small, mirror

QUIET = ("IDLE", "NOOP", "LOGOUT")  # what an idle session may send


@pytest.fixture(scope="module")
def notify_dovecot(tmp_path_factory):
    yield from running_dovecot(tmp_path_factory.mktemp("dovecot-idle-cost"), list_index=True)


@asynccontextmanager
async def watched(dovecot, user, db_dsn, encryption_key, **env: str):
    """(harness, account id, proxy) with the account's actor idling on INBOX, behind a
    counting proxy, and every folder reconciled once (so none is due)."""
    env = {"MAILBRIDGE_POLL_SECONDS": "1", "MAILBRIDGE_COMMANDS_PER_MINUTE": "3000", **env}  # the schedule, unthrottled
    settings = settings_for(db_dsn, encryption_key, **env)
    proxy = ImapProxy("127.0.0.1", dovecot.port)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        async with running_supervisor(db_dsn, settings) as h:
            account_id = await insert_account(h.db, settings, username=user.username, password=user.password,
                                              port=proxy.port)
            await h.wait_status(account_id, lambda s: s.state == st.IDLE and "idling" in s.step, 30, "IDLE")
            with trio.fail_after(20):  # never reconciled: one per tick, on their own clock
                while await h.db.fetchval("SELECT count(*) FROM folders WHERE account_id = $1 AND NOT excluded "
                                          "AND last_reconcile_at IS NULL", account_id):
                    await trio.sleep(0.1)
            await trio.sleep(1.5)
            yield h, account_id, proxy
        nursery.cancel_scope.cancel()


async def idling(h, account_id: int, *, notify: bool) -> None:
    """Until the actor idles on INBOX (between ticks), with NOTIFY or without."""
    await h.wait_status(account_id, lambda s: "idling" in s.step and ("NOTIFY" in s.step) == notify, 5,
                        "IDLE with NOTIFY" if notify else "IDLE without NOTIFY")


def sent_since(proxy: ImapProxy, since: float) -> list[str]:
    return [name for at, _, name in proxy.commands if at >= since and name not in QUIET]


async def wait_rows(db_dsn, account_id, check, what: str, timeout: float = 5.0) -> None:
    with trio.move_on_after(timeout):
        while not check(await mirror(db_dsn, account_id)):
            await trio.sleep(0.05)
        return
    raise AssertionError(f"{what} did not reach the mirror within {timeout:g} s")


async def test_notify_leaves_every_folder_but_inbox_to_the_pushes_and_the_safety_cycle(notify_dovecot, db_dsn,
                                                                                         encryption_key):
    user = notify_dovecot.add_user()
    fill_small(notify_dovecot, user, folders=("INBOX", "Sent", "Archive", "Lists"), per_folder=5)
    async with watched(notify_dovecot, user, db_dsn, encryption_key,
                       MAILBRIDGE_SAFETY_CYCLE_MINUTES="0.25") as (h, account_id, proxy):
        await idling(h, account_id, notify=True)
        cycles, start = h.status(account_id).cycles, trio.current_time()
        await trio.sleep(4)  # four ticks: without NOTIFY, LIST and 3 STATUS each, and a light cycle's
        sent = sent_since(proxy, start)
        assert 3 <= sent.count("LIST") <= 6 and "STATUS" not in sent, sent  # LIST and INBOX only
        assert h.status(account_id).cycles >= cycles + 3

        since = trio.current_time()  # the safety cycle visits every folder, then STATUS rechecks them
        with trio.fail_after(15):
            while sent_since(proxy, since).count("STATUS") < 3:
                await trio.sleep(0.2)

        with MailboxClient(notify_dovecot, user) as client:
            client.append("Archive", make_message(7001, rng=random.Random(1)))
            await wait_rows(db_dsn, account_id, lambda m: len(m["Archive"]) == 6, "new mail in Archive", 3)
            uid = client.uids("Lists")[0]
            client.store("Lists", [uid], add=["\\Flagged"])
            await wait_rows(db_dsn, account_id, lambda m: "\\Flagged" in m["Lists"][uid]["flags"],
                            "a flag change in Lists", 3)


async def test_reconciles_come_on_their_own_clock_under_notify(notify_dovecot, db_dsn, encryption_key):
    user = notify_dovecot.add_user()
    fill_small(notify_dovecot, user, folders=("INBOX", "Archive", "Lists"), per_folder=5)
    async with watched(notify_dovecot, user, db_dsn, encryption_key, MAILBRIDGE_RECONCILE_HOURS="0.001",
                       MAILBRIDGE_RECONCILE_JITTER_MINUTES="0") as (h, account_id, proxy):
        stamp = "SELECT min(last_reconcile_at) FROM folders WHERE account_id = $1 AND NOT excluded"
        before, start = await h.db.fetchval(stamp, account_id), trio.current_time()
        with trio.fail_after(12):  # every 3.6 s, one a tick
            while await h.db.fetchval(stamp, account_id) <= before:
                await trio.sleep(0.2)
        sent = sent_since(proxy, start)
        assert "UID" in " ".join(sent) or "SELECT" in sent, sent  # reconciles ran
        # each tick's LIST; STATUS only to recheck a reconciled folder, once
        assert "LIST" in sent and sent.count("STATUS") <= sent.count("SELECT"), sent


async def test_without_notify_the_other_folders_keep_their_checks(dovecot, db_dsn, encryption_key):
    user = dovecot.add_user()
    fill_small(dovecot, user, folders=("INBOX", "Archive", "Lists"), per_folder=5)
    async with watched(dovecot, user, db_dsn, encryption_key) as (h, account_id, proxy):
        await idling(h, account_id, notify=False)
        start = trio.current_time()
        await trio.sleep(4)
        sent = sent_since(proxy, start)
        # a full and a light cycle a second, IDLE on INBOX notwithstanding
        assert sent.count("LIST") >= 6 and sent.count("STATUS") >= 6, sent
        with MailboxClient(dovecot, user) as client:
            client.append("Archive", make_message(7101, rng=random.Random(2)))
            await wait_rows(db_dsn, account_id, lambda m: len(m["Archive"]) == 6, "new mail in Archive", 3)
            client.append("INBOX", make_message(7102, rng=random.Random(3)))
            await wait_rows(db_dsn, account_id, lambda m: len(m["INBOX"]) == 6, "new mail in INBOX", 3)


async def test_a_server_that_stops_notifying_gets_todays_schedule_back(notify_dovecot, db_dsn, encryption_key):
    user = notify_dovecot.add_user()
    fill_small(notify_dovecot, user, folders=("INBOX", "Archive"), per_folder=5)
    async with watched(notify_dovecot, user, db_dsn, encryption_key,
                       MAILBRIDGE_SAFETY_CYCLE_MINUTES="10") as (h, account_id, proxy):
        await idling(h, account_id, notify=True)
        armed = True

        def overflow(chunk: bytes) -> bytes:  # the next IDLE is told NOTIFY stopped
            nonlocal armed
            if armed and b"+ idling" in chunk:
                armed = False
                return chunk + b"* OK [NOTIFICATIONOVERFLOW] too many notifications\r\n"
            return chunk

        proxy.rewrite = overflow
        cycles = h.status(account_id).cycles
        with MailboxClient(notify_dovecot, user) as client:  # a push: the visit, then a new IDLE
            client.append("INBOX", make_message(7201, rng=random.Random(4)))
        await h.wait_status(account_id, lambda s: s.cycles > cycles and "idling" in s.step
                            and "NOTIFY" not in s.step, 5, "a full cycle at once, then IDLE without NOTIFY")
        start = trio.current_time()
        await trio.sleep(4)
        sent = sent_since(proxy, start)
        assert sent.count("LIST") >= 3 and sent.count("STATUS") >= 3, sent  # the full schedule

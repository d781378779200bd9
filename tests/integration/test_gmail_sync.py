"""Gmail's model in the sync, the store and the API, against the Gmail-behaving test
server (`mailbridge.testing.gmail`, a real TCP peer) and real Postgres; RFC 8474 OBJECTID
against Cyrus.

- `sync --once` (the CLI) stores each message once, from ``[Gmail]/All Mail``, with its
  labels, X-GM-MSGID (`email_id`) and X-GM-THRID (`provider_thread_id`); label folders are
  views (rows in `folders`, excluded, `gmail_view` set), never selected;
- a label added or removed reaches the mirror on the next visit, and under the actors
  (IDLE on All Mail) within 5 s, as a `message_changed` event carrying the labels;
- ``GET /accounts/{id}/messages?folder=INBOX`` (and Sent, Starred, a user label, All Mail)
  lists exactly what the server's view holds;
- the IMAP commands of a sync do not grow with the number of labels;
- `mailbridge verify` passes.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterator

import pytest
import trio

from mailbridge.aio.db import Database
from mailbridge.store import messages as message_store
from mailbridge.testing.gmail import GmailServer, running_gmail
from mailbridge.testing.imapctl import MailboxClient
from mailbridge.testing.mailgen import make_message
from tests.e2e.support import all_messages, api_settings, running_api, wait_synced
from tests.integration.test_other_servers import _running
from tests.support.actors import insert_account
from tests.support.cli import run_cli
from tests.support.mirror import base_env
from tests.support.rows import meta

ALL_MAIL = "[Gmail]/All Mail"


def raw(n: int, subject: str | None = None) -> bytes:
    return (f"Message-ID: <m{n}@example.org>\r\nSubject: {subject or f'message {n}'}\r\n"
            f"From: Ann <ann@example.org>\r\nTo: bob@example.org\r\n"
            f"Date: Mon, 1 Jan 2024 10:{n % 60:02d}:00 +0000\r\n\r\nbody {n}\r\n").encode()


@pytest.fixture
def gmail() -> Iterator[GmailServer]:
    with running_gmail() as server:
        yield server


def fill(gmail: GmailServer, labels: int = 2) -> dict[str, int]:
    """A small mailbox: INBOX + user labels, Sent, Important, Starred, Draft, Trash, Spam;
    `labels` user labels in all (each used by one message at least)."""
    ids = {
        "inbox_work": gmail.add_message(raw(1), ("\\Inbox", "Work")),
        "inbox": gmail.add_message(raw(2), ("\\Inbox", "\\Important"), ("\\Seen",)),
        "sent": gmail.add_message(raw(3), ("\\Sent",), ("\\Seen",)),
        "starred": gmail.add_message(raw(4), ("Work/Clients",), ("\\Flagged",)),
        "draft": gmail.add_message(raw(5), ("\\Draft",)),
        "trash": gmail.add_message(raw(6), ("\\Trash",)),
        "spam": gmail.add_message(raw(7), ("\\Spam",)),
    }
    for i in range(labels - 2):
        gmail.add_label(ids["draft"], f"Extra {i:02d}")
    return ids


def add_gmail_account(env: dict[str, str], gmail: GmailServer) -> int:
    result = run_cli("accounts", "add", "--email", gmail.user, "--host", "127.0.0.1", "--port", str(gmail.port),
                     "--tls", "none", "--username", gmail.user, "--password-stdin", env=env,
                     input=gmail.password + "\n")
    assert result.code == 0, result.err
    return int(result.last_line)


def sync_once(env: dict[str, str]) -> None:
    result = run_cli("sync", "--once", env=env, timeout=120)
    assert result.code == 0, result.err
    assert "Traceback" not in result.err, result.err


async def rows(db_dsn: str, account_id: int) -> dict[str, dict]:
    """The account's message rows by email_id."""
    async with Database.connect(db_dsn) as db:
        found = await db.fetch(
            """SELECT f.name AS folder, m.uid, m.message_id, m.email_id, m.provider_thread_id, m.labels, m.flags
               FROM messages m JOIN folders f ON f.id = m.folder_id WHERE m.account_id = $1""", account_id)
    out: dict[str, dict] = {}
    for r in found:
        assert r["email_id"] not in out, f"stored twice: {r['email_id']}"
        out[r["email_id"]] = dict(r)
    return out


def server_labels(gmail: GmailServer, msgid: int) -> set[str]:
    with gmail.store.lock:
        return set(gmail.store.messages[msgid].labels)


async def test_sync_once_stores_each_message_once_with_labels_and_gmail_ids(gmail, db_dsn, encryption_key,
                                                                            tmp_path):
    ids = fill(gmail)
    env = base_env(db_dsn, encryption_key, tmp_path)
    account_id = add_gmail_account(env, gmail)
    gmail.commands.clear()
    sync_once(env)
    commands = Counter(gmail.commands)
    assert commands["STATUS"] == 0, commands

    mirrored = await rows(db_dsn, account_id)
    all_mail = gmail.store.view_uids(ALL_MAIL)
    # All Mail only: Trash and Spam are excluded by default, as on every server
    assert set(mirrored) == {str(i) for i in all_mail}
    for msgid, uid in all_mail.items():
        row = mirrored[str(msgid)]
        assert row["folder"] == ALL_MAIL and row["uid"] == uid
        assert set(row["labels"]) == server_labels(gmail, msgid)
        assert row["provider_thread_id"] == str(gmail.store.messages[msgid].thrid)
    inbox_work = mirrored[str(ids["inbox_work"])]
    assert set(inbox_work["labels"]) == {"\\Inbox", "Work"} and inbox_work["message_id"] == "m1@example.org"

    async with Database.connect(db_dsn) as db:
        folders = {r["name"]: dict(r) for r in await db.fetch(
            "SELECT name, special_use, excluded, is_priority, gmail_view, uidvalidity FROM folders "
            "WHERE account_id = $1", account_id)}
    assert folders[ALL_MAIL]["gmail_view"] is None and not folders[ALL_MAIL]["excluded"]
    assert folders[ALL_MAIL]["is_priority"]
    assert {n: f["gmail_view"] for n, f in folders.items() if f["gmail_view"] is not None} == {
        "INBOX": "\\Inbox", "[Gmail]/Sent Mail": "\\Sent", "[Gmail]/Drafts": "\\Draft",
        "[Gmail]/Important": "\\Important", "[Gmail]/Starred": "\\Flagged", "Work": "Work",
        "Work/Clients": "Work/Clients"}
    # the views are never selected: no UIDVALIDITY stored
    assert all(f["excluded"] and f["uidvalidity"] is None for f in folders.values() if f["gmail_view"])
    assert folders["[Gmail]/Trash"]["gmail_view"] is None and folders["[Gmail]/Trash"]["excluded"]

    # a label folder mirrored before it was known to be a view (as by an older version):
    # its rows go at the next LIST, so no message is listed twice
    async with Database.connect(db_dsn) as db:
        inbox_id = await db.fetchval("SELECT id FROM folders WHERE account_id = $1 AND name = 'INBOX'", account_id)
        await db.execute("UPDATE folders SET uidvalidity = 7, initial_low_uid = 1, synced_high_uid = 1 "
                         "WHERE id = $1", inbox_id)
        await message_store.upsert(db, account_id, inbox_id, [meta(1, "stale copy")], emit_events=False)
        last_event = await db.fetchval("SELECT coalesce(max(id), 0) FROM events")

    # a label added and one removed at the server: the next visit brings both
    gmail.add_label(ids["inbox_work"], "Later")
    gmail.remove_label(ids["inbox"], "\\Inbox")
    sync_once(env)
    mirrored = await rows(db_dsn, account_id)  # (each email_id once: the stale copy went)
    assert {r["folder"] for r in mirrored.values()} == {ALL_MAIL}
    assert set(mirrored[str(ids["inbox_work"])]["labels"]) == {"\\Inbox", "Work", "Later"}
    assert set(mirrored[str(ids["inbox"])]["labels"]) == {"\\Important"}
    async with Database.connect(db_dsn) as db:
        events = await db.fetch("SELECT kind, payload FROM events WHERE id > $1 AND account_id = $2 ORDER BY id",
                                last_event, account_id)
    changed = [e for e in events if e["kind"] == "message_changed"]
    assert len(changed) == 2, events
    payloads = [json.loads(e["payload"]) if isinstance(e["payload"], str) else e["payload"] for e in changed]
    assert sorted(sorted(p["labels"]) for p in payloads) == [["Later", "Work", "\\Inbox"], ["\\Important"]]

    # verify compares the mirrored folders only, and finds no drift
    result = run_cli("verify", str(account_id), env=env, timeout=120)
    assert result.code == 0, result.out + result.err


async def test_imap_commands_per_sync_do_not_grow_with_labels(db_dsn, encryption_key, tmp_path):
    """The same messages under 2 and under 20 user labels: the same commands, initial
    sync and steady state (LIST lists 20 folders more; nothing else changes)."""
    seen: dict[int, tuple[list[str], list[str]]] = {}
    for labels in (2, 20):
        with running_gmail() as gmail:
            fill(gmail, labels=labels)
            env = base_env(db_dsn, encryption_key, tmp_path / str(labels))
            account_id = add_gmail_account(env, gmail)
            gmail.commands.clear()
            sync_once(env)
            first = list(gmail.commands)
            gmail.commands.clear()
            sync_once(env)
            seen[labels] = (first, list(gmail.commands))
            run_cli("accounts", "remove", str(account_id), env=env)
    assert seen[2] == seen[20], seen
    first, steady = seen[20]
    assert "STATUS" not in first + steady
    assert Counter(steady)["SELECT"] == 1, steady  # All Mail only


async def test_serve_label_changes_reach_the_mirror_within_5_s_and_api_answers_gmails_views(
        gmail, db_dsn, encryption_key):
    ids = fill(gmail)
    settings = api_settings(db_dsn, encryption_key, MAILBRIDGE_POLL_SECONDS="60")
    async with running_api(db_dsn, settings) as api:
        account_id = await insert_account(api.harness.db, settings, username=gmail.user, password=gmail.password,
                                          port=gmail.port)
        await wait_synced(api, account_id)
        status = api.harness.status(account_id)
        assert status is not None

        async def views_match() -> None:
            for folder in ("INBOX", "[Gmail]/Sent Mail", "[Gmail]/Starred", "[Gmail]/Important", "Work",
                           "Work/Clients", "[Gmail]/Drafts", ALL_MAIL):
                listed = await all_messages(api.http, account_id, folder=folder)
                want = {str(i) for i in gmail.store.view_uids(folder)}
                assert {m["email_id"] for m in listed} == want, folder
                assert len(listed) == len(want), folder
            labelled = await all_messages(api.http, account_id, label="Work")
            assert {m["email_id"] for m in labelled} == {str(i) for i in gmail.store.view_uids("Work")}

        await views_match()
        message = (await all_messages(api.http, account_id, folder="INBOX", label="Work"))[0]
        assert message["email_id"] == str(ids["inbox_work"]) and set(message["labels"]) == {"\\Inbox", "Work"}
        assert message["provider_thread_id"] == str(ids["inbox_work"]) and message["folder"] == ALL_MAIL
        folders = {f["name"]: f for f in (await api.http.ok("GET", f"/accounts/{account_id}/folders"))["folders"]}
        assert folders["INBOX"]["gmail_view"] == "\\Inbox"
        assert folders["INBOX"]["messages"] == len(gmail.store.view_uids("INBOX"))
        assert folders["INBOX"]["unread"] == 1
        for name in ("[Gmail]/Starred", "Work", "Work/Clients", "[Gmail]/Sent Mail", ALL_MAIL):
            assert folders[name]["messages"] == len(gmail.store.view_uids(name)), name

        async def label_row(msgid: int) -> set[str] | None:
            got = await api.harness.db.fetchval("SELECT labels FROM messages WHERE email_id = $1", str(msgid))
            return None if got is None else set(got)

        async def until(predicate, what: str, timeout: float = 5.0) -> float:
            start = trio.current_time()
            with trio.move_on_after(timeout):
                while not await predicate():
                    await trio.sleep(0.05)
                return trio.current_time() - start
            raise AssertionError(f"{what}: not in the mirror after {timeout} s")

        await api.harness.wait_for(lambda: bool(gmail.idled), 10, "an IDLE")
        # the actor watches All Mail (INBOX is a view) and never selects a view
        assert set(gmail.idled) == {ALL_MAIL}, gmail.idled
        assert set(gmail.selected) <= {ALL_MAIL, "[Gmail]/Trash", "[Gmail]/Spam"}, gmail.selected
        assert "STATUS" not in gmail.commands
        gmail.add_label(ids["sent"], "Receipts")
        added = await until(lambda: _has(label_row, ids["sent"], "Receipts"), "label added")
        gmail.remove_label(ids["inbox_work"], "\\Inbox")
        removed = await until(lambda: _lacks(label_row, ids["inbox_work"], "\\Inbox"), "label removed")
        new = gmail.add_message(raw(50), ("\\Inbox", "Receipts"))
        arrived = await until(lambda: _has(label_row, new, "Receipts"), "new message")
        gmail.add_label(ids["starred"], "\\Trash")  # to Trash: it leaves All Mail (Trash is excluded)

        async def trashed() -> bool:
            return await api.harness.db.fetchval(
                "SELECT count(*) FROM messages WHERE email_id = $1", str(ids["starred"])) == 0

        gone = await until(trashed, "message moved to Trash")
        print(f"gmail freshness: label added {added:.2f} s, label removed {removed:.2f} s, new mail {arrived:.2f} s, "
              f"moved to Trash {gone:.2f} s")
        await views_match()
        assert set(gmail.idled) == {ALL_MAIL} and "STATUS" not in gmail.commands
        listed = await all_messages(api.http, account_id, folder="INBOX")
        assert str(ids["inbox_work"]) not in {m["email_id"] for m in listed}


async def _has(row, msgid: int, label: str) -> bool:
    labels = await row(msgid)
    return labels is not None and label in labels


async def _lacks(row, msgid: int, label: str) -> bool:
    labels = await row(msgid)
    return labels is not None and label not in labels


@pytest.fixture(scope="module")
def cyrus():
    yield from _running(__import__("mailbridge.testing.servers", fromlist=["CyrusServer"]).CyrusServer)


async def test_cyrus_objectid_lands_in_email_id_and_provider_thread_id(cyrus, db_dsn, encryption_key, tmp_path):
    user = cyrus.add_user()
    with MailboxClient(cyrus, user) as client:
        caps = set(client.capabilities)
        if "OBJECTID" not in caps:
            pytest.skip(f"this Cyrus build does not offer OBJECTID (RFC 8474); its CAPABILITY: {sorted(caps)}")
        for n in range(3):
            client.append("INBOX", make_message(40_000 + n, rng=random.Random(n)))
        uids = client.uids("INBOX")
        client.select("INBOX", readonly=True)
        typ, data = client.imap.uid("FETCH", "1:*", "(UID EMAILID THREADID)")
        assert typ == "OK", data
    truth = {}
    for line in data:
        text = line.decode() if isinstance(line, bytes) else str(line)
        m = re.search(r"UID (\d+)", text)
        e = re.search(r"EMAILID \(([^)]+)\)", text)
        t = re.search(r"THREADID \(([^)]+)\)", text)
        if m and e:
            thread = t.group(1) if t else None
            truth[int(m.group(1))] = (e.group(1), None if thread in (None, "NIL") else thread)
    assert set(truth) == set(uids), data
    # Cyrus gives THREADID only with `conversations: 1` in imapd.conf (the harness's Cyrus
    # runs without it: THREADID is NIL, so provider_thread_id stays NULL -- said, not skipped)
    threads = {thread for _, thread in truth.values()}
    print(f"cyrus OBJECTID: EMAILID given; THREADID {'NIL (no conversations)' if threads == {None} else 'given'}")
    env = base_env(db_dsn, encryption_key, tmp_path)
    result = run_cli("accounts", "add", "--email", f"{user.username}@example.test", "--host", "127.0.0.1",
                     "--port", str(cyrus.port), "--tls", "none", "--username", user.username,
                     "--password-stdin", env=env, input=user.password + "\n")
    assert result.code == 0, result.err
    account_id = int(result.last_line)
    sync_once(env)
    async with Database.connect(db_dsn) as db:
        found = await db.fetch(
            """SELECT m.uid, m.email_id, m.provider_thread_id, m.labels FROM messages m
               JOIN folders f ON f.id = m.folder_id WHERE m.account_id = $1 AND f.name = 'INBOX'""", account_id)
    assert {r["uid"]: (r["email_id"], r["provider_thread_id"]) for r in found} == truth
    assert all(r["labels"] is None for r in found)

"""Write-back through the owning actor over real HTTP (real Dovecot, real Postgres): flags,
move, delete to Trash, permanent delete, their batch forms; the server shows each change
(read back with a raw IMAP client), the mirror shows it when the call returns, and the
events say origin "api"; with and without MOVE (and without UIDPLUS); 409 from a process
that does not own the account; answers during an initial sync."""

from __future__ import annotations

import json
import math
import os
import sys

import pytest
import trio

from mailbridge.testing.imapctl import MailboxClient
from mailbridge.testing.mailgen import MaildirWriter, corpus
from tests.e2e.support import TOKEN, api_settings, running_api, wait_synced
from tests.support.actors import insert_account
from tests.support.dovecot import running_dovecot


@pytest.fixture(scope="module")
def no_move_dovecot(tmp_path_factory):
    yield from running_dovecot(tmp_path_factory.mktemp("dovecot-nomove"), disable_capabilities=("MOVE",))


@pytest.fixture(scope="module")
def bare_dovecot(tmp_path_factory):
    """Neither MOVE nor UIDPLUS advertised: only a plain EXPUNGE can remove messages."""
    yield from running_dovecot(tmp_path_factory.mktemp("dovecot-bare"), disable_capabilities=("MOVE", "UIDPLUS"))


def fill(dovecot, user, inbox=6, archive=3) -> None:
    with MailboxClient(dovecot, user) as client:
        client.create("Archive")
        client.create("Trash")  # special-use \Trash in the test Dovecot's config
        client.append_many("INBOX", list(corpus(inbox, seed=11, folder_hint="INBOX")))
        client.append_many("Archive", list(corpus(archive, seed=12, folder_hint="Archive")))


async def rows(api, account_id, folder):
    return await api.harness.db.fetch(
        """SELECT m.id, m.uid, m.flags, m.message_id FROM messages m JOIN folders f ON f.id = m.folder_id
           WHERE m.account_id = $1 AND f.name = $2 ORDER BY m.uid""", account_id, folder)


async def events_for(api, message_id):
    out = []
    for e in await api.harness.db.fetch("SELECT kind, payload FROM events WHERE payload->>'message' = $1 ORDER BY id",
                                        str(message_id)):
        payload = e["payload"] if isinstance(e["payload"], dict) else json.loads(e["payload"])
        out.append((e["kind"], payload))
    return out


async def start(api, dovecot, user) -> int:
    account_id = await insert_account(api.harness.db, api.harness.settings, username=user.username,
                                      password=user.password, port=dovecot.port)
    await wait_synced(api, account_id)
    return account_id


async def check_move_and_deletes(api, dovecot, user, account_id) -> None:
    http = api.http
    inbox = await rows(api, account_id, "INBOX")
    first = inbox[0]
    # move INBOX → Archive: same id, new uid from COPYUID, visible at once
    answer = await http.ok("POST", f"/messages/{first['id']}/move", json={"folder": "Archive"})
    assert answer["moved"] and answer["folder"] == "Archive" and answer["message"]["folder"] == "Archive"
    new_uid = answer["message"]["uid"]
    with MailboxClient(dovecot, user) as client:
        assert first["uid"] not in client.uids("INBOX")
        assert new_uid in client.uids("Archive")
    archive = await rows(api, account_id, "Archive")
    assert [r["uid"] for r in archive if r["id"] == first["id"]] == [new_uid]
    assert first["id"] not in [r["id"] for r in await rows(api, account_id, "INBOX")]
    kinds = await events_for(api, first["id"])
    moved = [p for k, p in kinds if k == "message_moved"]
    assert moved and moved[-1]["origin"] == "api" and moved[-1]["from_uid"] == first["uid"] \
        and moved[-1]["to_uid"] == new_uid and moved[-1]["to_folder"] == "Archive"

    # DELETE → Trash (excluded from the mirror by default: the row leaves it)
    second = inbox[1]
    answer = await http.ok("DELETE", f"/messages/{second['id']}")
    assert answer["folder"] == "Trash" and answer["message"] is None and answer["permanent"] is False
    with MailboxClient(dovecot, user) as client:
        assert second["uid"] not in client.uids("INBOX")
        assert len(client.uids("Trash")) == 1
    assert (await http.get(f"/messages/{second['id']}")).status == 404
    removed = [p for k, p in await events_for(api, second["id"]) if k == "message_removed"]
    assert removed[-1]["origin"] == "api" and removed[-1]["moved_to"] == "Trash"

    # permanent delete: expunged, only that one
    third = inbox[2]
    before = set(r["uid"] for r in await rows(api, account_id, "INBOX"))
    await http.ok("DELETE", f"/messages/{third['id']}", params={"permanent": "1"})
    with MailboxClient(dovecot, user) as client:
        assert set(client.uids("INBOX")) == before - {third["uid"]}
    assert (await http.get(f"/messages/{third['id']}")).status == 404
    removed = [p for k, p in await events_for(api, third["id"]) if k == "message_removed"]
    assert removed[-1]["origin"] == "api" and "moved_to" not in removed[-1]

    # the next visits of both folders bring no duplicate and no second event
    await trio.sleep(1.5)  # poll ticks every 0.5 s in the test settings
    archive_after = await rows(api, account_id, "Archive")
    assert len(archive_after) == len({r["uid"] for r in archive_after}) == len(archive)
    assert [k for k, _ in await events_for(api, first["id"])].count("message_moved") == 1
    assert [k for k, _ in await events_for(api, first["id"])].count("message_added") == 0  # initial sync: none
    # every event about it came from the API's writes: the visits after them found nothing new
    assert all(p.get("origin") == "api" for _, p in await events_for(api, first["id"])), \
        await events_for(api, first["id"])


async def test_flags_move_and_delete_through_the_owning_actor(db_dsn, encryption_key, dovecot, mail_user):
    fill(dovecot, mail_user)
    settings = api_settings(db_dsn, encryption_key)
    async with running_api(db_dsn, settings) as api:
        account_id = await start(api, dovecot, mail_user)
        http = api.http
        m = (await rows(api, account_id, "INBOX"))[0]

        answer = await http.ok("POST", f"/messages/{m['id']}/flags", json={"add": ["\\seen", "$Work", "\\Flagged"]})
        assert set(answer["flags"]) >= {"\\Seen", "$Work", "\\Flagged"} and not answer["unread"]
        with MailboxClient(dovecot, mail_user) as client:
            assert {"\\Seen", "$Work", "\\Flagged"} <= set(client.flags("INBOX")[m["uid"]])
        row = await api.harness.db.fetchrow("SELECT flags FROM messages WHERE id = $1", m["id"])
        assert {"\\Seen", "$Work", "\\Flagged"} <= set(row["flags"])
        answer = await http.ok("POST", f"/messages/{m['id']}/flags", json={"remove": ["\\Flagged", "$Work"]})
        assert "\\Flagged" not in answer["flags"] and "$Work" not in answer["flags"] and "\\Seen" in answer["flags"]
        with MailboxClient(dovecot, mail_user) as client:
            assert set(client.flags("INBOX")[m["uid"]]) & {"\\Flagged", "$Work"} == set()
        changed = [p for k, p in await events_for(api, m["id"]) if k == "message_changed"]
        assert len(changed) == 2 and all(p["origin"] == "api" for p in changed)

        # refused input names the bad one; nothing reaches the server
        for body, field in (({"add": ["\\Recent"]}, "add[0]"), ({"add": ["ok", "bad word"]}, "add[1]"),
                            ({"remove": ["\\Bogus"]}, "remove[0]"), ({}, "body")):
            reply = await http.request("POST", f"/messages/{m['id']}/flags", json=body)
            assert reply.status == 422 and field in reply.json()["error"]["fields"], (body, reply)
        assert (await http.request("POST", "/messages/999999/flags", json={"add": ["\\Seen"]})).status == 404
        reply = await http.request("POST", f"/messages/{m['id']}/move", json={"folder": "Nowhere"})
        assert reply.status == 422 and reply.json()["error"]["code"] == "folder_not_found"
        # a Gmail label folder is a view over All Mail: a move there would only add the label
        db = api.harness.db
        await db.execute("UPDATE folders SET gmail_view = 'Work' WHERE account_id = $1 AND name = 'Archive'",
                         account_id)
        reply = await http.request("POST", f"/messages/{m['id']}/move", json={"folder": "Archive"})
        assert reply.status == 422 and reply.json()["error"]["code"] == "gmail_label", reply
        await db.execute("UPDATE folders SET gmail_view = NULL WHERE account_id = $1 AND name = 'Archive'",
                         account_id)

        # batch: flags on many (two folders), one unknown id
        ids = [r["id"] for r in (await rows(api, account_id, "INBOX"))[3:]] + \
              [r["id"] for r in await rows(api, account_id, "Archive")]
        answer = await http.ok("POST", "/messages/flags", json={"ids": ids + [999999], "add": ["\\Answered"]})
        statuses = {r["id"]: r["status"] for r in answer["results"]}
        assert statuses.pop(999999) == 404 and set(statuses.values()) == {200}
        with MailboxClient(dovecot, mail_user) as client:
            assert all("\\Answered" in f for f in client.flags("Archive").values())

        await check_move_and_deletes(api, dovecot, mail_user, account_id)

        # batch move and delete
        rest = [r["id"] for r in await rows(api, account_id, "INBOX")][:2]
        answer = await http.ok("POST", "/messages/move", json={"ids": rest, "folder": "Archive"})
        assert all(r["status"] == 200 and r["message"]["folder"] == "Archive" for r in answer["results"])
        assert all(r["moved"] for r in answer["results"])
        again = await http.ok("POST", "/messages/move", json={"ids": rest, "folder": "Archive"})
        assert [(r["status"], r["moved"]) for r in again["results"]] == [(200, False), (200, False)]
        reply = await http.request("POST", "/messages/move", json={"ids": rest, "folder": "Nowhere"})
        assert reply.status == 200 and {r["status"] for r in reply.json()["results"]} == {422}
        answer = await http.ok("POST", "/messages/delete", json={"ids": rest, "permanent": True})
        assert all(r["status"] == 200 and r["permanent"] for r in answer["results"])
        with MailboxClient(dovecot, mail_user) as client:
            archived = set(client.uids("Archive"))
        assert archived == {r["uid"] for r in await rows(api, account_id, "Archive")}


async def test_move_without_move_copies_deletes_and_expunges_only_those(db_dsn, encryption_key, no_move_dovecot):
    user = no_move_dovecot.add_user()
    fill(no_move_dovecot, user)
    settings = api_settings(db_dsn, encryption_key)
    async with running_api(db_dsn, settings) as api:
        account_id = await start(api, no_move_dovecot, user)
        inbox = await rows(api, account_id, "INBOX")
        with MailboxClient(no_move_dovecot, user) as client:
            client.store("INBOX", [inbox[-1]["uid"]], add=["\\Deleted"])  # someone else's: must survive
        await check_move_and_deletes(api, no_move_dovecot, user, account_id)
        with MailboxClient(no_move_dovecot, user) as client:
            assert inbox[-1]["uid"] in client.uids("INBOX")


async def test_without_uidplus_a_write_that_would_expunge_others_is_refused(db_dsn, encryption_key, bare_dovecot):
    user = bare_dovecot.add_user()
    fill(bare_dovecot, user)
    settings = api_settings(db_dsn, encryption_key)
    async with running_api(db_dsn, settings) as api:
        account_id = await start(api, bare_dovecot, user)
        inbox = await rows(api, account_id, "INBOX")
        with MailboxClient(bare_dovecot, user) as client:
            client.store("INBOX", [inbox[-1]["uid"]], add=["\\Deleted"])
        for method, path, body in (("POST", f"/messages/{inbox[0]['id']}/move", {"folder": "Archive"}),
                                   ("DELETE", f"/messages/{inbox[0]['id']}?permanent=1", None)):
            reply = await api.http.request(method, path, json=body)
            assert reply.status == 409 and "UIDPLUS" in reply.json()["error"]["message"], reply
        with MailboxClient(bare_dovecot, user) as client:
            assert set(client.uids("INBOX")) == {r["uid"] for r in inbox}
            assert client.uids("Archive") == [r["uid"] for r in await rows(api, account_id, "Archive")]
            client.store("INBOX", [inbox[-1]["uid"]], remove=["\\Deleted"])
        # with no other \Deleted message, the plain EXPUNGE is safe
        answer = await api.http.ok("POST", f"/messages/{inbox[0]['id']}/move", json={"folder": "Archive"})
        assert answer["moved"]
        with MailboxClient(bare_dovecot, user) as client:
            assert set(client.uids("INBOX")) == {r["uid"] for r in inbox[1:]}


async def test_a_process_that_does_not_own_the_account_answers_409_naming_the_owner(db_dsn, encryption_key,
                                                                                 dovecot, mail_user):
    settings = api_settings(db_dsn, encryption_key)
    async with running_api(db_dsn, settings) as api:
        db = api.harness.db
        account_id = await insert_account(db, settings, username=mail_user.username, password=mail_user.password,
                                          port=dovecot.port)
        # another process syncs it: this one runs no actor for it (disabled here), the owner row names it
        await db.execute("UPDATE accounts SET enabled = false, owner = 'elsewhere:4242' WHERE id = $1", account_id)
        await trio.sleep(1.0)
        folder_id = await db.fetchval(
            "INSERT INTO folders (account_id, name, raw_name, uidvalidity) VALUES ($1, 'INBOX', 'INBOX', 1) "
            "RETURNING id", account_id)
        message_id = await db.fetchval(
            "INSERT INTO messages (account_id, folder_id, uid) VALUES ($1, $2, 7) RETURNING id", account_id, folder_id)
        await db.execute("UPDATE accounts SET owner = 'elsewhere:4242' WHERE id = $1", account_id)
        for method, path, body in (("POST", f"/messages/{message_id}/flags", {"add": ["\\Seen"]}),
                                   ("POST", f"/messages/{message_id}/move", {"folder": "INBOX"}),
                                   ("DELETE", f"/messages/{message_id}?permanent=1", None)):
            reply = await api.http.request(method, path, json=body)
            if body == {"folder": "INBOX"}:
                assert reply.status == 200 and reply.json()["moved"] is False  # already there: nothing to do
                continue
            assert reply.status == 409 and "elsewhere:4242" in reply.json()["error"]["message"], reply
        answer = await api.http.ok("POST", "/messages/flags", json={"ids": [message_id], "add": ["\\Seen"]})
        assert answer["results"][0]["status"] == 409


async def test_writes_answer_quickly_during_a_20000_message_initial_sync(db_dsn, encryption_key, dovecot,
                                                                          mail_user):
    """Flag writes one after another while INBOX's initial sync runs (batches of 500, the
    throttle out of the way: the actor's turn-taking is measured, not the rate limit)."""
    MaildirWriter().write(mail_user, "INBOX", corpus(20_000, seed=21, folder_hint="INBOX"))
    settings = api_settings(db_dsn, encryption_key, MAILBRIDGE_BATCH_SIZE="500",
                            MAILBRIDGE_COMMANDS_PER_MINUTE="100000")
    took: list[float] = []
    async with running_api(db_dsn, settings) as api:
        db = api.harness.db
        account_id = await insert_account(db, settings, username=mail_user.username, password=mail_user.password,
                                          port=dovecot.port)
        with trio.fail_after(60):
            while not await db.fetchval("SELECT count(*) FROM messages WHERE account_id = $1", account_id):
                await trio.sleep(0.02)

        async def syncing() -> bool:
            return not await db.fetchval(
                "SELECT initial_sync_complete FROM folders WHERE account_id = $1 AND name = 'INBOX'", account_id)

        i = 0
        with trio.fail_after(120):
            while await syncing():
                ids = [r["id"] for r in await db.fetch(
                    "SELECT id FROM messages WHERE account_id = $1 ORDER BY id DESC LIMIT 200", account_id)]
                target = ids[(i * 37) % len(ids)]
                flag = ("\\Seen", "\\Flagged", "$Bench")[i % 3]
                t0 = trio.current_time()
                reply = await api.http.request("POST", f"/messages/{target}/flags", json={"add": [flag]})
                took.append(trio.current_time() - t0)
                assert reply.status == 200, reply
                assert flag in reply.json()["flags"]
                row = await db.fetchrow("SELECT flags FROM messages WHERE id = $1", target)
                assert flag in row["flags"]  # the mirror shows it when the call returns
                i += 1
    assert len(took) >= 5, f"the initial sync ended after {len(took)} writes"
    took.sort()
    p50, p99 = took[len(took) // 2], took[min(len(took) - 1, math.ceil(len(took) * 0.99) - 1)]
    print(f"writes during a 20,000-message initial sync: n={len(took)} p50={p50:.3f}s p99={p99:.3f}s "
          f"max={took[-1]:.3f}s")
    assert p99 <= 2.0, took


async def run_cli(url, *args, token=TOKEN):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILBRIDGE_", "DATABASE_URL", "PORT"))}
    if token is not None:
        env["MAILBRIDGE_API_TOKEN"] = token
    done = await trio.run_process([sys.executable, "-m", "mailbridge", "messages", *args, "--url", url],
                                  env=env, capture_stdout=True, capture_stderr=True, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_the_cli_writes_through_the_running_serve(db_dsn, encryption_key, dovecot, mail_user):
    fill(dovecot, mail_user, inbox=4, archive=1)
    settings = api_settings(db_dsn, encryption_key)
    async with running_api(db_dsn, settings) as api:
        account_id = await start(api, dovecot, mail_user)
        inbox = await rows(api, account_id, "INBOX")
        a, b, c, d = (r["id"] for r in inbox)
        code, out, err = await run_cli(api.url, "flag", str(a), str(b), "--add", "\\Seen", "--add", "$Script")
        assert code == 0, err
        assert [line.split("\t")[:3] for line in out.splitlines()] == [[str(a), "ok", "INBOX"], [str(b), "ok", "INBOX"]]
        with MailboxClient(dovecot, mail_user) as client:
            flags = client.flags("INBOX")
        assert {"\\Seen", "$Script"} <= set(flags[inbox[0]["uid"]]) and {"\\Seen", "$Script"} <= set(flags[inbox[1]["uid"]])

        code, out, err = await run_cli(api.url, "move", str(a), "--folder", "Archive")
        assert code == 0 and out.split("\t")[:3] == [str(a), "ok", "Archive"], (out, err)
        code, out, err = await run_cli(api.url, "delete", str(b), "999999")  # to Trash; one unknown id
        assert code == 1 and out.splitlines()[0].startswith(f"{b}\tok\tTrash") and "999999\t404" in out, (out, err)
        code, out, err = await run_cli(api.url, "delete", str(c), "--permanent", "--json")
        assert code == 0 and json.loads(out)["results"][0]["permanent"] is True, (out, err)
        with MailboxClient(dovecot, mail_user) as client:
            assert client.uids("INBOX") == [inbox[3]["uid"]] and len(client.uids("Trash")) == 1

        code, out, err = await run_cli(api.url, "flag", str(d), "--add", "\\Recent")
        assert code == 2 and "Recent" in err, (out, err)
        code, out, err = await run_cli(api.url, "flag", str(d), "--add", "\\Seen", token="wrong")
        assert code == 1 and "401" in err, (out, err)


async def test_a_second_serve_process_answers_409_naming_the_one_that_syncs(db_dsn, encryption_key, dovecot,
                                                                            mail_user):
    fill(dovecot, mail_user, inbox=2, archive=1)
    settings = api_settings(db_dsn, encryption_key)
    async with running_api(db_dsn, settings, owner="first-host:1") as first:
        account_id = await start(first, dovecot, mail_user)
        message = (await rows(first, account_id, "INBOX"))[0]
        async with running_api(db_dsn, settings, owner="second-host:2") as second:
            await trio.sleep(1.0)  # its supervisor has seen the account (standby, or another's share)
            for method, path, body in (("POST", f"/messages/{message['id']}/flags", {"add": ["\\Seen"]}),
                                       ("POST", f"/messages/{message['id']}/move", {"folder": "Archive"}),
                                       ("DELETE", f"/messages/{message['id']}", None)):
                reply = await second.http.request(method, path, json=body)
                assert reply.status == 409, reply
                error = reply.json()["error"]
                assert error["code"] == "not_owner" and "first-host:1" in error["message"], error
            with MailboxClient(dovecot, mail_user) as client:
                assert "\\Seen" not in client.flags("INBOX")[message["uid"]]
                assert message["uid"] in client.uids("INBOX")
            # the owner does it
            answer = await first.http.ok("POST", f"/messages/{message['id']}/flags", json={"add": ["\\Seen"]})
            assert "\\Seen" in answer["flags"]

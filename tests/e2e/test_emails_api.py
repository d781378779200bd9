"""`GET /emails/{email_id}` end to end: every copy of a message, across folders, after a
copy and a move by another client (real HTTP, real actors, Dovecot, Postgres)."""

from __future__ import annotations

import trio

from mailbridge.testing.imapctl import MailboxClient
from tests.e2e.support import api_settings, fill_dated, running_api, wait_synced
from tests.support.actors import insert_account


async def copies(http, email_id: str, **params) -> list[tuple[str, int]]:
    body = await http.ok("GET", f"/emails/{email_id}", params=params or None)
    assert body["email_id"] == email_id
    return sorted((m["folder"], m["uid"]) for m in body["messages"])


async def test_every_copy_by_email_id_404_and_account_scope(dovecot, db_dsn, encryption_key):
    users = [dovecot.add_user(), dovecot.add_user()]
    for user in users:
        fill_dated(dovecot, user, inbox=4, archive=3)  # the same messages in both accounts
    s = api_settings(db_dsn, encryption_key)
    async with running_api(db_dsn, s) as api:
        http = api.http
        ids = [await insert_account(api.harness.db, s, username=u.username, password=u.password, port=dovecot.port)
               for u in users]
        for account_id in ids:
            await wait_synced(api, account_id)
        first = (await http.ok("GET", f"/accounts/{ids[0]}/messages", params={"folder": "INBOX"}))["messages"][0]
        email_id = first["email_id"]
        assert email_id and email_id.startswith("mb-")
        assert await copies(http, email_id, account=ids[0]) == [("INBOX", first["uid"])]
        # a derived id is shared by the same message in another account; ?account= scopes it
        both = (await http.ok("GET", f"/emails/{email_id}"))["messages"]
        assert sorted(m["account_id"] for m in both) == sorted(ids)

        with MailboxClient(dovecot, users[0]) as client:
            copied = client.copy("INBOX", [first["uid"]], "Archive")[first["uid"]]
            with trio.fail_after(10):
                while len(await copies(http, email_id, account=ids[0])) < 2:
                    await trio.sleep(0.05)
            assert await copies(http, email_id, account=ids[0]) == [("Archive", copied), ("INBOX", first["uid"])]
            moved = client.move("INBOX", [first["uid"]], "Archive")[first["uid"]]
            with trio.fail_after(10):
                while (found := await copies(http, email_id, account=ids[0])) != [("Archive", copied),
                                                                                   ("Archive", moved)]:
                    await trio.sleep(0.05)
        body = await http.ok("GET", f"/emails/{email_id}", params={"account": ids[0]})
        assert all(m["email_id"] == email_id and m["account_id"] == ids[0] for m in body["messages"])
        assert {"subject", "folder", "uid", "flags", "message_id"} <= set(body["messages"][0])

        for path, params in ((f"/emails/mb-0000000000000000", None), (f"/emails/{email_id}", {"account": 999})):
            reply = await http.get(path, params=params)
            assert reply.status == 404 and reply.json()["error"]["code"] == "not_found", reply
        assert (await http.get(f"/emails/{email_id}", params={"account": "x"})).status == 400
        assert (await http.get(f"/emails/{email_id}", token=None)).status == 401
        spec = await http.ok("GET", "/openapi.json")
        assert "/emails/{email_id}" in spec["paths"]

"""The HTTP API end to end: real HTTP to `serve_http` on a free port, a real Supervisor
with real actors, the real Dovecot and Postgres fixtures (in-process: `mailbridge serve`
does not start HTTP yet)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import trio

from actors import status as st
from mailbridge.testing.imapctl import MailboxClient
from mailbridge.testing.mailgen import corpus, make_message
from tests.e2e.support import (
    BASE,
    TOKEN,
    Http,
    SseReader,
    all_messages,
    api_settings,
    fill_dated,
    order_key,
    running_api,
    wait_synced,
)
from tests.support.actors import insert_account, settings_for
from web.app import create_app
from web.state import web_state
from web.server import serve_http

# --- auth ---------------------------------------------------------------------------------


async def test_every_path_but_health_needs_the_token(db_dsn, encryption_key):
    s = api_settings(db_dsn, encryption_key)
    async with running_api(db_dsn, s) as api:
        spec = (await api.http.ok("GET", "/openapi.json"))
        calls = []
        for path, methods in spec["paths"].items():
            concrete = path.replace("{id}", "1").replace("{thread}", "1")
            for method in methods:
                calls.append((method.upper(), concrete))
        calls += [("GET", "/no/such/path"), ("POST", "/actors"), ("GET", "/accounts/abc")]
        assert ("GET", "/health") in calls and len(calls) > 12
        for method, path in calls:
            for token in (None, "wrong-token", TOKEN + "x", ""):
                reply = await api.http.request(method, path, token=token, json={} if method in ("POST", "PATCH") else None)
                if path == "/health":
                    assert reply.status == 200, reply
                    continue
                assert reply.status == 401, (method, path, token, reply)
                assert reply.headers["www-authenticate"].lower().startswith("bearer")
                assert reply.json()["error"]["code"] == "unauthorized"
            reply = await api.http.request(method, path, headers={"Authorization": f"Basic {TOKEN}"}, token=None)
            assert reply.status == (200 if path == "/health" else 401)
        health = await api.http.ok("GET", "/health", token=None)
        assert health["database"] == "ok"


async def test_without_a_token_requests_are_allowed_when_the_caller_says_so(db_dsn, encryption_key):
    s = settings_for(db_dsn, encryption_key)
    assert s.api_token is None
    async with running_api(db_dsn, s) as api:
        assert (await api.http.get("/accounts", token=None)).status == 200
        assert (await api.http.get("/openapi.json", token=None)).status == 200


# --- the full flow --------------------------------------------------------------------------


async def test_full_flow_accounts_messages_filters_cursor_threads_body(dovecot, mail_user, db_dsn, encryption_key):
    fill_dated(dovecot, mail_user)
    s = api_settings(db_dsn, encryption_key)
    async with running_api(db_dsn, s) as api:
        http = api.http
        good = {"email": f"{mail_user.username}@example.test", "host": "127.0.0.1", "port": dovecot.port,
                "tls": "none", "username": mail_user.username, "password": mail_user.password}

        # validation: every bad field at once; nothing saved
        bad = await http.request("POST", "/accounts", json={"email": "nope", "host": "bad host!", "port": 0,
                                                             "tls": "ssl", "password": "", "colour": "red"})
        assert bad.status == 422, bad
        fields = bad.json()["error"]["fields"]
        assert {"email", "host", "port", "tls", "password", "colour"} <= set(fields), fields
        assert (await http.request("POST", "/accounts", body=b"{not json", headers={
            "Content-Type": "application/json"})).status == 400
        wrong = await http.request("POST", "/accounts", json={**good, "password": "wrong-password"})
        assert wrong.status == 422 and "password" in wrong.json()["error"]["fields"], wrong
        assert b"wrong-password" not in wrong.body
        assert (await http.ok("GET", "/accounts"))["accounts"] == []

        created = await http.ok("POST", "/accounts", status=201, json=good)
        account_id = created["id"]
        assert created["imap_username"] == mail_user.username and created["enabled"] is True
        for reply_body in (created, await http.ok("GET", f"/accounts/{account_id}"), await http.ok("GET", "/accounts")):
            assert mail_user.password not in repr(reply_body) and "password_encrypted" not in repr(reply_body)
        dup = await http.request("POST", "/accounts", json=good)
        assert dup.status == 422 and "email" in dup.json()["error"]["fields"]

        # it appears in /actors and syncs
        actor = await wait_synced(api, account_id)
        assert actor["lock_held"] and actor["health"] == "healthy" and actor["mailbox_depth"] == 0
        assert {f["name"]: f["synced"] for f in actor["folders"]}["INBOX"] == 45

        folders = {f["name"]: f for f in (await http.ok("GET", f"/accounts/{account_id}/folders"))["folders"]}
        assert folders["INBOX"]["messages"] == 45 and folders["Archive"]["messages"] == 30
        assert folders["Archive"]["unread"] == 20

        # paging through everything: newest first, no duplicate, no gap
        every = await all_messages(http, account_id, limit=7)
        ids = [m["id"] for m in every]
        assert len(ids) == len(set(ids)) == 75
        in_db = {r["id"] for r in await api.harness.db.fetch("SELECT id FROM messages WHERE account_id = $1",
                                                             account_id)}
        assert set(ids) == in_db
        keys = [order_key(m) for m in every]
        assert keys == sorted(keys, reverse=True)

        # stable under inserts: a message arriving mid-way is not a duplicate and hides nothing
        first = await http.ok("GET", f"/accounts/{account_id}/messages", params={"limit": 10})
        with MailboxClient(dovecot, mail_user) as client:
            client.append("INBOX", make_message(9001, rng=random.Random(9)))
        with trio.fail_after(15):
            while await api.harness.db.fetchval("SELECT count(*) FROM messages WHERE account_id = $1",
                                                account_id) < 76:
                await trio.sleep(0.1)
        seen = [m["id"] for m in first["messages"]]
        cursor = first["next_cursor"]
        while cursor:
            page = await http.ok("GET", f"/accounts/{account_id}/messages", params={"limit": 9, "cursor": cursor})
            seen += [m["id"] for m in page["messages"]]
            cursor = page["next_cursor"]
        assert len(seen) == len(set(seen)) and set(ids) <= set(seen)
        every = await all_messages(http, account_id, limit=50)
        by_id = {m["id"]: m for m in every}

        # each filter, checked against the full listing
        async def check(params, predicate, expect_some=True):
            got = await all_messages(http, account_id, limit=20, **params)
            want = [m["id"] for m in every if predicate(m)]
            assert [m["id"] for m in got] == want, params
            assert want or not expect_some, params
            return got

        await check({"folder": "Archive"}, lambda m: m["folder"] == "Archive")
        await check({"unread": "true"}, lambda m: "\\Seen" not in m["flags"])
        await check({"unread": "false"}, lambda m: "\\Seen" in m["flags"])
        await check({"flagged": "true"}, lambda m: "\\Flagged" in m["flags"])
        await check({"flagged": "false", "folder": "INBOX"},
                    lambda m: "\\Flagged" not in m["flags"] and m["folder"] == "INBOX")
        cut = BASE + timedelta(hours=6 * 20)
        await check({"since": cut.isoformat()},
                    lambda m: m["internal_date"] and datetime.fromisoformat(m["internal_date"]) >= cut)
        await check({"until": "2024-03-04"},
                    lambda m: m["internal_date"] and datetime.fromisoformat(m["internal_date"])
                    < datetime(2024, 3, 4, tzinfo=timezone.utc))
        sender = next(m for m in every if m["from_email"])
        needle = sender["from_email"].split("@")[0].upper()
        got = await check({"from": needle}, lambda m: needle.lower() in (m["from_email"] or "").lower()
                          or needle.lower() in (m["from_name"] or "").lower())
        assert sender["id"] in {m["id"] for m in got}
        # full-text search: a subject word, and an address part
        subject = next(m for m in every if m["subject"] and any(len(w) > 5 and w.isalpha() for w in m["subject"].split()))
        word = next(w for w in subject["subject"].split() if len(w) > 5 and w.isalpha())
        found = await all_messages(http, account_id, limit=50, q=word)
        assert subject["id"] in {m["id"] for m in found}
        assert len(found) < len(every)
        for m in found:
            hay = " ".join([m["subject"] or "", m["from_name"] or "", m["from_email"] or "", *m["to_emails"],
                            *m["cc_emails"]]).lower()
            assert word.lower() in hay, (word, m)
        domain_part = sender["from_email"].split("@")[1].split(".")[0]
        assert sender["id"] in {m["id"] for m in await all_messages(http, account_id, limit=100, q=domain_part)}
        assert (await http.ok("GET", f"/accounts/{account_id}/messages", params={"q": "zzqqxxnothing"}))[
            "messages"] == []

        # bad input: 400, never 500
        for params in ({"cursor": "garbage"}, {"cursor": "eyJkIjoxfQ"}, {"limit": "0"}, {"limit": "501"},
                       {"unread": "maybe"}, {"since": "yesterday"}, {"limit": "1e3"}, {"until": "0001-01-01T00:00:00+14:00"}):
            reply = await http.get(f"/accounts/{account_id}/messages", params=params)
            assert reply.status == 400, (params, reply)
            assert reply.json()["error"]["fields"], reply
        assert (await http.get("/accounts/999999/messages")).status == 404

        # one message
        one = await http.ok("GET", f"/messages/{every[0]['id']}")
        assert one == by_id[every[0]["id"]]
        assert (await http.get("/messages/999999999")).status == 404

        # a thread: a reply and what it replies to
        reply_msg = next(m for m in every if m["in_reply_to"] and any(
            o["message_id"] == m["in_reply_to"] for o in every))
        parent = next(o for o in every if o["message_id"] == reply_msg["in_reply_to"])
        thread = await http.ok("GET", f"/accounts/{account_id}/threads/{reply_msg['id']}")
        members = {m["id"]: m for m in thread["messages"]}
        assert reply_msg["id"] in members and parent["id"] in members
        assert members[reply_msg["id"]]["parent_id"] == parent["id"]
        assert members[thread["root_id"]]["parent_id"] is None
        again = await http.ok("GET", f"/accounts/{account_id}/threads/{parent['id']}")
        assert set(members) == {m["id"] for m in again["messages"]}
        assert (await http.get(f"/accounts/{account_id}/threads/999999999")).status == 404

        # bodies through the owning actor: parsed, and raw bytes identical to the server's
        multipart = [m for m in every if m["folder"] == "INBOX"]
        uid_of = {m["id"]: m["uid"] for m in multipart}
        with_attachment = None
        for m in multipart[:25]:
            body = await http.ok("GET", f"/messages/{m['id']}/body")
            assert set(body) >= {"text", "html", "attachments", "headers"}
            assert body["headers"]["message-id"] is None or m["message_id"] in body["headers"]["message-id"]
            if body["attachments"]:
                with_attachment = (m, body)
        assert with_attachment is not None
        m, body = with_attachment
        attachment = body["attachments"][0]
        assert attachment["filename"] and attachment["size"] > 0 and "/" in attachment["content_type"]
        raw = await http.get(f"/messages/{m['id']}/body", params={"raw": "1"})
        assert raw.status == 200 and raw.content_type.startswith("message/rfc822")
        with MailboxClient(dovecot, mail_user) as client:
            assert raw.body == client.fetch_raw("INBOX", uid_of[m["id"]])
            assert body["text"] is not None or body["html"] is not None

        # PATCH without connection changes needs no login; DELETE removes everything
        patched = await http.ok("PATCH", f"/accounts/{account_id}", json={"excluded_folders": ["Archive"]})
        assert patched["excluded_folders"] == ["Archive"]
        assert (await http.request("DELETE", f"/accounts/{account_id}")).status == 204
        assert (await http.get(f"/accounts/{account_id}")).status == 404
        assert (await http.request("DELETE", f"/accounts/{account_id}")).status == 404
        assert await api.harness.db.fetchval("SELECT count(*) FROM messages WHERE account_id = $1", account_id) == 0


# --- body fetch errors ------------------------------------------------------------------------


async def test_body_errors_map_to_404_413_503_504(dovecot, mail_user, db_dsn, encryption_key):
    with MailboxClient(dovecot, mail_user) as client:
        client.append_many("INBOX", list(corpus(6, seed=5)))
    # a long poll interval: only the body fetch can notice an expunge
    s = api_settings(db_dsn, encryption_key, MAILBRIDGE_POLL_SECONDS="600")
    async with running_api(db_dsn, s) as api:
        http = api.http
        account_id = await insert_account(api.harness.db, s, username=mail_user.username,
                                          password=mail_user.password, port=dovecot.port)
        await wait_synced(api, account_id)
        messages = (await http.ok("GET", f"/accounts/{account_id}/messages"))["messages"]
        assert len(messages) == 6

        # gone from the server: 404, and the row leaves the mirror with an event
        gone = messages[0]
        with MailboxClient(dovecot, mail_user) as client:
            client.expunge_uids("INBOX", [gone["uid"]])
        reply = await http.get(f"/messages/{gone['id']}/body")
        assert reply.status == 404 and reply.json()["error"]["code"] == "message_gone", reply
        assert (await http.get(f"/messages/{gone['id']}")).status == 404
        # its event once the search for a move's other side found none (a moment later)
        with trio.fail_after(5):
            while (event := await api.harness.db.fetchrow(
                    "SELECT kind, payload FROM events WHERE kind = 'message_removed' ORDER BY id DESC LIMIT 1")) is None:
                await trio.sleep(0.05)
        assert f'"message": {gone["id"]}' in event["payload"]

        # over the size cap: 413
        state = web_state(api.app)
        state.settings = api_settings(db_dsn, encryption_key, MAILBRIDGE_BODY_MAX_BYTES="100")
        reply = await http.get(f"/messages/{messages[1]['id']}/body")
        assert reply.status == 413 and reply.json()["error"]["code"] == "message_too_large", reply
        state.settings = s

        # no answer within the deadline: 504 with Retry-After
        state.body_timeout = 0.0
        reply = await http.get(f"/messages/{messages[1]['id']}/body")
        assert reply.status == 504 and int(reply.headers["retry-after"]) >= 1, reply
        state.body_timeout = 20.0
        assert (await http.get(f"/messages/{messages[1]['id']}/body")).status == 200

        # the account's actor not running here: 503 with the reason and Retry-After
        await http.ok("PATCH", f"/accounts/{account_id}", json={"enabled": False})
        with trio.fail_after(10):
            while (await http.get(f"/messages/{messages[1]['id']}/body")).status != 503:
                await trio.sleep(0.1)
        reply = await http.get(f"/messages/{messages[1]['id']}/body")
        assert reply.status == 503 and int(reply.headers["retry-after"]) >= 1
        assert "stopped" in reply.json()["error"]["message"] or "no actor" in reply.json()["error"]["message"]


# --- credentials ------------------------------------------------------------------------------


async def test_patch_with_a_new_password_wakes_a_parked_account(dovecot, mail_user, db_dsn, encryption_key):
    with MailboxClient(dovecot, mail_user) as client:
        client.append_many("INBOX", list(corpus(5, seed=8)))
    s = api_settings(db_dsn, encryption_key)
    async with running_api(db_dsn, s) as api:
        http = api.http
        account_id = await insert_account(api.harness.db, s, username=mail_user.username,
                                          password="not-the-password", port=dovecot.port)
        with trio.fail_after(15):
            while True:
                actors = (await http.ok("GET", "/actors"))["actors"]
                if actors and actors[0]["state"] == st.PARKED:
                    break
                await trio.sleep(0.1)
        before = await http.ok("GET", f"/accounts/{account_id}")
        assert before["health"] == "auth_failed"

        bad = await http.request("PATCH", f"/accounts/{account_id}", json={"port": 0, "tls": "x", "bogus": 1,
                                                                           "enabled": "yes"})
        assert bad.status == 422 and {"port", "tls", "bogus", "enabled"} <= set(bad.json()["error"]["fields"])
        wrong = await http.request("PATCH", f"/accounts/{account_id}", json={"password": "still-wrong"})
        assert wrong.status == 422 and "password" in wrong.json()["error"]["fields"]

        fixed = await http.ok("PATCH", f"/accounts/{account_id}", json={"password": mail_user.password})
        assert fixed["credentials_changed_at"] > before["credentials_changed_at"]
        assert mail_user.password not in repr(fixed)
        actor = await wait_synced(api, account_id, timeout=20)
        assert actor["health"] == "healthy"
        assert len((await http.ok("GET", f"/accounts/{account_id}/messages"))["messages"]) == 5


async def test_the_account_limit_has_its_own_status(dovecot, db_dsn, encryption_key):
    users = [dovecot.add_user() for _ in range(2)]
    s = api_settings(db_dsn, encryption_key, MAILBRIDGE_MAX_ACCOUNTS="1")
    async with running_api(db_dsn, s) as api:
        await insert_account(api.harness.db, s, username=users[0].username, password=users[0].password,
                             port=dovecot.port)
        reply = await api.http.request("POST", "/accounts", json={
            "email": f"{users[1].username}@example.test", "host": "127.0.0.1", "port": dovecot.port,
            "tls": "none", "username": users[1].username, "password": users[1].password})
        assert reply.status == 409, reply
        error = reply.json()["error"]
        assert error["code"] == "account_limit" and "MAILBRIDGE_MAX_ACCOUNTS=1" in error["message"]


# --- events -----------------------------------------------------------------------------------


async def test_events_stream_new_mail_and_resume_with_last_event_id(dovecot, mail_user, db_dsn, encryption_key):
    s = api_settings(db_dsn, encryption_key)
    async with running_api(db_dsn, s) as api:
        http = api.http
        account_id = await insert_account(api.harness.db, s, username=mail_user.username,
                                          password=mail_user.password, port=dovecot.port)
        await wait_synced(api, account_id)
        assert (await http.get("/events", headers={"Last-Event-ID": "abc"})).status == 400

        reader = await SseReader(http, "/events").start()
        try:
            assert reader.status == 200
            with MailboxClient(dovecot, mail_user) as client:
                client.append("INBOX", make_message(1, rng=random.Random(1)))
            first = await reader.wait_for(lambda e: e.event == "message_added", 15, "the first new message")
            data = first.json()
            assert data["account_id"] == account_id and data["payload"]["uid"] >= 1 and int(first.id) == data["id"]
        finally:
            await reader.close()

        with MailboxClient(dovecot, mail_user) as client:
            client.append("INBOX", make_message(2, rng=random.Random(2)))
        with trio.fail_after(15):
            while await api.harness.db.fetchval("SELECT count(*) FROM events WHERE kind = 'message_added'") < 2:
                await trio.sleep(0.1)

        resumed = await SseReader(http, "/events", headers={"Last-Event-ID": first.id}).start()
        try:
            second = await resumed.wait_for(lambda e: e.event == "message_added", 10, "the missed message")
            assert int(second.id) > int(first.id)
            assert all(int(e.id) > int(first.id) for e in resumed.events)
            assert second.json()["payload"]["message"] != data["payload"]["message"]
        finally:
            await resumed.close()

        replay = await SseReader(http, f"/events?since=0&account={account_id}").start()
        try:
            await replay.wait_for(lambda e: e.id == first.id, 10, "the replayed first event")
        finally:
            await replay.close()


# --- metrics, openapi, shutdown ------------------------------------------------------------------


async def test_metrics_and_openapi(db_dsn, encryption_key):
    s = api_settings(db_dsn, encryption_key)
    async with running_api(db_dsn, s) as api:
        await api.http.ok("GET", "/accounts")
        metrics = await api.http.get("/metrics")
        assert metrics.status == 200 and metrics.content_type.startswith("text/plain")
        assert b"mailbridge_http_requests_total" in metrics.body and b"mailbridge_actors" in metrics.body
        assert b"mailbridge_search_index_backlog 0.0" in metrics.body
        spec = await api.http.ok("GET", "/openapi.json")
        routes = {(m.upper(), p) for p, ms in spec["paths"].items() for m in ms}
        for expected in [("GET", "/health"), ("GET", "/actors"), ("GET", "/accounts"), ("POST", "/accounts"),
                         ("GET", "/accounts/{id}"), ("PATCH", "/accounts/{id}"), ("DELETE", "/accounts/{id}"),
                         ("GET", "/accounts/{id}/folders"), ("GET", "/accounts/{id}/messages"),
                         ("GET", "/messages/{id}"), ("GET", "/accounts/{id}/threads/{thread}"),
                         ("GET", "/messages/{id}/body"), ("GET", "/events"), ("GET", "/metrics"),
                         ("GET", "/openapi.json"), ("GET", "/emails/{email_id}")]:
            assert expected in routes, expected
        # the document matches the app: every declared route answers (not 404/405 from routing)
        app_rules = {(m, r.rule) for r in api.app.url_map.iter_rules() for m in r.methods if m not in ("HEAD", "OPTIONS")}
        declared = {(m, p.replace("{id}", "<int:id>").replace("{thread}", "<int:thread>")
                     .replace("{email_id}", "<string:email_id>")) for m, p in routes}
        assert declared <= app_rules and {r for r in app_rules if r[1] != "/static/<path:filename>"} <= declared
        params = {p["name"] for p in spec["paths"]["/accounts/{id}/messages"]["get"]["parameters"]}
        assert {"folder", "unread", "flagged", "since", "until", "from", "q", "limit", "cursor"} <= params


async def test_shutdown_stops_accepting_and_drains_within_the_grace(db_dsn, encryption_key):
    s = api_settings(db_dsn, encryption_key)
    async with running_api(db_dsn, s) as api:
        app = create_app(api.harness.registry, api.harness.db, s)
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def run(task_status=trio.TASK_STATUS_IGNORED):
                with scope:
                    await serve_http(app, "127.0.0.1", 0, task_status=task_status)

            url = await nursery.start(run)
            http = Http(url)
            assert (await http.get("/health")).status == 200
            stream = await SseReader(http, "/events").start()
            assert stream.status == 200
            web_state(app).draining = True  # what shutdown does first: new requests get 503
            reply = await http.get("/accounts")
            assert reply.status == 503 and reply.headers.get("retry-after"), reply
            web_state(app).draining = False
            started = trio.current_time()
            scope.cancel()
        took = trio.current_time() - started
        assert took < 4.0, took
        await trio.to_thread.run_sync(stream._thread.join, 5)
        assert not stream._thread.is_alive()  # the event stream ended with the server
        await stream.close()
        try:
            await http.get("/health", timeout=2)
            raise AssertionError("the stopped server still accepted a connection")
        except OSError:
            pass

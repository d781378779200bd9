"""`GET|POST /webhooks`, `GET|DELETE /webhooks/{id}` over real HTTP (real Postgres; the
last test a real `serve` process, real Dovecot and a real receiver)."""

from __future__ import annotations

import random
import time

from mailbridge.testing.imapctl import MailboxClient
from mailbridge.testing.mailgen import make_message
from tests.e2e.serve_support import ServeApi, account_body, serve_env
from tests.e2e.support import api_settings, running_api
from tests.support.receivers import Receiver

SECRET = "whsec-api-test-91ab"


async def test_webhook_routes_need_the_token_validate_precisely_and_never_show_the_secret(db_dsn, encryption_key):
    async with running_api(db_dsn, api_settings(db_dsn, encryption_key)) as api:
        http = api.http
        for method, path in (("GET", "/webhooks"), ("POST", "/webhooks"), ("GET", "/webhooks/1"),
                             ("DELETE", "/webhooks/1")):
            reply = await http.request(method, path, token=None, json={} if method == "POST" else None)
            assert reply.status == 401, (method, path, reply)

        assert await http.ok("GET", "/webhooks") == {"webhooks": []}
        created = await http.ok("POST", "/webhooks", 201, json={"url": "https://hooks.example.test/in",
                                                               "secret": SECRET})
        webhook_id = created["id"]
        assert isinstance(webhook_id, int) and created["events"] is None and created["state"] == "ok"
        assert created["lag"] == 0 and created["last_status"] is None and created["failures"] == 0
        assert "secret" not in created and SECRET not in str(created)

        only = await http.ok("POST", "/webhooks", 201, json={
            "url": "http://127.0.0.1:9/x", "secret": SECRET, "events": ["message_added", "message_added",
                                                                         "folder_reset"]})
        assert only["events"] == ["message_added", "folder_reset"]

        listed = await http.ok("GET", "/webhooks")
        assert [w["id"] for w in listed["webhooks"]] == [webhook_id, only["id"]]
        assert SECRET not in str(listed)
        one = await http.ok("GET", f"/webhooks/{webhook_id}")
        assert {"lag", "last_status", "failures", "parked", "last_error", "state", "delivered"} <= set(one)

        for body, field, text in (
                ({"url": "ftp://example.test/x", "secret": SECRET}, "url", "http:// or https://"),
                ({"url": "https://user:pw@example.test/x", "secret": SECRET}, "url", "user name or password"),
                ({"url": "https:///nohost", "secret": SECRET}, "url", "no host name"),
                ({"url": "https://example.test/x"}, "secret", "required"),
                ({"url": "https://example.test/x", "secret": ""}, "secret", ""),
                ({"url": "https://example.test/x", "secret": SECRET, "events": ["message_added", "nope"]},
                 "events", "nope"),
                ({"url": "https://example.test/x", "secret": SECRET, "events": []}, "events", ""),
                ({"url": "https://example.test/x", "secret": SECRET, "extra": 1}, "extra", "")):
            reply = await http.request("POST", "/webhooks", json=body)
            assert reply.status == 422, (body, reply)
            error = reply.json()["error"]
            assert error["code"] == "invalid_input" and any(k.startswith(field) for k in error["fields"]), error
            assert text in error["message"], (text, error)
        unknown = (await http.request("POST", "/webhooks", json={"url": "https://e.test/x", "secret": "s",
                                                                  "events": ["nope"]})).json()
        assert "message_added" in unknown["error"]["fields"]["events"]  # the known types are listed

        assert (await http.request("DELETE", f"/webhooks/{webhook_id}")).status == 204
        assert (await http.request("GET", f"/webhooks/{webhook_id}")).status == 404
        assert (await http.request("DELETE", f"/webhooks/{webhook_id}")).status == 404
        paths = (await http.ok("GET", "/openapi.json"))["paths"]
        assert {"get", "post"} <= set(paths["/webhooks"]) and {"get", "delete"} <= set(paths["/webhooks/{id}"])


def test_a_webhook_added_over_http_gets_new_mail_from_serve(db_dsn, encryption_key, tmp_path, dovecot, mail_user):
    env = serve_env(db_dsn, encryption_key, str(tmp_path / "home"), MAILBRIDGE_POLL_SECONDS="1")
    with Receiver(SECRET) as receiver, ServeApi(env) as api:
        created = api.ok("POST", "/accounts", 201, json=account_body(dovecot, mail_user))
        deadline = time.monotonic() + 30
        while api.ok("GET", f"/accounts/{created['id']}")["health"] != "healthy":
            assert time.monotonic() < deadline, "the account never became healthy"
            time.sleep(0.1)
        hook = api.ok("POST", "/webhooks", 201, json={"url": receiver.url, "secret": SECRET,
                                                      "events": ["message_added"]})
        with MailboxClient(dovecot, mail_user) as client:
            client.append("INBOX", make_message(7001, rng=random.Random(7)))
        receiver.wait_for(lambda r: r.delivered, timeout=15, what="the new mail's event")
        [delivery] = receiver.delivered
        assert delivery.valid and delivery.type == "message_added" and delivery.account_id == created["id"]
        assert delivery.body["data"]["folder"] == "INBOX" and delivery.body["data"]["subject"]
        state = api.ok("GET", f"/webhooks/{hook['id']}")
        assert state["lag"] == 0 and state["last_status"] == 200 and state["delivered"] == 1
        assert state["last_event_id"] == delivery.event_id and state["owner"]


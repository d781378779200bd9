"""The API defends itself (over real HTTP, real Postgres): the no-token mode's Host and
cross-site checks, JSON-only writes, a PATCH that would send the stored password
elsewhere, the metrics' method label, the cap on event streams, and pruning the events."""

from __future__ import annotations

import functools
import http.client
import json
import socket
from datetime import datetime, timedelta, timezone

import trio

from actors.janitor import prune_once, run_janitor
from tests.e2e.support import TOKEN, Http, SseReader, api_settings, running_api
from tests.support.actors import insert_account, settings_for


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_request(api: Http, method: str, path: str, headers: dict[str, str], body: bytes | None = None):
    """One request with exactly these headers (http.client's own Host left out when given)."""
    conn = http.client.HTTPConnection(api.host, api.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host="Host" in headers, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


async def raw(api: Http, method: str, path: str, headers: dict[str, str], body: bytes | None = None):
    return await trio.to_thread.run_sync(lambda: raw_request(api, method, path, headers, body))


# --- no-token mode: Host and origin --------------------------------------------------------------


async def test_no_token_mode_refuses_foreign_hosts_and_cross_site_requests(db_dsn, encryption_key):
    s = settings_for(db_dsn, encryption_key)
    async with running_api(db_dsn, s, require_token=False) as api:
        port = api.http.port
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"127.0.0.9:{port}"):
            status, _, body = await raw(api.http, "GET", "/accounts", {"Host": host})
            assert status == 200, (host, status, body)
        # DNS rebinding sends the attacker's name; another port is another server
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}",
                     f"localhost.evil.example:{port}", f"127.0.0.1:{port + 1}", f"[::2]:{port}", "",
                     f"user@127.0.0.1:{port}"):
            status, headers, body = await raw(api.http, "GET", "/accounts", {"Host": host})
            assert status == 421, (host, status, body)
            assert b"host_not_allowed" in body and b"127.0.0.1" in body and headers["content-type"].startswith(
                "application/json")
        status, _, _ = await raw(api.http, "GET", "/health", {"Host": f"evil.example:{port}"})
        assert status == 421

        own = f"http://127.0.0.1:{port}"
        allowed = [{"Origin": own}, {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}, {}]
        for extra in allowed:
            status, _, body = await raw(api.http, "GET", "/accounts", {"Host": f"127.0.0.1:{port}", **extra})
            assert status == 200, (extra, status, body)
        refused = [{"Origin": "http://evil.example"}, {"Origin": f"http://127.0.0.1:{port + 1}"},
                   {"Origin": f"http://localhost:{port}"}, {"Origin": "null"}, {"Origin": f"https://127.0.0.1:{port}"},
                   {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                   {"Origin": own, "Sec-Fetch-Site": "cross-site"}]
        for extra in refused:
            for method, path in (("GET", "/accounts"), ("POST", "/accounts"), ("DELETE", "/accounts/1"),
                                 ("OPTIONS", "/accounts")):
                status, _, body = await raw(api.http, method, path, {"Host": f"127.0.0.1:{port}",
                                                                     "Content-Type": "application/json", **extra},
                                            b"{}" if method == "POST" else None)
                assert status == 403, (extra, method, path, status, body)
                assert b"MAILBRIDGE_API_TOKEN" in body
        # a link from another site still opens the dashboard (it can be neither read nor framed)
        status, headers, _ = await raw(api.http, "GET", "/", {
            "Host": f"127.0.0.1:{port}", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate",
            "Sec-Fetch-Dest": "document"})
        assert status == 200 and "frame-ancestors 'none'" in headers["content-security-policy"]
        status, _, _ = await raw(api.http, "GET", "/", {
            "Host": f"127.0.0.1:{port}", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate",
            "Sec-Fetch-Dest": "iframe"})
        assert status == 403
        assert (await api.harness.db.fetchval("SELECT count(*) FROM accounts")) == 0


async def test_token_mode_accepts_any_host(db_dsn, encryption_key):
    """With a token the API may be served under any name (a reverse proxy, a LAN name)."""
    s = api_settings(db_dsn, encryption_key)
    async with running_api(db_dsn, s) as api:
        status, _, body = await raw(api.http, "GET", "/accounts", {"Host": "mail.example.org",
                                                                   "Authorization": f"Bearer {TOKEN}"})
        assert status == 200, body


# --- JSON-only writes ------------------------------------------------------------------------------


async def test_writes_need_content_type_json_in_every_mode(db_dsn, encryption_key):
    port = closed_port()
    good = {"email": "a@example.test", "host": "127.0.0.1", "port": port, "tls": "none", "password": "x"}
    body = json.dumps(good).encode()
    for settings, require in ((settings_for(db_dsn, encryption_key), False), (api_settings(db_dsn, encryption_key), True)):
        async with running_api(db_dsn, settings, require_token=require) as api:
            account_id = await insert_account(api.harness.db, settings, username="u", password="p", port=port)
            for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                         None, "application/jsonx", "text/json"):
                headers = {"Content-Type": kind} if kind else {}
                for method, path in (("POST", "/accounts"), ("PATCH", f"/accounts/{account_id}")):
                    reply = await api.http.request(method, path, body=body, headers=headers)
                    assert reply.status == 415, (require, kind, method, reply)
                    error = reply.json()["error"]
                    assert error["code"] == "unsupported_media_type" and "application/json" in error["message"]
            # charset parameters are fine; unmatched paths are still 404/405; DELETE without a body needs nothing
            reply = await api.http.request("PATCH", f"/accounts/{account_id}", body=b'{"enabled": false}',
                                           headers={"Content-Type": "application/json; charset=utf-8"})
            assert reply.status == 200, reply
            assert (await api.http.request("POST", "/nowhere", body=b"x", headers={"Content-Type": "text/plain"})
                    ).status == 404
            assert (await api.http.request("POST", "/actors", body=b"x", headers={"Content-Type": "text/plain"})
                    ).status == 405
            reply = await api.http.request("DELETE", f"/accounts/{account_id}", body=b"x",
                                           headers={"Content-Type": "text/plain"})
            assert reply.status == 415, reply
            assert (await api.http.request("DELETE", f"/accounts/{account_id}")).status == 204
            assert (await api.harness.db.fetchval("SELECT count(*) FROM accounts")) == 0


# --- PATCH never sends the stored password elsewhere -----------------------------------------------


async def test_patch_changing_where_the_password_goes_requires_the_password(db_dsn, encryption_key):
    s = api_settings(db_dsn, encryption_key, MAILBRIDGE_CONNECT_TIMEOUT="2")
    connections = 0

    async def count(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        await stream.aclose()

    async with running_api(db_dsn, s) as api:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(trio.serve_tcp, count, 0, host="127.0.0.1"))
            trap = listeners[0].socket.getsockname()[1]
            account_id = await insert_account(api.harness.db, s, username="victim", password="stored-secret",
                                              port=closed_port())
            before = await api.http.ok("GET", f"/accounts/{account_id}")
            for change in ({"port": trap}, {"host": "localhost", "port": trap}, {"tls": "starttls"},
                           {"username": "someone-else"}, {"verify_certificate": False},
                           {"port": trap, "enabled": True, "email": "new@example.test"}):
                reply = await api.http.request("PATCH", f"/accounts/{account_id}", json=change)
                assert reply.status == 422, (change, reply)
                error = reply.json()["error"]
                assert set(error["fields"]) == {"password"}, error
                assert "the stored password is sent only to the server it was saved for" in error["fields"]["password"]
            assert connections == 0
            after = await api.http.ok("GET", f"/accounts/{account_id}")
            keep = ("email", "imap_host", "imap_port", "imap_tls", "imap_username", "verify_certificate",
                    "enabled", "credentials_changed_at", "updated_at")
            assert {k: after[k] for k in keep} == {k: before[k] for k in keep}
            # the same values as stored are no change; other fields need no password
            same = await api.http.ok("PATCH", f"/accounts/{account_id}", json={
                "host": before["imap_host"], "port": before["imap_port"], "tls": before["imap_tls"],
                "username": before["imap_username"], "enabled": False})
            assert same["enabled"] is False
            assert connections == 0
            nursery.cancel_scope.cancel()


# --- metrics, event streams --------------------------------------------------------------------------


async def test_metrics_label_methods_from_a_fixed_set(db_dsn, encryption_key):
    s = api_settings(db_dsn, encryption_key)
    async with running_api(db_dsn, s) as api:
        for method in ("FROBNICATE", "X-MADE-UP-1", "get", "TRACE"):
            reply = await api.http.request(method, "/accounts")
            assert reply.status < 500, (method, reply)
        text = (await api.http.get("/metrics")).body.decode()
        methods = {line.split('method="', 1)[1].split('"', 1)[0]
                   for line in text.splitlines() if line.startswith("mailbridge_http_requests_total{")}
        assert methods <= {"GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS", "other"}, methods
        assert "other" in methods


async def test_event_streams_are_capped_and_slots_come_back(db_dsn, encryption_key):
    from web.app import create_app
    from web.server import serve_http
    from web.state import web_state

    s = api_settings(db_dsn, encryption_key)
    async with running_api(db_dsn, s) as api:
        app = create_app(api.harness.registry, api.harness.db, s, max_event_streams=2)
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_http, app, "127.0.0.1", 0)
            http = Http(url)
            first = await SseReader(http, "/events").start()
            second = await SseReader(http, "/events").start()
            assert first.status == second.status == 200
            reply = await http.get("/events")
            assert reply.status == 503 and int(reply.headers["retry-after"]) >= 1, reply
            assert reply.json()["error"]["code"] == "too_many_streams"
            assert (await http.get("/accounts")).status == 200  # the rest of the API is not affected
            await first.close()
            with trio.fail_after(10):
                while web_state(app).event_streams > 1:
                    await trio.sleep(0.05)
            third = await SseReader(http, "/events").start()
            assert third.status == 200
            for stream in (second, third):
                await stream.close()
            nursery.cancel_scope.cancel()
        assert web_state(app).event_streams == 0


# --- pruning events ------------------------------------------------------------------------------------


async def test_events_older_than_the_retention_are_pruned_in_batches(db):
    now = datetime.now(timezone.utc)
    await db.execute("""INSERT INTO events (kind, payload, created_at)
                        SELECT 'old', '{}', $1::timestamptz - make_interval(mins => g) FROM generate_series(1, 23) g""",
                     now - timedelta(days=31))
    await db.execute("""INSERT INTO events (kind, payload, created_at)
                        SELECT 'recent', '{}', $1::timestamptz FROM generate_series(1, 4)""", now - timedelta(days=29))
    assert await prune_once(db, 30, batch=5, pause=0) == 23
    kinds = [r["kind"] for r in await db.fetch("SELECT kind FROM events ORDER BY id")]
    assert kinds == ["recent"] * 4
    assert await prune_once(db, 30, batch=5, pause=0) == 0
    assert await prune_once(db, 28, batch=5, pause=0) == 4
    assert await prune_once(db, 28, batch=5, pause=0) == 0  # an empty table


async def test_the_janitor_prunes_periodically(db):
    await db.execute("INSERT INTO events (kind, payload, created_at) VALUES ('old', '{}', now() - interval '40 days')")
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_janitor(db, 30, interval=0.1, first_delay=0.0,
                                                            task_status=task_status))
        with trio.fail_after(10):
            while await db.fetchval("SELECT count(*) FROM events"):
                await trio.sleep(0.05)
        await db.execute("INSERT INTO events (kind, payload, created_at) "
                         "VALUES ('old', '{}', now() - interval '40 days'), ('new', '{}', now())")
        with trio.fail_after(10):
            while await db.fetchval("SELECT count(*) FROM events WHERE kind = 'old'"):
                await trio.sleep(0.05)
        assert await db.fetchval("SELECT count(*) FROM events WHERE kind = 'new'") == 1
        nursery.cancel_scope.cancel()

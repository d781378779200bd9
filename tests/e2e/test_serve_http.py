"""Issue 5's acceptance against `mailbridge serve` as a real subprocess: real HTTP on a
free loopback port, the real Dovecot and Postgres fixtures, production defaults (batch
size, timeouts) except a short poll interval.

- 401 on every path but /health, without a token and with a wrong one;
- the full flow over HTTP: POST /accounts, the actor in /actors, every message filter,
  cursor paging without a duplicate or a gap (checked against the server's own listing),
  a body whose ?raw=1 bytes are the server's;
- body fetches at a steady 5/s while the actor runs the initial sync of 20,000 messages:
  every request answers, no 5xx but a 503/504 with Retry-After (a failure for the p99),
  p99 under P99_BOUND (bench/body_fetch.py reports the real figures), with the IMAP
  command throttle out of the way (see UNTHROTTLED);
- with the default throttle, the same load must not stop the initial sync: the actor
  answers only the requests waiting when a step ends, then takes the next step.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from mailbridge.testing.imapctl import MailboxClient
from mailbridge.testing.mailgen import MaildirWriter, corpus
from tests.e2e.serve_support import (
    TOKEN,
    BodyLoad,
    MessagePool,
    ServeApi,
    account_body,
    folder_progress,
    format_summary,
    serve_env,
    summarize,
)
from tests.e2e.support import BASE, fill_dated, order_key

P99_BOUND = 5.0  # seconds; generous for a shared 2-core machine (the target is 2 s)
BIG = 20_000


def env_for(db_dsn, encryption_key, tmp_path, **extra):
    return serve_env(db_dsn, encryption_key, str(tmp_path / "home"), MAILBRIDGE_POLL_SECONDS="1", **extra)


def page_all(api, account_id, limit=7, **params):
    """Every message through the cursor; asserts the pages chain and end."""
    out, cursor, pages = [], None, 0
    while True:
        page = api.ok("GET", f"/accounts/{account_id}/messages", params={"limit": limit, "cursor": cursor, **params})
        assert len(page["messages"]) <= limit
        out += page["messages"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return out
        assert page["messages"], "a cursor after an empty page"
        assert pages < 2000


# --- auth ------------------------------------------------------------------------------------


def test_serve_answers_401_on_every_path_but_health(db_dsn, encryption_key, tmp_path):
    with ServeApi(env_for(db_dsn, encryption_key, tmp_path)) as api:
        spec = api.ok("GET", "/openapi.json")
        calls = [(method.upper(), path.replace("{id}", "1").replace("{thread}", "1"))
                 for path, methods in spec["paths"].items() for method in methods]
        calls += [("GET", "/no/such/path"), ("POST", "/actors"), ("GET", "/accounts/abc"),
                  ("GET", "/messages/1/body?raw=1")]
        assert ("GET", "/health") in calls and ("GET", "/events") in calls and len(calls) > 15
        wrong = [None, "wrong-token", TOKEN + "x", TOKEN[:-1], "", f"{TOKEN} {TOKEN}"]
        for method, path in calls:
            body = {} if method in ("POST", "PATCH") else None
            for token in wrong:
                reply = api.request(method, path, token=token, json=body, timeout=10)
                if path == "/health":
                    assert reply.status == 200, (token, reply)
                    continue
                assert reply.status == 401, (method, path, token, reply)
                assert reply.headers["www-authenticate"].lower().startswith("bearer")
                assert reply.json()["error"]["code"] == "unauthorized"
            for header in (f"Basic {TOKEN}", TOKEN, f"Token {TOKEN}"):
                reply = api.request(method, path, token=None, headers={"Authorization": header}, timeout=10)
                assert reply.status == (200 if path == "/health" else 401), (method, path, header, reply)
        # the right token opens them (the scheme is case-insensitive)
        assert api.ok("GET", "/actors") == {"actors": []}
        assert api.request("GET", "/accounts", token=None,
                           headers={"Authorization": f"bearer {TOKEN}"}).status == 200
        assert api.ok("GET", "/health", token=None)["database"] == "ok"
    assert api.exit_code == 0, api.output
    assert TOKEN not in api.output


# --- the full flow ------------------------------------------------------------------------------


def test_serve_full_flow_over_http(dovecot, mail_user, db_dsn, encryption_key, tmp_path):
    fill_dated(dovecot, mail_user)  # INBOX 45 (distinct dates, some read/flagged), Archive 30
    with MailboxClient(dovecot, mail_user) as client:
        truth = {folder: client.fetch_meta(folder) for folder in ("INBOX", "Archive")}
    server_keys = {(folder, uid) for folder, rows in truth.items() for uid in rows}
    assert len(server_keys) == 75

    with ServeApi(env_for(db_dsn, encryption_key, tmp_path)) as api:
        good = account_body(dovecot, mail_user)
        bad = api.request("POST", "/accounts", json={**good, "password": "wrong-password", "port": 0})
        assert bad.status == 422 and "port" in bad.json()["error"]["fields"], bad
        wrong = api.request("POST", "/accounts", json={**good, "password": "wrong-password"})
        assert wrong.status == 422 and "password" in wrong.json()["error"]["fields"], wrong
        assert api.ok("GET", "/accounts")["accounts"] == []

        created = api.ok("POST", "/accounts", 201, json=good)
        account_id = created["id"]
        assert mail_user.password not in repr(created)

        # it appears in /actors (at once) and syncs
        api.wait_actor(account_id, lambda a: True, timeout=5, what="the actor to appear")
        actor = api.wait_actor(account_id, lambda a: a["state"] == "idle" and a["cycles"] >= 1,
                               timeout=60, what="the first cycle")
        assert actor["lock_held"] and actor["health"] == "healthy", actor
        assert folder_progress(actor, "INBOX")["synced"] == 45
        assert folder_progress(actor, "Archive")["synced"] == 30
        folders = {f["name"]: f for f in api.ok("GET", f"/accounts/{account_id}/folders")["folders"]}
        assert folders["INBOX"]["messages"] == 45 and folders["Archive"]["messages"] == 30
        assert folders["INBOX"]["initial_sync_complete"] and folders["Archive"]["initial_sync_complete"]

        # paging: newest first, no duplicate, no gap (against the server's own listing)
        for limit in (7, 1, 50, 500):
            every = page_all(api, account_id, limit=limit)
            ids = [m["id"] for m in every]
            assert len(ids) == len(set(ids)) == 75, limit
            assert {(m["folder"], m["uid"]) for m in every} == server_keys, limit
            keys = [order_key(m) for m in every]
            assert keys == sorted(keys, reverse=True), limit
        for m in every:
            meta = truth[m["folder"]][m["uid"]]
            assert tuple(sorted(m["flags"])) == meta["flags"], m
            assert m["size_bytes"] == meta["size"]
            assert m["unread"] == ("\\Seen" not in meta["flags"])
            assert m["flagged"] == ("\\Flagged" in meta["flags"])
        one = api.ok("GET", f"/messages/{every[0]['id']}")
        assert one == every[0]

        # each filter: the paged result is exactly the full listing's matching subset, in order
        def check(params, predicate, limit=6):
            got = page_all(api, account_id, limit=limit, **params)
            want = [m["id"] for m in every if predicate(m)]
            assert [m["id"] for m in got] == want, params
            assert want, f"{params} selects nothing: a vacuous check"
            return got

        archive = check({"folder": "Archive"}, lambda m: m["folder"] == "Archive")
        assert {m["uid"] for m in archive} == set(truth["Archive"])
        unread = check({"unread": "true"}, lambda m: "\\Seen" not in m["flags"])
        assert {(m["folder"], m["uid"]) for m in unread} == {
            (f, u) for f, rows in truth.items() for u, meta in rows.items() if "\\Seen" not in meta["flags"]}
        check({"unread": "false"}, lambda m: "\\Seen" in m["flags"])
        flagged = check({"flagged": "true"}, lambda m: "\\Flagged" in m["flags"])
        assert {(m["folder"], m["uid"]) for m in flagged} == {
            (f, u) for f, rows in truth.items() for u, meta in rows.items() if "\\Flagged" in meta["flags"]}
        check({"flagged": "false", "folder": "INBOX"},
              lambda m: "\\Flagged" not in m["flags"] and m["folder"] == "INBOX")
        cut = BASE + timedelta(hours=6 * 20)
        check({"since": cut.isoformat()},
              lambda m: m["internal_date"] is not None and datetime.fromisoformat(m["internal_date"]) >= cut)
        check({"until": cut.isoformat()},
              lambda m: m["internal_date"] is not None and datetime.fromisoformat(m["internal_date"]) < cut)
        check({"since": BASE.isoformat(), "until": (BASE + timedelta(days=3)).isoformat(), "unread": "true"},
              lambda m: BASE <= datetime.fromisoformat(m["internal_date"]) < BASE + timedelta(days=3)
              and m["unread"], limit=2)
        sender = next(m for m in every if m["from_email"])
        needle = sender["from_email"].split("@")[0].upper()
        got = check({"from": needle}, lambda m: needle.lower() in (m["from_email"] or "").lower()
                    or needle.lower() in (m["from_name"] or "").lower())
        assert sender["id"] in {m["id"] for m in got}
        subject = next(m for m in every if m["subject"] and any(len(w) > 5 and w.isalpha()
                                                                  for w in m["subject"].split()))
        word = next(w for w in subject["subject"].split() if len(w) > 5 and w.isalpha())
        found = page_all(api, account_id, limit=4, q=word)
        assert subject["id"] in {m["id"] for m in found} and len(found) < len(every)
        assert [m["id"] for m in found] == [m["id"] for m in every if m["id"] in {f["id"] for f in found}]
        for m in found:
            hay = " ".join([m["subject"] or "", m["from_name"] or "", m["from_email"] or "", *m["to_emails"],
                            *m["cc_emails"]]).lower()
            assert word.lower() in hay, (word, m)
        assert api.ok("GET", f"/accounts/{account_id}/messages", params={"q": "zzqqxxnothing"})["messages"] == []
        assert api.request("GET", f"/accounts/{account_id}/messages", params={"cursor": "garbage"}).status == 400

        # bodies through the owning actor: raw bytes identical to the server's, in both folders
        with MailboxClient(dovecot, mail_user) as client:
            for m in [next(x for x in every if x["folder"] == "INBOX"),
                      next(x for x in every if x["folder"] == "Archive"), every[-1]]:
                raw = api.request("GET", f"/messages/{m['id']}/body", params={"raw": "1"})
                assert raw.status == 200 and raw.content_type.startswith("message/rfc822"), raw
                assert raw.body == client.fetch_raw(m["folder"], m["uid"]), m
                assert len(raw.body) == m["size_bytes"]
                parsed = api.ok("GET", f"/messages/{m['id']}/body")
                assert {"text", "html", "attachments", "headers"} <= set(parsed)
                assert parsed["text"] is not None or parsed["html"] is not None or parsed["attachments"]
        # a body fetch is BODY.PEEK[]: it never marks the message read
        with MailboxClient(dovecot, mail_user) as client:
            assert client.flags("INBOX") == {u: meta["flags"] for u, meta in truth["INBOX"].items()}
        assert api.ok("GET", "/actors")["actors"][0]["mailbox_depth"] == 0
    assert api.exit_code == 0, api.output
    assert "Traceback" not in api.output


# --- body fetch during a big initial sync -------------------------------------------------------

# Each body fetch costs the account 3 IMAP commands (EXAMINE, UID FETCH RFC822.SIZE,
# UID FETCH BODY.PEEK[]), plus a SELECT back when the sync was in another folder, so the
# default throttle (MAILBRIDGE_COMMANDS_PER_MINUTE=200: 33 at once, then 168/min) allows
# about one fetch a second; 25/s measures the actor's interleaving only with it out of the way.
UNTHROTTLED = "100000"


def run_load(api, account_id, *, rate, until, timeout):
    """Fire body fetches at `rate` until `until(actor)` or `timeout`; (samples, done, seconds, last actor)."""
    started = time.monotonic()
    pool = MessagePool(api.http, account_id).start()
    load = BodyLoad(api.http, pool, rate=rate, raw_every=2, timeout=30.0, max_requests=1000,
                    max_seconds=timeout).start()
    done, actor = False, None
    try:
        deadline = started + timeout
        while time.monotonic() < deadline:
            actor = api.actor(account_id)
            if actor is not None and until(actor):
                done = True
                break
            assert api.serve.proc.poll() is None, f"serve exited: {api.output[-3000:]}"
            time.sleep(0.2)
    finally:
        samples = load.stop()
        pool.stop()
    assert not pool.errors, pool.errors
    return samples, done, time.monotonic() - started, actor


def synced(actor, folder="INBOX"):
    return (folder_progress(actor, folder) or {}).get("synced", 0)


def test_serve_body_fetch_while_the_initial_sync_of_20000_runs(dovecot, mail_user, db_dsn, encryption_key,
                                                               tmp_path):
    MaildirWriter().write(mail_user, "INBOX", corpus(BIG, seed=21, folder_hint="INBOX"))
    # 50-message batches: at full speed the initial sync of 20,000 takes about a second,
    # too short for enough fetches to overlap it; smaller batches stretch it (and still
    # let a fetch in only between batches, the behaviour under test)
    env = env_for(db_dsn, encryption_key, tmp_path, MAILBRIDGE_COMMANDS_PER_MINUTE=UNTHROTTLED,
                  MAILBRIDGE_BATCH_SIZE="50")
    with ServeApi(env) as api:
        account_id = api.ok("POST", "/accounts", 201, json=account_body(dovecot, mail_user))["id"]
        samples, done, took, actor = run_load(api, account_id, rate=25.0, until=lambda a: synced(a) >= BIG,
                                              timeout=100)
        summary = summarize(samples)
        report = (f"initial sync {'of ' + str(BIG) if done else 'NOT complete: ' + str(synced(actor))} "
                  f"in {took:.1f} s ({synced(actor) / took:,.0f} msgs/s from POST /accounts); "
                  + format_summary(summary))
        print(report)
        assert done, f"the initial sync did not complete under the load: {report}; last snapshot {actor}"
        assert summary.count >= 10, f"too few fetches overlapped the sync to mean anything: {report}"
        assert summary.bad == 0, f"requests without an answer or with a 5xx other than 503/504+Retry-After: {report}"
        assert summary.other == 0, f"unexpected 4xx: {report}"
        assert summary.wrong_content == 0, f"200s with a wrong body: {report}"
        assert summary.p99 < P99_BOUND, f"p99 over {P99_BOUND:g} s (503/504 count as failures): {report}"

        # the sync itself was not hurt: the whole folder is mirrored, and the actor is healthy
        actor = api.wait_actor(account_id, lambda a: a["state"] == "idle" and a["cycles"] >= 1, timeout=60,
                               what="the first cycle to end")
        assert actor["health"] == "healthy" and actor["mailbox_depth"] == 0, actor
        inbox = next(f for f in api.ok("GET", f"/accounts/{account_id}/folders")["folders"] if f["name"] == "INBOX")
        assert inbox["messages"] == BIG and inbox["initial_sync_complete"], inbox
    assert api.exit_code == 0, api.output
    assert "Traceback" not in api.output


def test_serve_initial_sync_keeps_going_when_body_fetches_outpace_the_actor(dovecot, mail_user, db_dsn,
                                                                            encryption_key, tmp_path):
    n = BIG  # ~5 s of sync unloaded: the throttle's burst (33 commands) is spent long before
    MaildirWriter().write(mail_user, "INBOX", corpus(n, seed=22, folder_hint="INBOX"))
    with ServeApi(env_for(db_dsn, encryption_key, tmp_path)) as api:  # the default throttle
        account_id = api.ok("POST", "/accounts", 201, json=account_body(dovecot, mail_user))["id"]
        samples, done, took, actor = run_load(api, account_id, rate=5.0, until=lambda a: synced(a) >= n,
                                              timeout=12)
        summary = summarize(samples)
        report = f"{synced(actor)}/{n} mirrored after {took:.1f} s under 5 fetches/s; " + format_summary(summary)
        print(report)
        assert done, f"the initial sync starved: {report}"
        # overload may be refused (503 + Retry-After), but never with a hang or a 500
        assert summary.bad == 0 and summary.other == 0, report
    assert api.exit_code == 0, api.output

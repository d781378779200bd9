"""The no-token API against web pages in a real browser (Debian's headless Chromium through
playwright, as tests/e2e/test_dashboard.py drives it).

The API is served without MAILBRIDGE_API_TOKEN on 127.0.0.1 with one account; a small
HTTP server on another loopback port serves an attacker's page, once as a same-site origin
(`http://127.0.0.1:OTHER`) and once as a cross-site one (`http://attacker.test:OTHER`,
which Chromium resolves to 127.0.0.1).  The page tries what a visited web page can do
without a CORS preflight (a text/plain POST creating an account that would log in, a form
POST, a GET reading the account list) and what needs one (a PATCH, a JSON POST).  Then a
DNS-rebinding-style name (`evil.example`, also resolved to 127.0.0.1) is opened at the
API's port.  Nothing may be created or changed, nothing readable may come back, and the
dashboard at the API's own address still works; a same-origin JSON POST proves the
attacker's account would have been accepted had it come from the dashboard.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--host-resolver-rules=MAP attacker.test 127.0.0.1, MAP evil.example 127.0.0.1"]

# Only the standard library at the top: this file is also the browser script the test runs
# in a child process (see test_dashboard.py for why).

ATTACK_PAGE = """<!doctype html><meta charset="utf-8"><title>a page on the web</title>
<iframe name="sink" style="display:none"></iframe>
<form id="form" method="POST" target="sink" enctype="text/plain"><input name="" value=""></form>
<script>
const params = new URLSearchParams(location.search);
const api = params.get("api");
const account = JSON.parse(params.get("account"));
const victim = params.get("victim");
async function attempt(name, fn) {
  try { const r = await fn(); return [name, "answered", r.type, r.status, await r.text()]; }
  catch (e) { return [name, "failed", String(e)]; }
}
window.attack = async () => {
  const out = [];
  const body = JSON.stringify(account);
  out.push(await attempt("post text/plain", () => fetch(api + "/accounts", {method: "POST", mode: "no-cors",
    headers: {"Content-Type": "text/plain"}, body})));
  out.push(await attempt("post text/plain cors", () => fetch(api + "/accounts", {method: "POST",
    headers: {"Content-Type": "text/plain"}, body})));
  out.push(await attempt("post json", () => fetch(api + "/accounts", {method: "POST",
    headers: {"Content-Type": "application/json"}, body})));
  out.push(await attempt("patch", () => fetch(api + "/accounts/" + victim, {method: "PATCH",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify({enabled: false})})));
  out.push(await attempt("get accounts", () => fetch(api + "/accounts")));
  out.push(await attempt("get accounts no-cors", () => fetch(api + "/accounts", {mode: "no-cors"})));
  const form = document.getElementById("form");
  form.action = api + "/accounts";
  form.elements[0].name = body.slice(0, -1) + ',"x":"';
  form.elements[0].value = '"}';
  form.submit();
  await new Promise((resolve) => setTimeout(resolve, 1500));
  return out;
};
</script>"""


def serve_page():
    """A thread serving ATTACK_PAGE on 127.0.0.1:<free port>; returns (server, port)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Page(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            data = ATTACK_PAGE.encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def browse(job: dict) -> dict:
    """The browser part (in the child process)."""
    from urllib.parse import urlencode, urlsplit

    from playwright.sync_api import expect, sync_playwright

    api = job["url"]
    api_port = urlsplit(api).port
    server, page_port = serve_page()
    out: dict = {"attacks": {}}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=job["chromium"], args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page()
                page.set_default_timeout(30_000)
                query = urlencode({"api": api, "account": json.dumps(job["account"]), "victim": job["victim"]})
                for origin in (f"http://127.0.0.1:{page_port}", f"http://attacker.test:{page_port}"):
                    page.goto(f"{origin}/attack.html?{query}")
                    out["attacks"][origin] = page.evaluate("() => window.attack()")

                # DNS rebinding: a name of the attacker's, resolving to 127.0.0.1, at the API's port
                rebound = {}
                for path in ("/", "/accounts"):
                    reply = page.goto(f"http://evil.example:{api_port}{path}")
                    assert reply is not None
                    rebound[path] = [reply.status, reply.text()]
                out["rebound"] = rebound

                # the dashboard at the API's own address works, and there the same POST is
                # refused as text/plain and accepted as JSON (so the attacks above were real)
                problems: list[str] = []
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                reply = page.goto(api + "/")
                assert reply is not None and reply.status == 200
                expect(page.locator("article.card", has_text=job["victim_email"])).to_be_visible()
                expect(page.locator("#conn")).to_have_attribute("data-state", "live")
                out["own_origin"] = page.evaluate("""async (account) => {
                  const body = JSON.stringify(account);
                  const plain = await fetch("/accounts", {method: "POST", headers: {"Content-Type": "text/plain"},
                                                          body});
                  const json = await fetch("/accounts", {method: "POST",
                                                         headers: {"Content-Type": "application/json"}, body});
                  return [plain.status, json.status, await json.text()];
                }""", job["account"])
                out["problems"] = problems
            finally:
                browser.close()
    finally:
        server.shutdown()
    return out


def main() -> int:
    job = json.loads(sys.argv[1])
    print(json.dumps(browse(job)), flush=True)
    return 0


async def test_a_cross_origin_page_cannot_create_change_or_read_in_no_token_mode(dovecot, mail_user, db_dsn,
                                                                                 encryption_key):
    import shutil

    import pytest
    import trio

    from tests.e2e.support import running_api
    from tests.support.actors import insert_account, settings_for

    chromium = "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else shutil.which("chromium")
    if not chromium:
        pytest.fail("chromium is not installed: apt-get install chromium (tests/run installs it)", pytrace=False)
    other = dovecot.add_user()
    s = settings_for(db_dsn, encryption_key)
    assert s.api_token is None
    async with running_api(db_dsn, s, require_token=False) as api:
        victim = await insert_account(api.harness.db, s, username=mail_user.username,
                                      password=mail_user.password, port=dovecot.port)
        victim_email = f"{mail_user.username}@example.test"
        before = dict(await api.harness.db.fetchrow("SELECT * FROM accounts WHERE id = $1", victim))
        account = {"email": f"{other.username}@example.test", "host": "127.0.0.1", "port": dovecot.port,
                   "tls": "none", "username": other.username, "password": other.password}
        job = json.dumps({"chromium": chromium, "url": api.url, "account": account, "victim": victim,
                          "victim_email": victim_email})
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        child = await trio.to_thread.run_sync(lambda: subprocess.run(
            [sys.executable, __file__, job], env=env, cwd=REPO, capture_output=True, text=True, timeout=240))
        assert child.returncode == 0, f"the browser script failed:\n{child.stdout[-3000:]}\n{child.stderr[-6000:]}"
        result = json.loads(child.stdout.strip().splitlines()[-1])

        for origin, attempts in result["attacks"].items():
            assert len(attempts) == 6, (origin, attempts)
            for name, outcome, *rest in attempts:
                # nothing readable: every attempt failed, or came back opaque (no status, no body)
                if outcome == "answered":
                    kind, status, text = rest
                    assert kind == "opaque" and status == 0 and text == "", (origin, name, rest)
                assert victim_email not in json.dumps(rest), (origin, name, rest)

        for path, (status, text) in result["rebound"].items():
            assert status == 421, (path, status, text[:300])
            assert victim_email not in text and "host_not_allowed" in text

        plain, created, text = result["own_origin"]
        assert plain == 415, result["own_origin"]
        assert created == 201, result["own_origin"]
        assert result["problems"] == [], result["problems"]

        # only the same-origin JSON POST created an account; the victim is unchanged
        rows = await api.harness.db.fetch("SELECT id, email FROM accounts ORDER BY id")
        assert [r["email"] for r in rows] == [victim_email, account["email"]], rows
        after = dict(await api.harness.db.fetchrow("SELECT * FROM accounts WHERE id = $1", victim))
        for column in ("email", "imap_host", "imap_port", "imap_tls", "imap_username", "enabled",
                       "password_encrypted", "credentials_changed_at"):
            assert after[column] == before[column], column


if __name__ == "__main__":
    sys.exit(main())

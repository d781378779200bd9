"""The dashboard in a real browser: Debian's headless Chromium driven by the `playwright`
package (its bundled driver; never `playwright install`), against the API served
in-process with real actors, Dovecot and Postgres.

Loads `/` with the token, sees the account and its folder progress, appends a message to
the server and sees it in the recent events without a reload; saves a screenshot to
tests/artifacts/dashboard.png for people to look at.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from email.utils import format_datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

# Only the standard library and pytest at the top: this file is also the browser script
# the test runs in a child process (`python test_dashboard.py`), where playwright's sync
# API gets a plain asyncio loop of its own (the test process runs trio with trio-asyncio's
# loop policy, which playwright must not pick up).

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-token-7f3a9c"  # tests.e2e.support.TOKEN (imported lazily below)
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def chromium() -> str:
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if not path:
        pytest.fail("chromium is not installed: apt-get install chromium (tests/run installs it)", pytrace=False)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[test]' (tests/run does)", pytrace=False)
    return path


def message(subject: str, to: str) -> bytes:
    return (
        "From: =?utf-8?q?Zo=C3=AB_Tester?= <zoe@example.org>\r\n"
        f"To: {to}\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <dashboard-{secrets.token_hex(6)}@example.org>\r\n"
        f"Date: {format_datetime(datetime.now(timezone.utc))}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "Hello from the dashboard test.\r\n"
    ).encode("utf-8")


def browse(chromium: str, url: str, email: str, append) -> dict:
    """The browser part (in the child process; see the top of the file)."""
    from playwright.sync_api import expect, sync_playwright

    problems: list[str] = []
    out: dict = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="en-GB",
                                          timezone_id="UTC")
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

            # without the token: a 401 page asking for it, not the dashboard
            reply = page.goto(url + "/")
            assert reply is not None and reply.status == 401
            expect(page.locator("input[type=password]")).to_be_visible()
            reply = page.goto(url + "/?access_token=wrong-" + secrets.token_hex(4))
            assert reply is not None and reply.status == 401
            expect(page.get_by_text("was not accepted")).to_be_visible()
            problems.clear()  # the browser logs the two 401s as console errors

            # with the token: the dashboard, the token gone from the address bar
            reply = page.goto(url + "/?access_token=" + TOKEN)
            assert reply is not None and reply.status == 200
            assert reply.all_headers().get("content-security-policy", "").startswith("default-src 'none'")
            page.wait_for_function("() => !location.search.includes('access_token')")
            assert TOKEN not in page.url
            card = page.locator("article.card", has_text=email)
            expect(card).to_be_visible()
            expect(card.locator(".badge", has_text="healthy")).to_be_visible(timeout=60_000)
            expect(card.locator(".fname", has_text="INBOX")).to_be_visible()
            expect(card.locator(".fname", has_text="Archive")).to_be_visible()
            # per-folder progress: the bars fill up to the server's counts
            expect(card.locator(".count", has_text="120 / 120")).to_be_visible(timeout=60_000)
            expect(card.locator(".count", has_text="80 / 80")).to_be_visible(timeout=60_000)
            expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=30_000)
            widths = page.eval_on_selector_all(".bar .fill", "els => els.map(e => e.style.width)")
            assert widths and all(w == "100%" for w in widths), widths

            # a new message on the server shows up in the recent events without a reload;
            # its subject is markup that must stay text
            page.evaluate("() => { window.__sameDocument = true; }")
            subject = (f"Dashboard check {secrets.token_hex(3)} <b>not bold</b> & "
                       "<img src=x onerror=\"window.__xss=1\">")
            append(subject)
            item = page.locator("#events li.event", has_text=subject)
            expect(item).to_be_visible(timeout=60_000)
            expect(item.locator(".kind")).to_have_text("new mail")
            expect(item.locator(".detail")).to_contain_text("Zoë Tester <zoe@example.org>")
            expect(item.locator(".detail")).to_contain_text("INBOX")
            assert page.evaluate("() => window.__sameDocument === true"), "the page reloaded"
            assert page.evaluate("() => window.__xss === undefined")
            assert page.locator("#events b, #events img").count() == 0
            expect(card.locator(".count", has_text="121 / 121")).to_be_visible(timeout=30_000)

            page.wait_for_timeout(2600)  # let the highlight of the new event fade
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            out["events"] = page.locator("#events li.event").count()
            out["problems"] = list(problems)

            # a reload keeps working: `/` answers 401 without the token, and that page
            # re-sends the token this tab remembers; the address bar stays clean
            problems.clear()
            page.reload()
            expect(page.locator("article.card", has_text=email)).to_be_visible()
            page.wait_for_function("() => !location.search.includes('access_token')")
            expect(page.locator("#events li.event", has_text=subject)).to_be_visible(timeout=30_000)
            out["problems"] += [p for p in problems if "status of 401" not in p]
        finally:
            browser.close()
    return out


def _append_to(imap: dict):
    def append(subject: str) -> None:
        from mailbridge.testing.imapctl import MailboxClient

        server = SimpleNamespace(host=imap["host"], port=imap["port"], tls_port=None, ca_cert_path=None)
        with MailboxClient(server, imap["username"], imap["password"]) as client:
            client.append("INBOX", message(subject, imap["email"]))

    return append


def main() -> int:
    """The child process: argv[1] is a JSON job; prints the result as the last line."""
    job = json.loads(sys.argv[1])
    result = browse(job["chromium"], job["url"], job["imap"]["email"], _append_to(job["imap"]))
    print(json.dumps(result), flush=True)
    return 0


async def test_dashboard_in_chromium(chromium, dovecot, mail_user, db_dsn, encryption_key):
    import trio

    from mailbridge.testing.imapctl import MailboxClient
    from mailbridge.testing.mailgen import corpus
    from tests.e2e.support import TOKEN as SUPPORT_TOKEN, api_settings, running_api
    from tests.support.actors import insert_account

    assert SUPPORT_TOKEN == TOKEN
    with MailboxClient(dovecot, mail_user) as client:
        client.create("Archive")
        client.append_many("INBOX", list(corpus(120, seed=21, folder_hint="INBOX")))
        client.append_many("Archive", list(corpus(80, seed=22, folder_hint="Archive")))
    s = api_settings(db_dsn, encryption_key)
    async with running_api(db_dsn, s) as api:
        account_id = await insert_account(api.harness.db, s, username=mail_user.username,
                                          password=mail_user.password, port=dovecot.port)
        imap = {"host": dovecot.host, "port": dovecot.port, "username": mail_user.username,
                "password": mail_user.password, "email": f"{mail_user.username}@example.test"}
        job = json.dumps({"chromium": chromium, "url": api.url, "imap": imap})
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        child = await trio.to_thread.run_sync(lambda: subprocess.run(
            [sys.executable, __file__, job], env=env, cwd=REPO, capture_output=True, text=True, timeout=300))
        assert child.returncode == 0, f"the browser script failed:\n{child.stdout[-3000:]}\n{child.stderr[-6000:]}"
        result = json.loads(child.stdout.strip().splitlines()[-1])
        assert result["problems"] == [], result["problems"]
        assert result["events"] >= 1
        assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
        assert api.harness.status(account_id) is not None


async def test_dashboard_auth_without_a_browser(db_dsn, encryption_key):
    """API clients get JSON 401s at / and /events; the query token is taken only there."""
    from tests.e2e.support import api_settings, running_api

    s = api_settings(db_dsn, encryption_key)
    async with running_api(db_dsn, s) as api:
        http = api.http
        for path in ("/", "/events", "/actors"):
            reply = await http.get(path, token=None)
            assert reply.status == 401 and reply.json()["error"]["code"] == "unauthorized", (path, reply)
        # a browser navigating to / gets a page asking for the token, never echoing one
        wrong = "wrong-" + secrets.token_hex(8)
        reply = await http.get("/", token=None, params={"access_token": wrong}, headers={"Accept": "text/html"})
        assert reply.status == 401 and "text/html" in reply.content_type
        assert wrong.encode() not in reply.body and b"not accepted" in reply.body
        # the right token in the query opens / (and only the GET paths a browser needs)
        reply = await http.get("/", token=None, params={"access_token": TOKEN})
        assert reply.status == 200 and reply.content_type.startswith("text/html")
        assert TOKEN.encode() not in reply.body
        assert reply.headers["referrer-policy"] == "no-referrer"
        assert "nonce-" in reply.headers["content-security-policy"]
        reply = await http.get("/actors", token=None, params={"access_token": TOKEN})
        assert reply.status == 401
        # the header wins over the query
        reply = await http.get("/", token="wrong", params={"access_token": TOKEN})
        assert reply.status == 401


if __name__ == "__main__":
    sys.exit(main())

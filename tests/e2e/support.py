"""The API over real HTTP in the test's trio run: a Supervisor with real actors (real
Postgres, real Dovecot) and `serve_http` on a free loopback port, plus a small stdlib
HTTP client (run in threads) and a server-sent-events reader."""

from __future__ import annotations

import http.client
import json as jsonlib
import random
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator
from urllib.parse import urlencode, urlsplit

import trio

from actors import status as st
from mailbridge.config import Settings
from mailbridge.testing.imapctl import MailboxClient
from mailbridge.testing.mailgen import corpus
from tests.support.actors import Harness, running_supervisor, settings_for
from web.app import create_app
from web.server import serve_http

TOKEN = "test-token-7f3a9c"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return jsonlib.loads(self.body.decode("utf-8"))

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body[:300]!r})"


class Http:
    """Blocking http.client calls moved to a thread; one connection per request."""

    def __init__(self, base_url: str, token: str | None = TOKEN) -> None:
        parts = urlsplit(base_url)
        self.base_url = base_url
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.token = token

    def request_sync(self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None,
                     body: bytes | None = None, headers: dict[str, str] | None = None, token: Any = "default",
                     timeout: float = 60.0) -> Reply:
        if params:
            path = path + ("&" if "?" in path else "?") + urlencode(
                [(k, v) for k, v in params.items() if v is not None], doseq=True)
        all_headers = dict(headers or {})
        token = self.token if token == "default" else token
        if token is not None:
            all_headers.setdefault("Authorization", f"Bearer {token}")
        if json is not None:
            body = jsonlib.dumps(json).encode("utf-8")
            all_headers.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=all_headers)
            response = conn.getresponse()
            data = response.read()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
        finally:
            conn.close()

    async def request(self, method: str, path: str, **kwargs: Any) -> Reply:
        return await trio.to_thread.run_sync(lambda: self.request_sync(method, path, **kwargs))

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("GET", path, **kwargs)

    async def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        reply = await self.request(method, path, **kwargs)
        assert reply.status == status, f"{method} {path}: {reply.status} {reply.body[:500]!r}"
        return reply.json() if reply.body and "json" in reply.content_type else reply


@dataclass
class SseEvent:
    id: str | None
    event: str | None
    data: str

    def json(self) -> Any:
        return jsonlib.loads(self.data)


@dataclass
class SseReader:
    """Reads a text/event-stream in a thread; `events` fills as they arrive."""

    http: Http
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    events: list[SseEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    status: int | None = None
    error: BaseException | None = None

    async def start(self) -> "SseReader":
        self._conn = http.client.HTTPConnection(self.http.host, self.http.port, timeout=60)
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not await trio.to_thread.run_sync(self._started.wait, 10):
            raise AssertionError("the event stream did not answer within 10 s")
        return self

    def _run(self) -> None:
        try:
            headers = {"Authorization": f"Bearer {self.http.token}", "Accept": "text/event-stream", **self.headers}
            self._conn.request("GET", self.path, headers=headers)
            response = self._conn.getresponse()
            self.status = response.status
            self._started.set()
            current: dict[str, Any] = {"data": []}
            while True:
                line = response.readline()
                if not line:
                    return
                text = line.decode("utf-8").rstrip("\r\n")
                if not text:
                    if current["data"] or current.get("id"):
                        self.events.append(SseEvent(current.get("id"), current.get("event"),
                                                    "\n".join(current["data"])))
                    current = {"data": []}
                elif text.startswith(":"):
                    self.comments.append(text[1:].strip())
                else:
                    name, _, value = text.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "data":
                        current["data"].append(value)
                    elif name in ("id", "event"):
                        current[name] = value
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
            self._started.set()

    async def close(self) -> None:
        try:
            self._conn.sock and self._conn.sock.shutdown(2)
        except OSError:
            pass
        self._conn.close()
        await trio.to_thread.run_sync(self._thread.join, 5)

    async def wait_for(self, predicate, timeout: float, what: str) -> SseEvent:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in list(self.events):
                if predicate(event):
                    return event
            await trio.sleep(0.05)
        raise AssertionError(f"no event for {what} within {timeout:g} s; got {self.events} (error {self.error})")


@dataclass
class Api:
    harness: Harness
    http: Http
    url: str
    app: Any


@asynccontextmanager
async def running_api(db_dsn: str, settings: Settings, *, require_token: bool | None = None,
                      body_timeout: float = 20.0, **kwargs: Any) -> AsyncIterator[Api]:
    """Supervisor + actors + the HTTP API on 127.0.0.1:<free port> for the block."""
    async with running_supervisor(db_dsn, settings, **kwargs) as h:
        app = create_app(h.registry, h.db, settings, require_token=require_token, body_timeout=body_timeout)
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_http, app, "127.0.0.1", 0)
            yield Api(h, Http(url), url, app)
            nursery.cancel_scope.cancel()


# --- what the API tests share: settings, a mailbox with known dates, waiting, paging ----------

BASE = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)  # INBOX's first internal date in `fill_dated`


def api_settings(db_dsn: str, key: str, **extra: str) -> Settings:
    """The actors' fast test settings, with `TOKEN` as the API token."""
    return settings_for(db_dsn, key, MAILBRIDGE_API_TOKEN=TOKEN, **extra)


def fill_dated(dovecot, user, *, inbox=45, archive=30, seed=3) -> None:
    """INBOX with distinct internal dates (one per 6 h from BASE), Archive all at once
    (equal dates: the id breaks ties); some read, some flagged."""
    rng = random.Random(seed)
    with MailboxClient(dovecot, user) as client:
        client.create("Archive")
        for i, message in enumerate(corpus(inbox, seed=seed, folder_hint="INBOX")):
            flags = [f for f, p in (("\\Seen", 0.5), ("\\Flagged", 0.2)) if rng.random() < p]
            client.append("INBOX", message, flags=flags, date=BASE + timedelta(hours=6 * i))
        uids = client.append_many("Archive", list(corpus(archive, seed=seed + 1, folder_hint="Archive")))
        client.store("Archive", uids[::3], add=["\\Seen"])


async def wait_synced(api: Api, account_id: int, timeout: float = 60) -> dict[str, Any]:
    """The account's /actors entry once its first cycle is done (AssertionError after `timeout`)."""
    deadline = trio.current_time() + timeout
    while trio.current_time() < deadline:
        actors = (await api.http.ok("GET", "/actors"))["actors"]
        mine = [a for a in actors if a["account_id"] == account_id]
        if mine and mine[0]["state"] == st.IDLE and mine[0]["cycles"] >= 1:
            return mine[0]
        await trio.sleep(0.1)
    raise AssertionError(f"account {account_id} did not sync: {actors}")


async def all_messages(http: Http, account_id: int, limit: int = 7, **params: Any) -> list[dict[str, Any]]:
    """Every message of the account, page by page (`limit` a page) along next_cursor."""
    out, cursor, pages = [], None, 0
    while True:
        page = await http.ok("GET", f"/accounts/{account_id}/messages",
                             params={"limit": limit, "cursor": cursor, **params})
        out += page["messages"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return out
        assert pages < 1000


def order_key(m: dict[str, Any]) -> tuple:
    """A message's place in the API's order: listings come in descending keys (newest
    internal date first, undated last, the id breaking ties)."""
    d = m["internal_date"]
    return (d is not None, datetime.fromisoformat(d) if d else datetime.min.replace(tzinfo=timezone.utc), m["id"])

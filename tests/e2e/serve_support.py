"""`mailbridge serve` as a real subprocess, driven over real HTTP, plus a steady-rate
body-fetch load generator.  Shared by tests/e2e/test_serve_http.py and
bench/body_fetch.py (which imports this module with the repository on sys.path).

Everything here is blocking (stdlib http.client, threads): the server under test is
another process, so the caller needs no event loop.

    with ServeApi(env) as api:                    # SIGTERM at the end, kill on failure
        created = api.ok("POST", "/accounts", 201, json=account_body(dovecot, user))
        pool = MessagePool(api.http, created["id"]).start()
        load = BodyLoad(api.http, pool, rate=5.0).start()
        ...
        samples = load.stop()
        print(format_summary(summarize(samples)))
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from tests.e2e.support import Http, Reply
from tests.support.processes import Serve

TOKEN = "serve-http-token-5b1e2f"


def serve_env(db_dsn: str, encryption_key: str, home: str, *, token: str | None = TOKEN,
              **extra: str) -> dict[str, str]:
    """The environment of a `mailbridge serve` on `db_dsn` (production defaults otherwise)."""
    env = {"DATABASE_URL": db_dsn, "MAILBRIDGE_ENCRYPTION_KEY": encryption_key, "MAILBRIDGE_HOME": home}
    if token is not None:
        env["MAILBRIDGE_API_TOKEN"] = token
    env.update(extra)
    return env


def account_body(dovecot: Any, user: Any) -> dict[str, Any]:
    """A POST /accounts body for a test Dovecot user (plain IMAP on loopback)."""
    return {"email": f"{user.username}@example.test", "host": "127.0.0.1", "port": dovecot.port,
            "tls": "none", "username": user.username, "password": user.password}


class ServeApi:
    """A `mailbridge serve --bind 127.0.0.1:0` subprocess (`tests.support.processes.Serve`)
    and an HTTP client holding its token."""

    def __init__(self, env: dict[str, str], *, start_timeout: float = 60.0) -> None:
        self.env = env
        self.start_timeout = start_timeout
        self.serve: Serve | None = None
        self.http: Http | None = None
        self.exit_code: int | None = None

    def __enter__(self) -> "ServeApi":
        self.serve = Serve(self.env)
        try:
            self.serve.wait_serving(self.start_timeout)
            self.http = Http(self.serve.url, token=self.env.get("MAILBRIDGE_API_TOKEN"))
        except BaseException:
            self.serve.kill()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.serve is not None
        try:
            if self.serve.proc.poll() is None:
                self.exit_code, _ = self.serve.stop(timeout=20)
            else:
                self.exit_code = self.serve.proc.returncode
        finally:
            self.serve.kill()

    @property
    def url(self) -> str:
        assert self.serve is not None
        return self.serve.url

    @property
    def output(self) -> str:
        """Everything the process printed so far (stdout, then stderr)."""
        assert self.serve is not None
        return "".join(self.serve.out) + "".join(self.serve.err)

    def request(self, method: str, path: str, **kwargs: Any) -> Reply:
        assert self.http is not None
        return self.http.request_sync(method, path, **kwargs)

    def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        reply = self.request(method, path, **kwargs)
        assert reply.status == status, f"{method} {path}: {reply.status} {reply.body[:500]!r}"
        return reply.json() if reply.body and "json" in reply.content_type else reply

    def actor(self, account_id: int) -> dict[str, Any] | None:
        actors = self.ok("GET", "/actors")["actors"]
        return next((a for a in actors if a["account_id"] == account_id), None)

    def wait_actor(self, account_id: int, predicate: Callable[[dict[str, Any]], bool], *, timeout: float,
                   what: str, interval: float = 0.1) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.actor(account_id)
            if last is not None and predicate(last):
                return last
            assert self.serve is not None and self.serve.proc.poll() is None, f"serve exited: {self.output[-3000:]}"
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last snapshot {last}")


def folder_progress(actor: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    if actor is None:
        return None
    return next((f for f in actor.get("folders", ()) if f["name"] == name), None)


# --- picking messages that are already mirrored ----------------------------------------------


class MessagePool:
    """Walks GET /accounts/{id}/messages page by page in a thread (newest first, then
    round again from the top), so `pick()` returns a random message id among those
    mirrored so far, with its size (RFC822.SIZE: the raw body's exact length)."""

    def __init__(self, http: Http, account_id: int, *, page: int = 500, interval: float = 1.0,
                 folder: str | None = None, seed: int = 5) -> None:
        self.http = http
        self.account_id = account_id
        self.page = page
        self.interval = interval
        self.folder = folder
        self._rng = random.Random(seed)
        self._ids: list[int] = []
        self._sizes: dict[int, int | None] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="message-pool", daemon=True)
        self.errors: list[str] = []

    def start(self) -> "MessagePool":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def __len__(self) -> int:
        return len(self._ids)

    def pick(self) -> tuple[int, int | None] | None:
        with self._lock:
            if not self._ids:
                return None
            i = self._rng.choice(self._ids)
            return i, self._sizes[i]

    def _run(self) -> None:
        cursor = None
        while not self._stop.is_set():
            try:
                reply = self.http.request_sync("GET", f"/accounts/{self.account_id}/messages", params={
                    "limit": self.page, "cursor": cursor, "folder": self.folder}, timeout=30)
                if reply.status == 200:
                    data = reply.json()
                    with self._lock:
                        for m in data["messages"]:
                            if m["id"] not in self._sizes:
                                self._ids.append(m["id"])
                                self._sizes[m["id"]] = m["size_bytes"]
                    cursor = data["next_cursor"]  # None: round again from the newest
                else:
                    self.errors.append(f"{reply.status} {reply.body[:200]!r}")
                    cursor = None
            except OSError as exc:
                self.errors.append(repr(exc))
                cursor = None
            self._stop.wait(self.interval)


# --- the load --------------------------------------------------------------------------------


@dataclass
class Sample:
    """One body fetch."""

    message_id: int
    raw: bool
    scheduled: float          # monotonic time it was due
    started: float            # monotonic time the request went out
    seconds: float            # until the whole answer was read (or the error)
    status: int | None = None
    retry_after: str | None = None
    error: str | None = None  # client-side failure: timeout, connection refused/reset
    size_ok: bool | None = None  # raw=1: len(body) == the listing's size_bytes
    code: str | None = None   # the JSON error code of a non-200 answer

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def allowed_failure(self) -> bool:
        """503/504 with Retry-After: an answer the API may give (but a failure for the p99)."""
        return self.status in (503, 504) and bool(self.retry_after)

    @property
    def bad(self) -> bool:
        """No answer, or a 5xx other than an allowed 503/504."""
        return self.status is None or (self.status >= 500 and not self.allowed_failure)


class BodyLoad:
    """Fires GET /messages/{id}/body (every `raw_every`-th with ?raw=1) at a steady `rate`
    per second from a thread pool (open loop: a slow answer does not delay the next
    request), for message ids from `pool.pick()`, until `stop()`, `max_requests` or
    `max_seconds`."""

    def __init__(self, http: Http, pool: MessagePool, *, rate: float = 5.0, raw_every: int = 2,
                 timeout: float = 30.0, max_requests: int = 5000, max_seconds: float = 600.0,
                 workers: int = 32) -> None:
        self.http = http
        self.pool = pool
        self.rate = rate
        self.raw_every = max(1, raw_every)
        self.timeout = timeout
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="body-fetch")
        self._futures: list[Future[Sample]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._schedule, name="body-load", daemon=True)
        self.started_at: float | None = None
        self.stopped_at: float | None = None

    def start(self) -> "BodyLoad":
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        """Stop sending; wait for every request in flight; the samples in send order."""
        self._stop.set()
        self._thread.join(self.timeout + 10)
        samples = [f.result() for f in self._futures]
        self._executor.shutdown(wait=True)
        return samples

    @property
    def sent(self) -> int:
        return len(self._futures)

    def _schedule(self) -> None:
        period = 1.0 / self.rate
        begin = time.monotonic()
        due = begin
        n = 0
        while not self._stop.is_set() and n < self.max_requests and time.monotonic() - begin < self.max_seconds:
            picked = self.pool.pick()
            if picked is None:  # nothing mirrored yet
                self._stop.wait(0.02)
                due = time.monotonic()
                continue
            if self.started_at is None:
                self.started_at = time.monotonic()
            message_id, size = picked
            raw = n % self.raw_every == self.raw_every - 1
            self._futures.append(self._executor.submit(self._one, message_id, size, raw, due))
            n += 1
            due += period
            delay = due - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
        self.stopped_at = time.monotonic()

    def _one(self, message_id: int, size: int | None, raw: bool, due: float) -> Sample:
        started = time.monotonic()
        sample = Sample(message_id, raw, due, started, 0.0)
        try:
            reply = self.http.request_sync("GET", f"/messages/{message_id}/body",
                                           params={"raw": "1"} if raw else None, timeout=self.timeout)
        except OSError as exc:  # timeouts included (socket.timeout is an OSError)
            sample.seconds = time.monotonic() - started
            sample.error = f"{type(exc).__name__}: {exc}"
            return sample
        sample.seconds = time.monotonic() - started
        sample.status = reply.status
        sample.retry_after = reply.headers.get("retry-after")
        if reply.status == 200:
            if raw:
                sample.size_ok = reply.content_type.startswith("message/rfc822") and (
                    size is None or len(reply.body) == size)
            else:
                try:
                    sample.size_ok = {"text", "html", "attachments"} <= set(reply.json())
                except ValueError:
                    sample.size_ok = False
        else:
            try:
                sample.code = reply.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                sample.code = None
        return sample


# --- figures ---------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of `values` (inf stays inf); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Summary:
    count: int
    ok: int
    p50: float
    p90: float
    p99: float
    max: float
    p99_ok: float             # over the 200s only
    allowed_failures: int     # 503/504 with Retry-After
    bad: int                  # no answer, or another 5xx
    client_errors: int        # of `bad`: timeouts, connection errors
    other: int                # 4xx and the like
    wrong_content: int        # 200 with the wrong size or shape
    statuses: dict[str, int] = field(default_factory=dict)
    first_errors: list[str] = field(default_factory=list)


def summarize(samples: list[Sample]) -> Summary:
    """Latency figures; a failure (anything but 200) counts as infinitely slow for
    p50/p90/p99/max, so a p99 under a bound means at least 99 % answered 200 in time."""
    lat = [s.seconds if s.ok else math.inf for s in samples]
    ok_lat = [s.seconds for s in samples if s.ok]
    statuses = Counter(str(s.status) if s.status is not None else "no answer" for s in samples)
    errors = [f"{s.status} {s.code or ''} {s.error or ''} (id {s.message_id}, {s.seconds:.2f} s)".strip()
              for s in samples if not s.ok][:5]
    return Summary(
        count=len(samples), ok=len(ok_lat),
        p50=percentile(lat, 50), p90=percentile(lat, 90), p99=percentile(lat, 99), max=max(lat, default=math.nan),
        p99_ok=percentile(ok_lat, 99),
        allowed_failures=sum(s.allowed_failure for s in samples),
        bad=sum(s.bad for s in samples),
        client_errors=sum(s.status is None for s in samples),
        other=sum(s.status is not None and s.status != 200 and s.status < 500 for s in samples),
        wrong_content=sum(s.ok and s.size_ok is False for s in samples),
        statuses=dict(statuses), first_errors=errors)


def _ms(x: float) -> str:
    return "inf" if math.isinf(x) else "n/a" if math.isnan(x) else f"{x * 1000:.0f} ms"


def format_summary(s: Summary) -> str:
    return (f"{s.count} body fetches, {s.ok} ok: p50 {_ms(s.p50)}, p90 {_ms(s.p90)}, p99 {_ms(s.p99)}, "
            f"max {_ms(s.max)} (failures count as inf; p99 of the 200s {_ms(s.p99_ok)}); "
            f"503/504 with Retry-After {s.allowed_failures}, other 5xx or no answer {s.bad} "
            f"(client timeouts/errors {s.client_errors}), 4xx {s.other}, wrong content {s.wrong_content}; "
            f"statuses {s.statuses}" + (f"; first failures: {s.first_errors}" if s.first_errors else ""))


__all__ = ["BodyLoad", "MessagePool", "Sample", "ServeApi", "Summary", "TOKEN", "account_body",
           "folder_progress", "format_summary", "percentile", "serve_env", "summarize"]

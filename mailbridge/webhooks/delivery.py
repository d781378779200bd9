"""Webhook delivery: the `events` table as an outbox, one trio task per webhook.

`Deliverers.run` (one per `serve` process) keeps a `Worker` for every enabled webhook
whose advisory lock it holds (class WEBHOOK_LOCK_CLASS, key the webhook's id, on the
process's lock connections): of several `serve` processes exactly one delivers a given
webhook, and when it dies the others take the webhook over at their next rescan.  It
learns of new events and of changed webhooks at once (LISTEN on `mailbridge_webhooks`,
fired by triggers on `events` and `webhooks`), with a rescan and a periodic look as the
safety net.  The LISTEN connection is open only while the process delivers a webhook.

A worker walks its webhook's events in delivery order below the horizon
(`mailbridge.store.webhooks`), one POST per event, each signed
(`mailbridge.webhooks.signing`) and carrying its id in `Mailbridge-Event-Id`.  The
cursor moves past an event only after the receiver answered 2xx; the 2xx answers of up
to COMMIT_SECONDS are recorded in one statement (and always before a failure, at the end
of a batch and on a stop), so a `kill -9` repeats at most the event in flight and those
answered in the last COMMIT_SECONDS, with the same ids (at least once).  A
failure (a non-2xx status, a redirect, no answer within the timeout, no connection)
stops the walk: the same event is tried again after an exponential backoff with jitter
(`mailbridge.webhooks.backoff`), and once it has failed for MAILBRIDGE_WEBHOOK_RETRY_HOURS
the webhook is parked with the last error kept.  Each webhook has its own task and HTTP
client and uses the database only between requests: a slow or dead receiver delays
nothing but its own webhook.  Redirects are never followed; at most
MAX_RESPONSE_BYTES of an answer are read.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable
from urllib.parse import urlsplit

import httpx
import trio

from mailbridge import __version__, metrics
from mailbridge.aio.db import Database
from mailbridge.aio.locks import Lease, LockConnections
from mailbridge.config import Settings
from mailbridge.errors import ConfigError, DatabaseError, SecretError
from mailbridge.secrets import Cipher
from mailbridge.store import webhooks as store
from mailbridge.store.db import Db
from mailbridge.store.webhooks import Webhook
from mailbridge.webhooks import payloads, signing
from mailbridge.webhooks.backoff import Backoff

log = logging.getLogger(__name__)

WEBHOOK_LOCK_CLASS = 0x6D65  # first key of a webhook's advisory lock ("me")
CHANNEL = "mailbridge_webhooks"  # payload "events" (new events) or "webhooks" (one changed)
RESCAN_SECONDS = 5.0   # seconds between looks at the webhooks table (besides notifications)
IDLE_SECONDS = 5.0     # seconds between looks for events without a notification
RETRY_AFTER = 3.0      # seconds after a database error
BATCH = 100            # events read per look
COMMIT_SECONDS = 0.2   # most seconds of 2xx deliveries recorded in one statement (what a kill -9 repeats)
RECORD_TIMEOUT = 5.0   # seconds a stop waits to record the deliveries made
MAX_RESPONSE_BYTES = 64 * 1024
ERROR_TEXT = 300       # characters of a receiver's answer kept in last_error


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one POST went: the status (None: no answer) and, unless 2xx, why it failed."""

    status: int | None
    error: str | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.error is None


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= ERROR_TEXT else text[:ERROR_TEXT] + "…"


def new_client(timeout: float) -> httpx.AsyncClient:
    """The HTTP client of one webhook: no redirects, bounded waits, its own connections."""
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False,
                             limits=httpx.Limits(max_connections=2, max_keepalive_connections=1))


async def post(client: httpx.AsyncClient, url: str, body: bytes, secret: str, event_id: int, *,
               timeout: float, clock: Callable[[], float] = time.time) -> Attempt:
    """POST one signed event; never raises for what the receiver or the network does."""
    headers = {"Content-Type": "application/json", "User-Agent": f"mailbridge/{__version__}",
               signing.EVENT_ID_HEADER: str(event_id), signing.HEADER: signing.sign(secret, int(clock()), body)}
    started = trio.current_time()
    status: int | None = None

    def done(error: str | None) -> Attempt:
        return Attempt(status, error, trio.current_time() - started)

    try:
        with trio.fail_after(timeout):
            async with client.stream("POST", url, content=body, headers=headers) as response:
                status = response.status_code
                text = bytearray()
                async for chunk in response.aiter_raw():
                    text += chunk[:MAX_RESPONSE_BYTES - len(text)]
                    if len(text) >= MAX_RESPONSE_BYTES:
                        break  # the rest is not read: leaving the block drops the connection
    except trio.TooSlowError:
        return done(f"no answer within {timeout:g} s")
    except httpx.TimeoutException:
        return done(f"no answer within {timeout:g} s")
    except httpx.ConnectError as exc:
        return done(_clip(f"cannot connect: {exc}" if str(exc) else "cannot connect"))
    except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as exc:
        return done(_clip(f"{type(exc).__name__}: {exc}"))
    if 200 <= status < 300:
        return done(None)
    if 300 <= status < 400:
        where = urlsplit(response.headers.get("Location", "")).netloc or "elsewhere"
        return done(f"HTTP {status}: a redirect (to {where}) is not followed; give the webhook its final URL")
    answer = bytes(text).decode("utf-8", "replace")
    return done(_clip(f"HTTP {status}" + (f": {answer}" if answer.strip() else "")))


async def send_test(db: Db, settings: Settings, webhook_id: int) -> Attempt:
    """Send a `webhook.test` event (id 0) to the webhook now and say how it went; the
    delivery state is left as it is (`mailbridge webhooks test`)."""
    hook = await store.get(db, webhook_id)
    secret = Cipher(settings.require_keys()).decrypt(await store.secret_of(db, webhook_id))
    body = payloads.encode(payloads.test_event(hook.id, datetime.now(timezone.utc)))
    async with new_client(settings.webhook_timeout_seconds) as client:
        return await post(client, hook.url, body, secret, 0, timeout=settings.webhook_timeout_seconds)


class Worker:
    """Delivers one webhook while this process holds its lock (see the module doc)."""

    def __init__(self, owner: "Deliverers", webhook_id: int, lease: Lease) -> None:
        self.owner = owner
        self.id = webhook_id
        self.lease = lease
        self._news = trio.Event()     # new events, or the webhook changed
        self._changed = trio.Event()  # the webhook changed (a resume ends a backoff wait)
        self.stopped = False

    def wake(self, changed: bool = False) -> None:
        self._news.set()
        if changed:
            self._changed.set()

    def stop(self) -> None:
        self.stopped = True
        self.wake(changed=True)

    async def run(self) -> None:
        try:
            async with new_client(self.owner.timeout) as client, trio.open_nursery() as nursery:
                async def lost() -> None:
                    await self.lease.lost.wait()
                    log.warning("webhook %d: its lock connection was lost; another process takes it over", self.id)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(lost)
                await self._loop(client)
                nursery.cancel_scope.cancel()
        finally:
            if self.owner.workers.get(self.id) is self:
                del self.owner.workers[self.id]

            async def forget_owner(conn: object) -> None:
                await store.set_owner(conn, self.id, None, only_if=self.owner.owner_name)  # type: ignore[arg-type]

            await self.lease.release(before=forget_owner)

    async def _wait(self, seconds: float, *, news: bool) -> None:
        with trio.move_on_after(max(0.0, seconds)):
            await (self._news if news else self._changed).wait()

    async def _loop(self, client: httpx.AsyncClient) -> None:
        while not self.stopped:
            self._changed = trio.Event()
            try:
                hook = await store.find(self.owner.db, self.id)
                if hook is None or not hook.enabled:
                    return
                if hook.parked:
                    await self._wait(self.owner.rescan, news=False)
                    continue
                if hook.next_attempt_at is not None:
                    wait = (hook.next_attempt_at - await store.now(self.owner.db)).total_seconds()
                    if wait > 0:
                        await self._wait(wait, news=False)
                        continue
                self._news = trio.Event()  # what arrives from here on brings another look
                if not await self._look(client, hook):
                    await self._wait(self.owner.idle, news=True)
            except (DatabaseError, SecretError, ConfigError) as exc:
                log.warning("webhook %d: %s; retrying in %g s", self.id, exc, RETRY_AFTER)
                await trio.sleep(RETRY_AFTER)
            except Exception:  # noqa: BLE001 - a bug here must not end serve (the sync, the API)
                log.exception("webhook %d: unexpected error; retrying in %g s", self.id, RETRY_AFTER)
                await trio.sleep(RETRY_AFTER)

    async def _look(self, client: httpx.AsyncClient, hook: Webhook) -> bool:
        """Deliver what is due now; True when there may be more at once."""
        db = self.owner.db
        below = await store.horizon(db)
        events = await store.due_events(db, hook, below, self.owner.batch)
        if not events:
            if below > hook.cursor_xid:
                await store.skip_to(db, hook.id, below)
            return False
        secret = self.owner.cipher().decrypt(await store.secret_of(db, hook.id))
        messages = await store.messages_by_id(db, [m for e in events if (m := payloads.message_of(e)) is not None])
        folders = await store.folder_names(db, [e["folder_id"] for e in events if e["folder_id"] is not None])
        label = str(hook.id)
        # delivered (2xx) but not yet recorded: (xid, id, status) of the last, and how many
        pending: tuple[int, int, int] | None = None
        count = 0
        recorded_at = trio.current_time()

        async def record() -> None:
            nonlocal pending, count, recorded_at
            if pending is not None:
                xid, event_id, status = pending
                await store.delivered(db, hook.id, xid, event_id, status, count=count)
                pending, count = None, 0
            recorded_at = trio.current_time()

        try:
            for event in events:
                if not self.lease.held or self.stopped:
                    await record()
                    return False
                body = payloads.encode(payloads.event_json(event, messages, folders))
                attempt = await post(client, hook.url, body, secret, event["id"], timeout=self.owner.timeout)
                metrics.WEBHOOK_SECONDS.observe(attempt.seconds)
                if attempt.ok:
                    assert attempt.status is not None
                    pending, count = (event["xid"], event["id"], attempt.status), count + 1
                    metrics.WEBHOOK_DELIVERIES.labels(label, "delivered").inc()
                    if trio.current_time() - recorded_at >= self.owner.commit_seconds:
                        await record()
                    continue
                await record()
                await self._failed(hook, event["id"], attempt)
                return False
            await record()
        finally:
            if pending is not None:  # cancelled (a stop, the lock lost) or a database error: keep what went out
                with trio.CancelScope(shield=True), trio.move_on_after(RECORD_TIMEOUT):
                    try:
                        await record()
                    except DatabaseError as exc:
                        log.warning("webhook %d: cannot record the last deliveries (%s); they are repeated",
                                    hook.id, exc)
        if len(events) < self.owner.batch:
            await store.skip_to(db, hook.id, below)  # nothing else below the horizon
            return False
        return True

    async def _failed(self, hook: Webhook, event_id: int, attempt: Attempt) -> None:
        db = self.owner.db
        now = await store.now(db)
        failing_for = (now - hook.failing_since).total_seconds() if hook.failing_since is not None else 0.0
        retry_in = self.owner.backoff.next_step(hook.attempts + 1, failing_for)
        assert attempt.error is not None
        await store.failed(db, hook.id, attempt.status, attempt.error, retry_in=retry_in)
        label = str(hook.id)
        if retry_in is None:
            metrics.WEBHOOK_DELIVERIES.labels(label, "parked").inc()
            log.warning("webhook %d: event %d failed for %.1f h (%s); parked: `mailbridge webhooks resume %d` "
                        "tries again", hook.id, event_id, failing_for / 3600, attempt.error, hook.id)
        else:
            metrics.WEBHOOK_DELIVERIES.labels(label, "failed").inc()
            log.info("webhook %d: event %d: %s; next try in %.1f s", hook.id, event_id, attempt.error, retry_in)


class Deliverers:
    """This process's webhook workers (see the module doc)."""

    def __init__(self, db: Database, locks: LockConnections, settings: Settings, *, owner: str,
                 backoff: Backoff | None = None, rescan: float = RESCAN_SECONDS, idle: float = IDLE_SECONDS,
                 batch: int = BATCH, commit_seconds: float = COMMIT_SECONDS) -> None:
        self.db = db
        self.locks = locks
        self.settings = settings
        self.owner_name = owner
        self.backoff = backoff or Backoff(retry_hours=settings.webhook_retry_hours)
        self.timeout = settings.webhook_timeout_seconds
        self.rescan = rescan
        self.idle = idle
        self.batch = batch
        self.commit_seconds = commit_seconds
        self.workers: dict[int, Worker] = {}
        self._rescan_now = trio.Event()
        self._listening: trio.CancelScope | None = None
        self._cipher: Cipher | None = None

    def cipher(self) -> Cipher:
        if self._cipher is None:
            self._cipher = Cipher(self.settings.require_keys())
        return self._cipher

    def _wake_all(self, changed: bool) -> None:
        for worker in list(self.workers.values()):
            worker.wake(changed)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver until cancelled; database errors are logged and retried, never raised."""
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                self._rescan_now = trio.Event()
                try:
                    await self._rescan(nursery)
                except DatabaseError as exc:
                    log.warning("webhooks: %s; looking again in %g s", exc, self.rescan)
                except Exception:  # noqa: BLE001 - a bug here must not end serve
                    log.exception("webhooks: unexpected error; looking again in %g s", self.rescan)
                with trio.move_on_after(self.rescan):
                    await self._rescan_now.wait()

    async def _rescan(self, nursery: trio.Nursery) -> None:
        ids = await store.deliverable_ids(self.db)
        for webhook_id in ids:
            if webhook_id in self.workers:
                continue

            async def record_owner(conn: object, webhook_id: int = webhook_id) -> None:
                await store.set_owner(conn, webhook_id, self.owner_name)  # type: ignore[arg-type]

            lease = await self.locks.try_lock(webhook_id, WEBHOOK_LOCK_CLASS, then=record_owner)
            if lease is None:
                continue  # another process delivers it
            worker = Worker(self, webhook_id, lease)
            self.workers[webhook_id] = worker
            log.info("webhook %d: delivering from this process", webhook_id)
            nursery.start_soon(worker.run)
        for webhook_id, worker in list(self.workers.items()):
            if webhook_id not in ids:
                worker.stop()
        # the LISTEN connection only while this process delivers some webhook: without
        # webhooks serve opens no connection more than before
        if self.workers and self._listening is None:
            self._listening = trio.CancelScope()
            nursery.start_soon(self._listen, self._listening)
        elif not self.workers and self._listening is not None:
            self._listening.cancel()
            self._listening = None

    async def _listen(self, scope: trio.CancelScope) -> None:
        with scope:
            await self._listen_until_cancelled()

    async def _listen_until_cancelled(self) -> None:
        while True:
            try:
                async with self.db.listen(CHANNEL) as notes:
                    self._rescan_now.set()  # what changed while not listening
                    self._wake_all(True)
                    async for note in notes:
                        changed = note != "events"
                        if changed:
                            self._rescan_now.set()
                        self._wake_all(changed)
                log.warning("webhooks: LISTEN connection lost; reconnecting")
            except DatabaseError as exc:
                log.warning("webhooks: cannot LISTEN (%s); retrying in %g s", exc, RETRY_AFTER)
            await trio.sleep(RETRY_AFTER)


async def run_webhooks(db: Database, locks: LockConnections, settings: Settings, owner: str, *,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """`serve`'s webhook delivery (see `Deliverers`)."""
    await Deliverers(db, locks, settings, owner=owner).run(task_status=task_status)


__all__ = ["Attempt", "Deliverers", "WEBHOOK_LOCK_CLASS", "Worker", "post", "run_webhooks", "send_test"]

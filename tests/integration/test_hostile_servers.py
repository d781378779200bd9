"""`mailbridge serve` against hostile servers (issue 10's catalogue), as a real process.

One `serve` process for the module, with two healthy accounts (real Dovecot users).  Each
case adds one hostile account behind `tests.support.hostile_imap` (a real TCP peer
proxying to its own Dovecot user), lets it sync, turns the fault on, and checks: the
process stays up and `/health` answers 200 throughout; each healthy account mirrors a
message appended during the fault within 5 s; the hostile account shows a named health
state with the reason; its reconnects follow the backoff (counted at the harness); once
the server behaves the mirror converges exactly.  The last test stops the process with
SIGTERM (exit 0, every lock released) and greps everything it printed for the passwords
(raw, IMAP-quoted, base64) and the API token.

Timings are shortened through the product's tunables (a 2 s poll tick, which is also
the least wait after a server turned us away; 5 s command timeout).
"""

from __future__ import annotations

import base64
import json
import random
import secrets
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from mailbridge.aio.db import Database, execute_once, with_database
from mailbridge.aio.loop import run as run_with_loop
from mailbridge.secrets import generate_key
from mailbridge.testing.imapctl import MailboxClient
from mailbridge.testing.mailgen import make_message
from tests.support.actors import insert_account, settings_for
from tests.support.cli import run_cli
from tests.support.hostile_imap import (
    BYE_TOO_MANY,
    BYE_UNAVAILABLE,
    O365_THROTTLE,
    SSH_BANNER,
    Answer,
    ByeOn,
    EndlessLine,
    Fault,
    HostileImap,
    HugeLiteral,
    PoisonList,
    WrongTag,
    code_answer,
    running_hostile,
)
from tests.support.mirror import add_account, assert_exact, base_env, fill_small, mirror, server_truth
from tests.support.processes import Serve

POLL = 2.0  # MAILBRIDGE_POLL_SECONDS: also the least wait after "unavailable"
OBSERVE = 5.0  # seconds each fault is watched for reconnects
TOKEN = "hostile-suite-token-" + secrets.token_hex(8)
FOLDERS = ("INBOX", "Archive")


def q(dsn: str, sql: str, *args: Any) -> Any:
    """One value from the database (a blocking call: the tests here are synchronous)."""

    async def fetch() -> Any:
        async with Database.connect(dsn, max_size=1) as db:
            return await db.fetchval(sql, *args)
    return run_with_loop(fetch)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def count_messages(dsn: str, account_id: int) -> int:
    return q(dsn, "SELECT count(*) FROM messages WHERE account_id = $1", account_id)


def server_count(dovecot, user) -> int:
    return sum(len(v) for v in server_truth(dovecot, user).values())


@dataclass
class World:
    """The module's serve process and what the cases share."""

    serve: Serve
    dsn: str
    env: dict[str, str]
    settings: Any
    dovecot: Any
    healthy: list[tuple[Any, int]]
    users: list[Any] = field(default_factory=list)  # every user whose password must stay secret
    health_failures: list[str] = field(default_factory=list)
    stopped: tuple[int, float] | None = None
    _stop_poller: threading.Event = field(default_factory=threading.Event)

    def http(self, path: str, method: str = "GET", body: dict | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.serve.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read() or b"null")

    def actor(self, account_id: int) -> dict | None:
        actors = self.http("/actors")
        entries = actors["actors"] if isinstance(actors, dict) else actors
        return next((a for a in entries if a["account_id"] == account_id), None)

    def poll_health(self) -> None:
        """Background: /health must answer 200 every time, all along."""
        while not self._stop_poller.wait(0.25):
            try:
                with urllib.request.urlopen(self.serve.url + "/health", timeout=5) as response:
                    if response.status != 200:
                        self.health_failures.append(f"{time.monotonic():.1f}: {response.status}")
            except (urllib.error.URLError, OSError) as exc:
                self.health_failures.append(f"{time.monotonic():.1f}: {exc}")

    def stop(self) -> tuple[int, float]:
        if self.stopped is None:
            self._stop_poller.set()
            self.stopped = self.serve.stop()
        return self.stopped


@pytest.fixture(scope="module")
def world(pg_server_dsn, template_db, dovecot, tmp_path_factory):
    name = f"mb_hostile_{secrets.token_hex(4)}_test"
    run_with_loop(execute_once, pg_server_dsn, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    dsn = with_database(pg_server_dsn, name)
    key = generate_key()
    env = base_env(dsn, key, tmp_path_factory.mktemp("hostile"), MAILBRIDGE_POLL_SECONDS=str(POLL),
                   MAILBRIDGE_IMAP_TIMEOUT="5", MAILBRIDGE_CONNECT_TIMEOUT="3", MAILBRIDGE_API_TOKEN=TOKEN,
                   MAILBRIDGE_LOG_LEVEL="debug")
    healthy = []
    for _ in range(2):
        user = dovecot.add_user()
        fill_small(dovecot, user, folders=FOLDERS, per_folder=20)
        healthy.append((user, add_account(env, dovecot, user)))
    serve = Serve(env)
    w = World(serve, dsn, env, settings_for(dsn, key), dovecot, healthy, users=[u for u, _ in healthy])
    poller = threading.Thread(target=w.poll_health, daemon=True)
    try:
        serve.wait_serving()
        poller.start()
        for user, account_id in healthy:
            wait_until(lambda: count_messages(dsn, account_id) == 40
                       and q(dsn, "SELECT health FROM accounts WHERE id = $1", account_id) == "healthy",
                       30, f"healthy account {account_id} to sync")
        yield w
    finally:
        w._stop_poller.set()
        serve.kill()
        run_with_loop(execute_once, pg_server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- the catalogue ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    fault: Fault
    trigger: str                 # "reconnect": cut the connection; "mail": new mail makes it fetch
    health: frozenset[str]       # the named states the account may show during the fault
    reason: str                  # a word its health reason holds (case-insensitive)
    min_gap: float               # least seconds between two reconnects during the fault
    max_connections: int | None = None  # most connections during the fault window
    parked: bool = False         # waits for new credentials (not for the server)


UNREACHABLE = frozenset({"unreachable"})
DEGRADED = frozenset({"degraded"})
BROKEN = frozenset({"degraded", "unreachable"})

CASES = {
    "greeting BYE too many connections": Case(BYE_TOO_MANY, "reconnect", UNREACHABLE, "too many connections", POLL * 0.95),
    "greeting BYE [UNAVAILABLE]": Case(BYE_UNAVAILABLE, "reconnect", UNREACHABLE, "unavailable", POLL * 0.95),
    "greeting of an SSH server": Case(SSH_BANNER, "reconnect", UNREACHABLE, "ssh", 0.7),
    "tagged answer with a wrong tag": Case(WrongTag(None), "reconnect", BROKEN, "tag", 0.7),
    "BYE in the middle of a FETCH": Case(ByeOn("UID FETCH"), "mail", BROKEN, "bye", 0.7),
    "a literal of 2 GB": Case(HugeLiteral("UID FETCH"), "mail", BROKEN, "literal", 0.7),
    "a line that never ends": Case(EndlessLine("UID FETCH"), "mail", BROKEN, "line", 0.7),
    "folder names with CR, LF, NUL": Case(PoisonList(), "mail", DEGRADED, "skipped", 0.0, max_connections=0),
    "NO [LIMIT]": Case(Answer("UID FETCH", code_answer("LIMIT")), "mail", DEGRADED, "limit", POLL * 0.95),
    "NO [INUSE]": Case(Answer("UID FETCH", code_answer("INUSE")), "mail", DEGRADED, "inuse", POLL * 0.95),
    "NO [OVERQUOTA]": Case(Answer("UID FETCH", code_answer("OVERQUOTA")), "mail", DEGRADED, "overquota", 0.7),
    "NO [SERVERBUG]": Case(Answer("UID FETCH", code_answer("SERVERBUG")), "mail", DEGRADED, "serverbug", 0.7),
    "LOGIN NO [UNAVAILABLE]": Case(Answer("LOGIN", b"NO [UNAVAILABLE] the user database is down, try later"),
                                   "reconnect", UNREACHABLE, "unavailable", POLL * 0.95),
    "LOGIN NO [AUTHENTICATIONFAILED]": Case(Answer("LOGIN", b"NO [AUTHENTICATIONFAILED] Authentication failed."),
                                            "reconnect", frozenset({"auth_failed"}), "authentication",
                                            0.0, max_connections=1, parked=True),
    "Office 365 throttling": Case(Answer("UID FETCH", O365_THROTTLE), "mail", DEGRADED, "throttl", 1.95),
}


def append_one(dovecot, user, n: int) -> None:
    with MailboxClient(dovecot, user) as client:
        client.append("INBOX", make_message(n, rng=random.Random(n)))


@pytest.mark.parametrize("name", list(CASES))
def test_a_hostile_server_is_that_accounts_problem_alone(world: World, name: str) -> None:
    case = CASES[name]
    dsn, dovecot = world.dsn, world.dovecot
    user = dovecot.add_user()
    world.users.append(user)
    fill_small(dovecot, user, folders=FOLDERS, per_folder=20)
    with running_hostile("127.0.0.1", dovecot.port) as hostile:
        account_id = run_with_loop(_insert, world, user, hostile.port)
        try:
            _run_case(world, case, user, account_id, hostile)
        finally:
            run_with_loop(_delete, world.dsn, account_id)
    assert world.serve.proc.poll() is None, "serve exited"
    assert not world.health_failures, world.health_failures


async def _insert(world: World, user, port: int) -> int:
    async with Database.connect(world.dsn, max_size=1) as db:
        return await insert_account(db, world.settings, username=user.username, password=user.password, port=port)


async def _delete(dsn: str, account_id: int) -> None:
    async with Database.connect(dsn, max_size=1) as db:
        await db.execute("DELETE FROM accounts WHERE id = $1", account_id)


def _health(dsn: str, account_id: int) -> tuple[str, str]:
    async def fetch() -> tuple[str, str]:
        async with Database.connect(dsn, max_size=1) as db:
            row = await db.fetchrow("SELECT health, health_reason FROM accounts WHERE id = $1", account_id)
            return row["health"], row["health_reason"] or ""
    return run_with_loop(fetch)


def _run_case(world: World, case: Case, user, account_id: int, hostile: HostileImap) -> None:
    dsn, dovecot = world.dsn, world.dovecot
    wait_until(lambda: count_messages(dsn, account_id) == 40 and _health(dsn, account_id)[0] == "healthy",
               20, "the hostile account's first sync")
    time.sleep(0.5)  # into IDLE

    # the fault
    before = {aid: count_messages(dsn, aid) for _, aid in world.healthy}
    started = time.monotonic()
    hostile.fault = case.fault
    if case.trigger == "reconnect":
        hostile.drop_all_threadsafe()
    else:
        append_one(dovecot, user, 7000 + account_id)
    for n, (healthy_user, aid) in enumerate(world.healthy):
        append_one(dovecot, healthy_user, 8000 + 10 * account_id + n)
    appended = time.monotonic()
    for _, aid in world.healthy:
        wait_until(lambda: count_messages(dsn, aid) == before[aid] + 1, 5.0 - (time.monotonic() - appended),
                   f"healthy account {aid} to mirror new mail during the fault", every=0.05)

    seen = wait_until(lambda: (h := _health(dsn, account_id))[0] in case.health and case.reason in h[1].lower()
                      and h, 20, f"health {set(case.health)} naming {case.reason!r} "
                                 f"(now {_health(dsn, account_id)})")
    status = world.actor(account_id)
    assert status is not None and status["health"] in case.health, status
    if case.reason == "throttl":  # /actors shows when it retries, and why
        backoff = wait_until(lambda: (s := world.actor(account_id)) and s["state"] == "backoff" and s, 10,
                             "the throttled actor's backoff")
        assert "throttl" in (backoff["last_error"] or "").lower() and backoff["retry_at"], backoff
    if isinstance(case.fault, PoisonList):  # the defect, where the user looks
        shown = run_cli("accounts", "show", str(account_id), env=world.env)
        assert shown.code == 0 and "skipped" in shown.out and "Poison" in shown.out, shown.out
    remaining = OBSERVE - (time.monotonic() - started)
    if remaining > 0:
        time.sleep(remaining)
    connections = hostile.connections_since(started)
    gaps = [b - a for a, b in zip(connections, connections[1:])]
    assert all(g >= case.min_gap for g in gaps), (seen, connections, gaps)
    if case.max_connections is not None:
        assert len(connections) <= case.max_connections, (seen, connections)
    else:
        assert len(connections) <= 1 + OBSERVE / max(case.min_gap, 0.5), (seen, connections)

    # the server behaves again
    hostile.behave()
    if case.parked:
        world.http(f"/accounts/{account_id}", "PATCH", {"password": user.password})
    expected = server_count(dovecot, user)
    wait_until(lambda: count_messages(dsn, account_id) == expected and _health(dsn, account_id)[0] == "healthy",
               30, f"the hostile account to converge (health now {_health(dsn, account_id)})")
    assert_exact(server_truth(dovecot, user), run_with_loop(mirror, dsn, account_id))


def test_after_the_faults_sigterm_exits_0_with_every_lock_released_and_no_secret_in_any_log(world: World) -> None:
    for user, account_id in world.healthy:
        assert_exact(server_truth(world.dovecot, user), run_with_loop(mirror, world.dsn, account_id))
    code, took = world.stop()
    assert code == 0 and took < 10, (code, took, world.serve.err[-20:])
    locks = q(world.dsn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND database = "
                         "(SELECT oid FROM pg_database WHERE datname = current_database())", 0x6D62)
    assert locks == 0
    assert not world.health_failures, world.health_failures
    text = world.serve.text()
    assert "listening on" in text  # the log is there to search
    for user in world.users:
        pw = user.password
        forms = {pw, f'"{pw}"', base64.b64encode(pw.encode()).decode(),
                 base64.b64encode(f"\0{user.username}\0{pw}".encode()).decode(),
                 base64.b64encode(f"{user.username}\0{user.username}\0{pw}".encode()).decode()}
        for form in forms:
            assert form not in text, f"a password of {user.username} is in serve's output"
    assert TOKEN not in text

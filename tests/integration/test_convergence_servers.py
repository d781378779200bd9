"""The mirror converges exactly on Cyrus IMAP and Courier-IMAP, each with its own
capabilities (Cyrus: CONDSTORE, QRESYNC, MOVE, OBJECTID, no NOTIFY; Courier: none of
CONDSTORE, QRESYNC, NOTIFY, MOVE), through every kind of change: initial sync, new mail,
flags set and cleared, expunges, moves (UID MOVE where offered, else COPY + \\Deleted +
EXPUNGE), folder create, rename and delete, and a UIDVALIDITY change.  After each step
`mailbridge sync --once` runs and the mirror must equal the server's truth exactly
(messages and the folder list).

Dovecot is covered by tests/integration/test_sync_once.py, test_convergence.py and
test_verify.py; it is not run again here.

A UIDVALIDITY change is made the way a user (or an admin) can make it on these
servers: delete the folder and create it again under the same name.  Neither server
offers a command that resets the UIDVALIDITY of a folder in place (Dovecot's
`doveadm mailbox update --uid-validity` has no counterpart here); the test asserts the
server really gave the new folder another UIDVALIDITY.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import pytest

from mailbridge.aio.db import Database
from mailbridge.testing.imapctl import MailboxClient
from mailbridge.testing.mailgen import corpus, make_message
from mailbridge.testing.servers import CourierServer, CyrusServer
from tests.integration.test_other_servers import _running
from tests.support.cli import run_cli
from tests.support.mirror import FOLDERS, add_account, assert_exact, base_env, fill, mirror, server_truth

PER_FOLDER = 15


@pytest.fixture(scope="module")
def cyrus() -> Iterator[CyrusServer | CourierServer]:
    yield from _running(CyrusServer)


@pytest.fixture(scope="module")
def courier() -> Iterator[CyrusServer | CourierServer]:
    yield from _running(CourierServer)


async def _folders(db_dsn: str, account_id: int) -> dict[str, int | None]:
    """The mirror's folders: name → UIDVALIDITY."""
    async with Database.connect(db_dsn) as db:
        rows = await db.fetch("SELECT name, uidvalidity FROM folders WHERE account_id = $1", account_id)
    return {r["name"]: r["uidvalidity"] for r in rows}


class _Step:
    """`sync --once`, then the mirror must equal the server exactly (with timings)."""

    def __init__(self, server, user, env, db_dsn, account_id) -> None:
        self.server, self.user, self.env, self.db_dsn, self.account_id = server, user, env, db_dsn, account_id
        self.took: dict[str, float] = {}

    async def __call__(self, name: str) -> dict[str, dict[int, dict]]:
        started = time.monotonic()
        result = run_cli("sync", "--once", env=self.env, timeout=120)
        self.took[name] = time.monotonic() - started
        assert result.code == 0, f"{name}: {result.err}"
        assert "Traceback" not in result.err, f"{name}: {result.err}"
        truth = server_truth(self.server, self.user)
        mirrored = await mirror(self.db_dsn, self.account_id)
        try:
            assert_exact(truth, mirrored)
        except AssertionError as exc:
            raise AssertionError(f"after {name}: {exc}") from exc
        folders = await _folders(self.db_dsn, self.account_id)
        assert set(folders) == set(truth), f"after {name}: folders differ: {sorted(folders)} vs {sorted(truth)}"
        return truth


@pytest.mark.parametrize("kind", ["cyrus", "courier"])
async def test_every_kind_of_change_converges_after_sync_once(kind, request, db_dsn, encryption_key, tmp_path):
    server = request.getfixturevalue(kind)
    f = server.folder
    user = server.add_user()
    folders = [f(name) for name in FOLDERS]
    fill(server, user, per_folder=PER_FOLDER, folders=folders)
    env = base_env(db_dsn, encryption_key, tmp_path)
    account_id = add_account(env, server, user)
    step = _Step(server, user, env, db_dsn, account_id)
    with MailboxClient(server, user) as probe:
        caps = set(probe.capabilities)
    assert ("MOVE" in caps) == (kind == "cyrus"), sorted(caps)
    assert ("CONDSTORE" in caps) == (kind == "cyrus"), sorted(caps)

    truth = await step("initial")
    assert sum(len(v) for v in truth.values()) == PER_FOLDER * len(FOLDERS)

    rng = random.Random(12)
    sent, deep = f("Sent"), f("Lists.python-dev")
    with MailboxClient(server, user) as c:
        c.append("INBOX", make_message(30_001, rng=rng))
        c.append("INBOX", make_message(30_002, rng=rng, kind="encoded"))
        c.append(deep, make_message(30_003, rng=rng))
    truth = await step("new mail")
    assert len(truth["INBOX"]) == PER_FOLDER + 2

    with MailboxClient(server, user) as c:
        inbox = c.uids("INBOX")
        c.store("INBOX", inbox[:3], add=["\\Flagged", "$Later"])
        c.store("INBOX", inbox[3:6], add=["\\Seen"])
        c.store(sent, c.uids(sent)[:4], add=["\\Answered"])
        seen = [u for u, fl in c.flags(deep).items() if "\\Seen" in fl]
        assert seen, "the fill left no \\Seen message to clear"
        c.store(deep, seen, remove=["\\Seen"])
    await step("flags set")
    with MailboxClient(server, user) as c:
        c.store("INBOX", inbox[:2], remove=["\\Flagged", "$Later"])
        c.set_flags(sent, c.uids(sent)[:2], [])
    await step("flags cleared")

    with MailboxClient(server, user) as c:
        gone = c.uids("INBOX")[1:4] + c.uids("INBOX")[-1:]
        c.expunge_uids("INBOX", gone)
        c.expunge_uids(sent, c.uids(sent)[:1])
    truth = await step("expunge")
    assert not set(gone) & set(truth["INBOX"])

    archive = f("Archive")
    with MailboxClient(server, user) as c:
        c.create(archive)
        moving = c.uids("INBOX")[:3]
        if "MOVE" in c.capabilities:
            moved = c.move("INBOX", moving, archive)
        else:  # Courier: no MOVE; what a client does instead
            moved = c.copy("INBOX", moving, archive)
            c.expunge_uids("INBOX", moving)
    truth = await step("move")
    assert set(moved.values()) == set(truth[archive]) and not set(moving) & set(truth["INBOX"])

    created = f("Projekte.Ölpreis")
    with MailboxClient(server, user) as c:
        c.create(created)
        c.append_many(created, list(corpus(4, seed=77)))
    truth = await step("folder create")
    assert len(truth[created]) == 4

    renamed = f("Projekte.Ölpreise 2027")
    with MailboxClient(server, user) as c:
        c.rename(created, renamed)
    truth = await step("folder rename")
    assert created not in truth and len(truth[renamed]) == 4

    with MailboxClient(server, user) as c:
        c.delete(renamed)
    truth = await step("folder delete")
    assert renamed not in truth

    # UIDVALIDITY: the folder deleted and created again under its name, new mail in it
    with MailboxClient(server, user) as c:
        before = c.status(sent)["uidvalidity"]
        old_uids = c.uids(sent)
        c.select("INBOX", readonly=True)  # Courier has no UNSELECT and keeps an open folder
        c.delete(sent)
        time.sleep(1.1)  # both servers derive UIDVALIDITY from the clock (seconds)
        c.create(sent)
        c.append_many(sent, list(corpus(5, seed=99)))
        after = c.status(sent)["uidvalidity"]
        new_uids = c.uids(sent)
    assert after != before, f"{kind} gave the recreated folder the same UIDVALIDITY {before}"
    truth = await step("uidvalidity change")
    assert (await _folders(db_dsn, account_id))[sent] == after
    assert set(truth[sent]) == set(new_uids) and len(old_uids) != len(new_uids)
    print(f"{kind}: sync --once per step: " + ", ".join(f"{k} {v:.1f}s" for k, v in step.took.items()))


class _RecreatingReset:
    """A Cyrus server as `converge()` drives it: its `renumber_folder` (a Dovecot-only
    UIDVALIDITY reset) becomes a new folder (new UIDVALIDITY, new mail) renamed over the
    deleted one, so the name is missing for milliseconds only: a plain delete + create
    leaves a gap in which a poll sees the folder removed and then added (no reset)."""

    def __init__(self, server) -> None:
        self._server = server

    def __getattr__(self, name: str):
        return getattr(self._server, name)

    def renumber_folder(self, user, folder: str) -> None:
        with MailboxClient(self._server, user) as c:
            before = c.status(folder)["uidvalidity"]
            c.create(folder + "-new")
            c.append_many(folder + "-new", list(corpus(3, seed=5)))
            c.delete(folder)
            c.rename(folder + "-new", folder)
            assert c.status(folder)["uidvalidity"] != before


@pytest.mark.slow
async def test_random_changes_converge_under_serve_on_cyrus(cyrus, db_dsn, encryption_key, tmp_path):
    """test_convergence.py's random changes (appends, flags, expunges, UID MOVEs, folder
    create/rename/delete, a UIDVALIDITY change) while `serve` runs against Cyrus. Courier
    is covered by the step-by-step test above only: converge() names folders without
    Courier's "INBOX." prefix."""
    from tests.integration.test_convergence import converge

    user = cyrus.add_user()
    env = base_env(db_dsn, encryption_key, tmp_path, MAILBRIDGE_POLL_SECONDS="1")
    await converge(_RecreatingReset(cyrus), user, env, db_dsn, seed=4)

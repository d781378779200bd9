"""Cyrus IMAP and Courier-IMAP beside Dovecot (real servers, unpacked privately; real
Postgres): each logs in, shows its own capabilities, and `mailbridge sync --once`
mirrors it exactly, first in full, then incrementally.

The servers come from Debian's packages unpacked into a private prefix
(`mailbridge.testing.servers`), never installed (they conflict with dovecot-imapd).
A test skips only when those packages cannot be downloaded, naming the fixing command.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
import shutil

import pytest

from mailbridge.aio.imap import ImapEndpoint, ImapSession
from mailbridge.testing.imapctl import MailboxClient
from mailbridge.testing.mailgen import make_message
from mailbridge.testing.servers import (
    CourierServer,
    CyrusServer,
    PackagesUnavailable,
    ServerPackagesError,
    ensure_unpacked,
    unpack_command,
)
from tests.support.cli import run_cli
from tests.support.mirror import FOLDERS, add_account, assert_exact, base_env, fill, mirror, server_truth

PER_FOLDER = 40


def _running(cls: type[CyrusServer] | type[CourierServer]) -> Iterator[CyrusServer | CourierServer]:
    try:
        ensure_unpacked(cls.kind)
    except PackagesUnavailable as exc:
        pytest.skip(f"{cls.kind}'s Debian packages cannot be downloaded ({str(exc).splitlines()[0][:300]}); "
                    f"fix: {unpack_command(cls.kind)}")
    # not under pytest's basetemp: its 0700 ancestor keeps the servers' `mail` user out
    base = Path(tempfile.mkdtemp(prefix=f"mailbridge-{cls.kind}-"))
    server = cls(base)
    try:
        server.start()
    except ServerPackagesError as exc:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"{cls.kind} did not start: {exc}")
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def cyrus() -> Iterator[CyrusServer | CourierServer]:
    yield from _running(CyrusServer)


@pytest.fixture(scope="module")
def courier() -> Iterator[CyrusServer | CourierServer]:
    yield from _running(CourierServer)


@pytest.fixture
def env(db_dsn, encryption_key, tmp_path):
    return base_env(db_dsn, encryption_key, tmp_path)


async def _capabilities(server, user) -> set[str]:
    endpoint = ImapEndpoint("127.0.0.1", server.port, "none", user.username)
    async with ImapSession.open(endpoint, user.password, connect_timeout=5, timeout=10) as session:
        await session.select("INBOX")
        return {c.upper() for c in session.capabilities}


async def test_cyrus_logs_in_and_shows_its_capabilities(cyrus):
    user = cyrus.add_user()
    caps = await _capabilities(cyrus, user)
    assert {"CONDSTORE", "QRESYNC", "MOVE", "OBJECTID", "IDLE", "UIDPLUS"} <= caps, sorted(caps)
    assert "NOTIFY" not in caps
    assert "Cyrus IMAP 3." in cyrus.greeting


async def test_courier_logs_in_and_shows_its_capabilities(courier):
    user = courier.add_user()
    caps = await _capabilities(courier, user)
    assert {"IDLE", "UIDPLUS", "NAMESPACE"} <= caps, sorted(caps)
    assert not {"CONDSTORE", "QRESYNC", "NOTIFY", "MOVE"} & caps, sorted(caps)
    assert "Courier-IMAP" in courier.greeting


async def test_wrong_password_is_refused(cyrus, courier):
    from mailbridge.errors import ImapAuthError

    for server in (cyrus, courier):
        user = server.add_user()
        with pytest.raises(ImapAuthError):
            MailboxClient(server, user.username, user.password + "x", timeout=15)


@pytest.mark.parametrize("kind", ["cyrus", "courier"])
async def test_sync_once_mirrors_exactly_then_follows_changes(kind, request, env, db_dsn):
    server = request.getfixturevalue(kind)
    user = server.add_user()
    folders = [server.folder(f) for f in FOLDERS]
    fill(server, user, per_folder=PER_FOLDER, folders=folders)
    account_id = add_account(env, server, user)

    first = run_cli("sync", "--once", env=env, timeout=120)
    assert first.code == 0, first.err
    assert "Traceback" not in first.err
    truth = server_truth(server, user)
    assert sum(len(v) for v in truth.values()) == PER_FOLDER * len(FOLDERS)
    assert set(folders) <= set(truth)
    assert_exact(truth, await mirror(db_dsn, account_id))

    sent, lists, deep = server.folder("Sent"), server.folder("Lists"), server.folder("Lists.python-dev")
    with MailboxClient(server, user) as client:
        client.append("INBOX", make_message(10_001, rng=random.Random(5)))
        client.append(deep, make_message(10_002, rng=random.Random(6), kind="encoded"))
        client.store(sent, client.uids(sent)[:3], add=["\\Answered"])
        client.store("INBOX", client.uids("INBOX")[:2], remove=["\\Seen"], add=["$Later"])
        client.expunge_uids(lists, client.uids(lists)[:2])
    second = run_cli("sync", "--once", env=env, timeout=120)
    assert second.code == 0, second.err
    assert_exact(server_truth(server, user), await mirror(db_dsn, account_id))

"""Mirror helpers shared by integration tests: fill a mailbox, read the server's truth
(with a separate stdlib imaplib client) and the mirror, and compare them exactly."""

from __future__ import annotations

import random
from collections.abc import Sequence

from mailbridge.aio.db import Database
from mailbridge.imap.headers import extract_header_fields
from mailbridge.testing.imapctl import MailboxClient
from mailbridge.testing.mailgen import corpus
from tests.support.cli import run_cli

FOLDERS = ["INBOX", "Sent", "Lists", "Lists.python-dev", "Reise & Urlaub.日本語"]


def base_env(db_dsn, encryption_key, tmp_path, **extra: str) -> dict[str, str]:
    """The environment of a `mailbridge` command on the test database (`extra` on top)."""
    return {"DATABASE_URL": db_dsn, "MAILBRIDGE_ENCRYPTION_KEY": encryption_key,
            "MAILBRIDGE_HOME": str(tmp_path / "home"), "MAILBRIDGE_BATCH_SIZE": "100", **extra}


def add_account(env, dovecot, user) -> int:
    result = run_cli("accounts", "add", "--email", f"{user.username}@example.test", "--host", "127.0.0.1",
                     "--port", str(dovecot.port), "--tls", "none", "--username", user.username,
                     "--password-stdin", env=env, input=user.password + "\n")
    assert result.code == 0, result.err
    return int(result.last_line)


def fill(dovecot, user, per_folder: int, seed: int = 1, folders: Sequence[str] = FOLDERS) -> None:
    """`per_folder` generated messages in each of `folders`, some \\Seen, some \\Flagged."""
    rng = random.Random(seed)
    with MailboxClient(dovecot, user) as client:
        for folder in folders:
            if folder != "INBOX":
                client.create(folder)
        for n, folder in enumerate(folders):
            messages = list(corpus(per_folder, seed=seed + n, folder_hint=folder))
            uids = client.append_many(folder, messages)
            client.store(folder, [u for u in uids if rng.random() < 0.4], add=["\\Seen"])
            client.store(folder, [u for u in uids if rng.random() < 0.1], add=["\\Flagged", "$Work"])


def fill_small(dovecot, user, folders=("INBOX", "Sent", "Archive", "Lists.python-dev"), per_folder=40):
    """`per_folder` generated messages in each of `folders`, no flags."""
    with MailboxClient(dovecot, user) as client:
        for folder in folders:
            if folder != "INBOX":
                client.create(folder)
            client.append_many(folder, list(corpus(per_folder, seed=len(folder))))


async def mirror(db_dsn, account_id) -> dict[str, dict[int, dict]]:
    async with Database.connect(db_dsn) as db:
        rows = await db.fetch(
            """SELECT f.name, m.* FROM messages m JOIN folders f ON f.id = m.folder_id
               WHERE m.account_id = $1""", account_id)
    out: dict[str, dict[int, dict]] = {}
    for r in rows:
        out.setdefault(r["name"], {})[r["uid"]] = dict(r)
    return out


def server_truth(dovecot, user) -> dict[str, dict[int, dict]]:
    """Every selectable folder's messages but the excluded ones' (a parent that only holds
    others, e.g. "Lists" of "Lists.python-dev" under a mailbox list index, is \\Noselect)."""
    unselectable = {"\\NOSELECT", "\\NONEXISTENT"}
    with MailboxClient(dovecot, user) as client:
        return {folder: client.fetch_meta(folder) for folder, flags, _ in client.list_folders_detailed()
                if folder not in ("Trash", "Junk", "Spam") and not unselectable & {f.upper() for f in flags}}


def assert_exact(truth, mirrored):
    assert set(mirrored) <= set(truth)
    for folder, server in truth.items():
        rows = mirrored.get(folder, {})
        assert set(rows) == set(server), f"{folder}: UIDs differ"
        for uid, meta in server.items():
            row = rows[uid]
            assert tuple(sorted(row["flags"])) == meta["flags"], (folder, uid)
            assert row["size_bytes"] == meta["size"], (folder, uid)
            assert row["internal_date"] == meta["internal_date"], (folder, uid)
            expected = extract_header_fields(meta["header_bytes"])
            assert row["message_id"] == expected.message_id
            assert row["subject"] == expected.subject
            assert row["from_email"] == expected.from_email
            assert row["from_name"] == expected.from_name
            assert tuple(row["to_emails"]) == expected.to_emails
            assert tuple(row["cc_emails"]) == expected.cc_emails
            assert row["in_reply_to"] == expected.in_reply_to
            assert tuple(row["references_header"]) == expected.references
            assert row["sent_at"] == expected.sent_at

"""No single message can stop a folder (real Dovecot, real Postgres).

The hostile messages of `mailgen.poison_messages()` sit in INBOX among normal mail: one
`mailbridge sync --once` mirrors every one of them, each poison with its defect.  And the
safety net for what no parser foresaw: a batch Postgres refuses for its values is split,
what can be written is, and the rest is stored as placeholders with the refusal as defect.
"""

from __future__ import annotations

import random
import re
import string
from datetime import datetime, timedelta, timezone

from mailbridge.aio.db import Database
from mailbridge.imap.models import MessageMeta
from mailbridge.store.messages import FolderUpdate
from mailbridge.store.search import document_of
from mailbridge.sync.salvage import UNSTORABLE, write_batch
from mailbridge.testing.imapctl import MailboxClient
from mailbridge.testing.mailgen import MaildirWriter, corpus, poison_messages
from tests.support.cli import run_cli
from tests.support.mirror import add_account, assert_exact, base_env, mirror, server_truth
from tests.support.rows import account_with_folder, meta


async def _counts(db_dsn) -> tuple[int, int, datetime | None]:
    async with Database.connect(db_dsn) as db:
        return (await db.fetchval("SELECT count(*) FROM messages"), await db.fetchval("SELECT count(*) FROM events"),
                await db.fetchval("SELECT max(updated_at) FROM messages"))


async def test_poison_messages_among_normal_mail_are_all_mirrored_with_their_defects(
        dovecot, mail_user, db_dsn, encryption_key, tmp_path):
    poisons = poison_messages()
    normal = list(corpus(160, seed=11))
    # normal mail around and between the poison (batches of 100: several hold poison)
    messages = normal[:60] + [p.raw for p in poisons[:9]] + normal[60:120] + [p.raw for p in poisons[9:]] + normal[120:]
    MaildirWriter().write(mail_user, "INBOX", messages)
    env = base_env(db_dsn, encryption_key, tmp_path)
    account_id = add_account(env, dovecot, mail_user)

    first = run_cli("sync", "--once", env=env, timeout=300)
    assert first.code == 0, first.err
    assert "Traceback" not in first.err
    assert "refused for its values" not in first.err  # the parser made every one storable

    truth = server_truth(dovecot, mail_user)
    assert len(truth["INBOX"]) == len(messages)
    rows = await mirror(db_dsn, account_id)
    assert_exact(truth, rows)  # every message, each field as the header parser reads the server's bytes
    inbox = rows["INBOX"]
    uids = sorted(inbox)
    poison_uids = uids[60:69] + uids[129:129 + len(poisons) - 9]
    for poison, uid in zip(poisons, poison_uids):
        row = inbox[uid]
        assert row["size_bytes"] is not None, poison.name  # a real row, not a placeholder
        defects = row["defects"] or []
        if poison.defect is None:
            assert not defects, (poison.name, defects)
        else:
            assert any(re.search(poison.defect, d) for d in defects), (poison.name, defects)
        if poison.sent_at_is_null:
            assert row["sent_at"] is None, poison.name
    by_name = {p.name: inbox[uid] for p, uid in zip(poisons, poison_uids)}
    assert len(by_name["ten-thousand-recipients"]["to_emails"]) == 10_000
    assert by_name["date-9999-utc"]["sent_at"] == datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
    assert by_name["every-separator"]["subject"].startswith("\x1f\x1e\x1d\x1c\ue000")
    assert len(by_name["every-separator"]["subject"]) == 4 + 0xF900 - 0xE000

    # every document, whether mailbridge built it or left it to Postgres, is the server's own
    async with Database.connect(db_dsn) as db:
        assert await db.fetchval("SELECT count(*) FROM search_pending") == 0
        assert await db.fetchval(
            "SELECT count(*) FROM messages m JOIN message_search s ON s.message_id = m.id "
            f"WHERE s.document = {document_of('m')}") == len(messages)

    before = await _counts(db_dsn)
    second = run_cli("sync", "--once", env=env, timeout=300)
    assert second.code == 0, second.err
    assert await _counts(db_dsn) == before  # nothing new written


# Postgres refusing one message's values, as it would for a value no parser foresaw (the
# parsers now keep every known one storable): a trigger raising a data exception.
_REFUSE_ONE = """
CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.subject = 'refuse me' THEN
        RAISE EXCEPTION 'value refused for the test' USING ERRCODE = '22023';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON messages FOR EACH ROW EXECUTE FUNCTION refuse_poison();
"""


async def test_a_message_the_database_refuses_becomes_a_placeholder_and_the_folder_goes_on(
        dovecot, mail_user, db_dsn, encryption_key, tmp_path):
    inbox = list(corpus(45, seed=5))
    inbox[17] = b"Subject: refuse me\r\nMessage-ID: <refused@example.net>\r\n\r\nbody\r\n"
    with MailboxClient(dovecot, mail_user) as client:
        client.append_many("INBOX", inbox)
        client.create("Archive")
        client.append_many("Archive", list(corpus(12, seed=6)))
    async with Database.connect(db_dsn) as db:
        await db.execute(_REFUSE_ONE)
    env = base_env(db_dsn, encryption_key, tmp_path, MAILBRIDGE_BATCH_SIZE="20")
    account_id = add_account(env, dovecot, mail_user)

    first = run_cli("sync", "--once", env=env, timeout=300)
    assert first.code == 0, first.err
    assert "Traceback" not in first.err
    truth = server_truth(dovecot, mail_user)
    rows = await mirror(db_dsn, account_id)
    assert set(rows["INBOX"]) == set(truth["INBOX"])  # every message of the folder has its row
    refused = rows["INBOX"].pop(18)
    assert refused["size_bytes"] is None and refused["message_id"] is None  # a placeholder ...
    assert refused["defects"] == [f"{UNSTORABLE}: value refused for the test"]  # ... saying why
    del truth["INBOX"][18]
    assert_exact(truth, rows)  # all the others exact, the other folder too
    async with Database.connect(db_dsn) as db:
        folder = await db.fetchrow("SELECT initial_sync_complete, initial_low_uid, message_count FROM folders "
                                   "WHERE account_id = $1 AND name = 'INBOX'", account_id)
    assert (folder["initial_sync_complete"], folder["initial_low_uid"], folder["message_count"]) == (True, 1, 45)

    before = await _counts(db_dsn)
    second = run_cli("sync", "--once", env=env, timeout=300)  # within the repair interval: no refetch
    assert second.code == 0, second.err
    assert await _counts(db_dsn) == before

    async with Database.connect(db_dsn) as db:  # the refusal is gone: the repair reads it again
        await db.execute("DROP TRIGGER refuse_poison ON messages")
        await db.execute("UPDATE folders SET last_repair_at = now() - interval '1 hour' WHERE account_id = $1",
                         account_id)
    third = run_cli("sync", "--once", env=env, timeout=300)
    assert third.code == 0, third.err
    assert_exact(server_truth(dovecot, mail_user), await mirror(db_dsn, account_id))


def _refused_values(uid: int) -> list[MessageMeta]:
    """Rows Postgres or the driver refuse: the header parser never makes them, a server might."""
    base = meta(uid, "refused")
    far = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-12)))
    return [
        MessageMeta(**{**_fields(base), "internal_date": far}),  # the driver: date value out of range
        MessageMeta(**{**_fields(base), "uid": uid + 1, "message_id": _incompressible(9000)}),  # btree entry too big
        MessageMeta(**{**_fields(base), "uid": uid + 2, "subject": "lone \ud800"}),  # no UTF-8 for it
    ]


def _incompressible(n: int) -> str:
    return "".join(random.Random(n).choices(string.ascii_letters + string.digits, k=n))


def _fields(m: MessageMeta) -> dict:
    return {name: getattr(m, name) for name in MessageMeta.__slots__}


async def test_write_batch_stores_what_it_can_and_placeholders_for_the_rest(db):
    account_id, folder_id = await account_with_folder(db)
    every_marker = "\x1f\x1e\x1d\x1c" + "".join(chr(c) for c in range(0xE000, 0xF900))
    good = [meta(u, f"message {u}", to=(f"to{u}@example.org",)) for u in range(1, 41)]
    good[5] = meta(6, every_marker, to=("a@b.c",))  # no separator left: longer markers
    bad = _refused_values(100) + _refused_values(200)
    batch = sorted(good + bad, key=lambda m: m.uid)
    done = await write_batch(db, account_id, folder_id, batch, emit_events=True,
                             folder=FolderUpdate(synced_high_uid=202, count_added=True))
    assert done.unstorable == (100, 101, 102, 200, 201, 202)
    assert (done.written.added, done.written.changed) == (len(batch), 0)
    rows = {r["uid"]: r for r in await db.fetch("SELECT * FROM messages WHERE folder_id = $1", folder_id)}
    assert set(rows) == {m.uid for m in batch}
    for m in good:
        row = rows[m.uid]
        assert (row["subject"], tuple(row["to_emails"]), row["message_id"]) == (m.subject, m.to_emails, m.message_id)
    for uid in done.unstorable:
        assert rows[uid]["size_bytes"] is None
        assert rows[uid]["defects"][0].startswith(f"{UNSTORABLE}: ")
    folder = await db.fetchrow("SELECT synced_high_uid, message_count FROM folders WHERE id = $1", folder_id)
    assert (folder["synced_high_uid"], folder["message_count"]) == (202, len(batch))
    assert await db.fetchval("SELECT count(*) FROM events WHERE folder_id = $1", folder_id) == len(batch)

    # written again (the repair's refetch): the same rows, nothing new
    again = await write_batch(db, account_id, folder_id, batch, emit_events=True, folder=FolderUpdate())
    assert again.unstorable == done.unstorable and again.written.added == 0

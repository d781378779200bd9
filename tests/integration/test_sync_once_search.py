"""After `mailbridge sync --once` returns, every message is searchable through the index
(issue 14): found by a word of its subject and by its sender's address on the API's
search path, with nothing left queued (real Dovecot, real Postgres)."""

from __future__ import annotations

from collections import defaultdict

import pytest

from mailbridge.aio.db import Database
from mailbridge.store.api import MessageFilter, list_messages
from mailbridge.store.search import matching_ids_sql
from mailbridge.testing.mailgen import MaildirWriter, corpus
from tests.support.cli import run_cli
from tests.support.mirror import add_account, base_env

MESSAGES = 3000


@pytest.fixture
def env(db_dsn, encryption_key, tmp_path):
    return base_env(db_dsn, encryption_key, tmp_path, MAILBRIDGE_BATCH_SIZE="500")


def subject_word(subject: str | None) -> str | None:
    """The longest whitespace-delimited all-letter word of `subject` (one token to
    Postgres's parser whatever stands beside it), or None."""
    words = [w for w in (subject or "").split() if w.isalpha()]
    return max(words, key=len, default=None)


async def found(db, account_id: int, q: str) -> set[int]:
    """The ids `?q=` matches: the API's own matching subquery (what `list_messages` filters by)."""
    rows = await db.fetch(f"SELECT message_id FROM ({matching_ids_sql('$1', '$2')}) AS hits", account_id, q)
    return {int(r["message_id"]) for r in rows}


async def listed(db, account_id: int, q: str) -> set[int]:
    rows = await list_messages(db, account_id, MessageFilter(q=q), limit=MESSAGES + 1)
    return {int(r["id"]) for r in rows}


async def test_after_sync_once_every_message_is_found_by_subject_word_and_sender(env, dovecot, mail_user, db_dsn):
    MaildirWriter().write(mail_user, "INBOX", corpus(MESSAGES, seed=21, folder_hint="INBOX"))
    account_id = add_account(env, dovecot, mail_user)
    result = run_cli("sync", "--once", env=env, timeout=300)
    assert result.code == 0, result.err

    async with Database.connect(db_dsn) as db:
        # nothing left queued, and every row has its document: the searches below use the index
        assert await db.fetchval("SELECT count(*) FROM search_pending") == 0
        rows = await db.fetch("SELECT id, subject, from_email FROM messages WHERE account_id = $1", account_id)
        assert len(rows) == MESSAGES
        assert await db.fetchval(
            "SELECT count(*) FROM messages m JOIN message_search s ON s.message_id = m.id "
            "WHERE m.account_id = $1", account_id) == MESSAGES

        by_word: dict[str, list[int]] = defaultdict(list)
        by_sender: dict[str, list[int]] = defaultdict(list)
        for r in rows:
            word = subject_word(r["subject"])
            if word is not None:
                by_word[word].append(r["id"])
            if r["from_email"]:
                by_sender[r["from_email"]].append(r["id"])
        # the corpus has odd messages (no subject, no sender): most have both
        assert sum(map(len, by_word.values())) > MESSAGES * 0.9
        assert sum(map(len, by_sender.values())) > MESSAGES * 0.9
        for word, ids in by_word.items():
            missing = set(ids) - await found(db, account_id, word)
            assert not missing, (word, sorted(missing)[:5])
        for address, ids in by_sender.items():
            missing = set(ids) - await found(db, account_id, address)
            assert not missing, (address, sorted(missing)[:5])
        assert await found(db, account_id, "zzqxnotawordanywhere") == set()
        # and through the listing itself, for a few of each
        for term, ids in [*list(by_word.items())[:20], *list(by_sender.items())[:20]]:
            assert set(ids) <= await listed(db, account_id, term), term
        assert await listed(db, account_id, "zzqxnotawordanywhere") == set()

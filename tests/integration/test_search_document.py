"""The search documents mailbridge builds (`mailbridge.store.search_document`) are the
server's own: the same `tsvector` as ``mailbridge_message_search`` for every input they
are built for, and the batch write stores the server's document whoever built it (real
Postgres)."""

from __future__ import annotations

import logging
import random
from dataclasses import replace

from mailbridge.imap.headers import extract_header_fields
from mailbridge.store import messages as message_store
from mailbridge.store.messages import _array, encode_rows, search_documents
from mailbridge.store.search import document_of
from mailbridge.store.search_document import document_literal
from mailbridge.testing.mailgen import corpus
from tests.support.rows import account_with_folder, meta

# what the generator draws from: words the parser reads specially, and punctuation both
# inside and outside what the builder accepts (so its boundaries are exercised)
_WORDS = ("re", "Fwd", "3pm", "1e5", "2026", "007", "e", "E", "x", "Q3", "a", "1", "0x1f", "v1", "http",
          "www", "com", "org", "io", "e5", "5e", "12e3x", "amp", "lt")
_ACCEPTED_PUNCTUATION = " \t,:;!?()[]\"'#$%*=|^`{}.-"
_ANY = "abcdeEXyz0123456789" + _ACCEPTED_PUNCTUATION + "_+@/<>&~\\é\n"


def _text(rng: random.Random) -> str:
    alphabet = _ACCEPTED_PUNCTUATION if rng.random() < 0.8 else _ANY
    parts = []
    for _ in range(rng.randint(0, rng.choice((3, 10, 40)))):
        if rng.random() < 0.55:
            parts.append(rng.choice(_WORDS) if rng.random() < 0.5
                         else "".join(rng.choice("abcdeEXyz0123456789") for _ in range(rng.randint(1, 6))))
        else:
            parts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 3))))
    return "".join(parts)


def _address(rng: random.Random) -> str:
    def label(chars: str = "abcez0129", first: str = "abcez") -> str:
        return rng.choice(first) + "".join(rng.choice(chars) for _ in range(rng.randint(0, 4)))

    if rng.random() < 0.1:  # mostly not an address the builder takes
        return "".join(rng.choice("abcxyz019.-_+@") for _ in range(rng.randint(1, 12)))
    local = label() if rng.random() < 0.5 else ".".join(label("abcez", "abcez") for _ in range(rng.randint(1, 4)))
    domain = ".".join(label() + ("-" + label("abc019", "abc019") if rng.random() < 0.3 else "")
                      for _ in range(rng.randint(1, 3)))
    return f"{local}@{domain}.{rng.choice(('com', 'io', 'co', 'org', 'ez', 'abc', 'e', 'x1'))}"


def _generated(n: int, seed: int) -> list[tuple]:
    rng = random.Random(seed)
    return [(_text(rng) if rng.random() < 0.9 else None, _text(rng) if rng.random() < 0.5 else None,
             _address(rng) if rng.random() < 0.9 else None,
             tuple(_address(rng) for _ in range(rng.randint(0, 3))), tuple(_address(rng) for _ in range(rng.randint(0, 2))))
            for _ in range(n)]


def _corpus(n: int) -> list[tuple]:
    rows = []
    for raw in corpus(n, seed=3, folder_hint="INBOX"):
        head = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        m = extract_header_fields(head)
        rows.append((m.subject, m.from_name, m.from_email, m.to_emails, m.cc_emails))
    return rows


async def _mismatches(db, rows: list[tuple]) -> tuple[int, list[tuple]]:
    """(documents built, the rows whose built document differs from the server's)."""
    built = [(r, literal) for r in rows if (literal := document_literal(*r)) is not None]
    result = await db.fetch(
        "SELECT i, x.lit::tsvector = mailbridge_message_search(s, n, f, t::text[], c::text[]) AS same "
        "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) "
        "WITH ORDINALITY AS x(s, n, f, t, c, lit, i)",
        [r[0] for r, _ in built], [r[1] for r, _ in built], [r[2] for r, _ in built],
        [_array(r[3]) for r, _ in built], [_array(r[4]) for r, _ in built], [lit for _, lit in built])
    return len(built), [built[row["i"] - 1] for row in result if not row["same"]]


async def test_every_document_built_here_is_the_servers(db):
    rows = _generated(40_000, seed=14) + _corpus(3_000)
    built, wrong = await _mismatches(db, rows)
    assert wrong == []
    assert built > 5_000  # the generator reaches past the builder's refusals


async def test_the_batch_write_stores_the_servers_document_for_every_row(db):
    account_id, folder_id = await account_with_folder(db)
    rows = _corpus(400)
    metas = [replace(meta(uid, s or ""), subject=s, from_name=n, from_email=f, to_emails=t, cc_emails=c)
             for uid, (s, n, f, t, c) in enumerate(rows, 1)]
    built = sum(d is not None for d in search_documents(metas))
    assert 0 < built < len(metas)  # some built here, some by the server
    await message_store.upsert(db, account_id, folder_id, metas, emit_events=False)
    assert await db.fetchval("SELECT count(*) FROM search_pending") == 0
    assert await db.fetchval(
        "SELECT count(*) FROM messages m JOIN message_search s ON s.message_id = m.id "
        f"WHERE s.document = {document_of('m')}") == len(metas)


async def test_documents_that_differ_from_the_servers_are_built_by_the_server(db, caplog):
    # as a server whose 'simple' configuration was altered would see them
    account_id, folder_id = await account_with_folder(db)
    metas = [meta(uid, f"invoice {uid}", to=("bob.jones@corp.example.org",)) for uid in range(1, 51)]
    wrong = ["'nothing':1"] * len(metas)
    with caplog.at_level(logging.WARNING, logger="mailbridge.store.messages"):
        written = await message_store.upsert(db, account_id, folder_id, encode_rows(metas, wrong), emit_events=False)
    assert written.added == 50
    assert await db.fetchval(
        "SELECT count(*) FROM messages m JOIN message_search s ON s.message_id = m.id "
        f"WHERE s.document = {document_of('m')}") == 50
    assert await db.fetchval("SELECT count(*) FROM message_search WHERE document @@ 'nothing'::tsquery") == 0
    assert any("differ from this Postgres server's" in r.getMessage() for r in caplog.records)

"""The search index (sql/0003): a new row's document written with it, a changed row's
queued and built by the indexer, and search exact before, during and after (real
Postgres)."""

from __future__ import annotations

import trio

from actors.indexer import drain, run_indexer
from mailbridge.store import messages as message_store
from mailbridge.store import search as search_store
from mailbridge.store.api import MessageFilter, list_messages
from tests.support.rows import account_with_folder, meta


async def search(db, account_id: int, q: str) -> list[int]:
    rows = await list_messages(db, account_id, MessageFilter(q=q), limit=100)
    return sorted(r["uid"] for r in rows)


async def unbuild(db) -> None:
    """Every document dropped and queued again, as a migration changing the document
    function leaves them (sql/0005): search runs on the document function meanwhile."""
    await db.execute("DELETE FROM message_search")
    await db.execute("INSERT INTO search_pending (message_id) SELECT id FROM messages ON CONFLICT DO NOTHING")


async def test_search_is_exact_before_and_after_the_index_is_built(db):
    account_id, folder_id = await account_with_folder(db)
    other_account, other_folder = await account_with_folder(db, "other@example.test")
    metas = [meta(u, f"invoice {u}" if u % 2 else f"meeting {u}", to=("bob.jones@corp.example.org",))
             for u in range(1, 41)]
    await message_store.upsert(db, account_id, folder_id, metas, emit_events=False)
    await message_store.upsert(db, other_account, other_folder, metas[:5], emit_events=False)
    # new rows: their documents are written in the statement that writes them
    assert await search_store.pending_count(db) == 0
    assert await db.fetchval("SELECT count(*) FROM message_search") == 45
    assert await db.fetchval(
        "SELECT count(*) FROM messages m JOIN message_search s ON s.message_id = m.id "
        f"WHERE s.document = {search_store.document_of('m')} AND s.account_id = m.account_id") == 45
    await unbuild(db)
    assert await search_store.pending_count(db) == 45

    odd = [u for u in range(1, 41) if u % 2]
    expected = {"invoice": odd, "meeting": [u for u in range(1, 41) if not u % 2],
                "jones": list(range(1, 41)), "bob.jones@corp.example.org": list(range(1, 41)), "nothing": []}
    for q, uids in expected.items():
        assert await search(db, account_id, q) == uids, q  # queued: the document function

    assert await drain(db, batch=7) == 45
    assert await search_store.pending_count(db) == 0
    assert await db.fetchval("SELECT count(*) FROM message_search") == 45
    for q, uids in expected.items():
        assert await search(db, account_id, q) == uids, q  # built: the index


async def test_a_changed_row_is_searched_by_its_new_text_at_once(db):
    account_id, folder_id = await account_with_folder(db)
    await message_store.upsert(db, account_id, folder_id, [meta(1, "quarterly report")], emit_events=False)
    await drain(db)
    assert await search(db, account_id, "quarterly") == [1]
    # the same UID re-fetched with another subject (a re-parse): queued again
    await message_store.upsert(db, account_id, folder_id, [meta(1, "annual summary")], emit_events=False)
    assert await search_store.pending_count(db) == 1
    assert await search(db, account_id, "quarterly") == []  # the stale document is not used
    assert await search(db, account_id, "annual") == [1]
    await drain(db)
    assert await search(db, account_id, "quarterly") == []
    assert await search(db, account_id, "annual") == [1]


async def test_deleted_rows_leave_neither_queue_entries_nor_documents(db):
    account_id, folder_id = await account_with_folder(db)
    await message_store.upsert(db, account_id, folder_id, [meta(u, "hello") for u in range(1, 11)],
                               emit_events=False)
    await unbuild(db)
    await message_store.remove_uids(db, account_id, folder_id, [1, 2, 3], emit_events=False)  # while queued
    assert await drain(db) == 10  # the ids of deleted rows are dropped, not indexed
    assert await db.fetchval("SELECT count(*) FROM message_search") == 7
    await message_store.remove_uids(db, account_id, folder_id, [4, 5], emit_events=False)  # once indexed
    assert await db.fetchval("SELECT count(*) FROM message_search") == 5
    assert await search(db, account_id, "hello") == [6, 7, 8, 9, 10]


async def test_the_indexer_task_keeps_up_and_stops_when_cancelled(db):
    account_id, folder_id = await account_with_folder(db)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_indexer(db, batch=50, idle_poll=0.05, task_status=task_status))
        await message_store.upsert(db, account_id, folder_id, [meta(u, "batch one") for u in range(1, 301)],
                                   emit_events=False)
        with trio.fail_after(10):
            while await search_store.pending_count(db):
                await trio.sleep(0.05)
        await message_store.upsert(db, account_id, folder_id, [meta(301, "late arrival")], emit_events=False)
        with trio.fail_after(10):
            while await search_store.pending_count(db):
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert await db.fetchval("SELECT count(*) FROM message_search") == 301
    assert await search(db, account_id, "late") == [301]


async def test_an_interrupted_index_statement_changes_nothing(db):
    account_id, folder_id = await account_with_folder(db)
    await message_store.upsert(db, account_id, folder_id, [meta(u, "kept") for u in range(1, 6)],
                               emit_events=False)
    await unbuild(db)
    async with db.transaction() as tx:
        await tx.execute("LOCK TABLE message_search IN EXCLUSIVE MODE")  # the indexer's insert blocks
        with trio.move_on_after(0.5) as scope:
            await search_store.index_pending(db)
        assert scope.cancelled_caught
    assert await search_store.pending_count(db) == 5
    assert await db.fetchval("SELECT count(*) FROM message_search") == 0
    assert await drain(db) == 5


async def test_an_address_is_found_whole_by_either_side_and_by_its_words(db):
    account_id, folder_id = await account_with_folder(db)
    await message_store.upsert(db, account_id, folder_id, [
        meta(1, "one", sender="bob.jones@corp.example.org"),
        meta(2, "two", to=("mary-ann@mail.example.io", "first_last@example.com")),
        meta(3, "three", sender="zoe@other.test")], emit_events=False)
    await unbuild(db)
    for built in (False, True):
        if built:
            await drain(db)
        for q, uids in {"bob.jones@corp.example.org": [1], "bob.jones": [1], "corp.example.org": [1],
                        "jones": [1], "mary-ann": [2], "mary-ann@mail.example.io": [2], "mail.example.io": [2],
                        "mary": [2], "first_last": [2], "example": [1, 2], "other.test": [3],
                        "example.org": []}.items():
            assert await search(db, account_id, q) == uids, (q, built)


async def test_a_message_with_ten_thousand_long_recipients_is_indexed_and_found(db):
    """Any sender can write such a message; its document stays under tsvector's 1 MB
    limit (sql/0007), so the batch that writes it goes through, and so does the
    indexer's when it is queued again."""
    account_id, folder_id = await account_with_folder(db)
    crowd = tuple(f"recipient.number.{i:05d}.with.a.long.local.part@department-{i % 97}.example.org"
                  for i in range(10_000))
    metas = [meta(1, "crowded announcement", to=crowd), meta(2, "ordinary note")]
    await message_store.upsert(db, account_id, folder_id, metas, emit_events=False)
    assert await search_store.pending_count(db) == 0
    assert await search(db, account_id, "crowded") == [1]  # written with the row: the index
    await unbuild(db)
    assert await search(db, account_id, "crowded") == [1]  # queued: the document function
    assert await drain(db) == 2
    assert await search_store.pending_count(db) == 0
    assert await search(db, account_id, "crowded") == [1]
    assert await search(db, account_id, "ordinary") == [2]
    assert await search(db, account_id, "recipient.number.00001.with.a.long.local.part@department-1.example.org") == [1]


# the document function as sql/0007 defined it (with translate), kept to hold sql/0015 to it
_DOCUMENT_0007 = """
CREATE FUNCTION pg_temp.document_0007(subject text, from_name text, from_email text,
                                      to_emails text[], cc_emails text[])
RETURNS tsvector LANGUAGE sql IMMUTABLE AS $$
    SELECT to_tsvector('simple'::regconfig, left(concat_ws(' ',
        subject, from_name, addresses, replace(addresses, '@', ' '),
        translate(addresses, '@.+_-', '     ')), 200000))
    FROM (SELECT concat_ws(' ', from_email, array_to_string(to_emails, ' '),
                           array_to_string(cc_emails, ' ')) AS addresses) a
$$"""


async def test_the_document_function_gives_the_documents_it_gave_before(db):
    """sql/0015 builds the document with replace() instead of translate(): for addresses,
    names and subjects of every kind (non-ASCII, punctuation, empty, NULL, very long) the
    documents are identical, so none had to be rebuilt."""
    samples = [
        ("Re: Hello-world v2.0", "Zoë-Ann O'Brien", "a.b+c_d-e@x-y.org", ["ö@ü.de", "x..y@z"], []),
        ("", None, None, [], []),
        (None, "", "--@..", ["+_+@-.-", "@", ".", ""], ["plain"]),
        ("Ünïcødé — dash – «quotes» 日本語", "Ωμέγα", "üser.naмe@exämple.cöm", ["a@b"] * 3, ["c-d@e_f.g"]),
        ("x" * 300_000, "n", "long@example.org", ["y@example.org"] * 50, []),
        ("tabs\tand\nnewlines", "n\u00a0b", "mary-ann@corp.example.org", ["bob.jones@corp.example.org"], ["a+tag@gmail.com"]),
    ]
    async with db.acquire() as conn:
        await conn.execute(_DOCUMENT_0007)
        for sample in samples:
            old, new = await conn.fetchrow(
                "SELECT pg_temp.document_0007($1, $2, $3, $4, $5)::text, "
                "mailbridge_message_search($1, $2, $3, $4, $5)::text", *sample)
            assert old == new, sample[:3]

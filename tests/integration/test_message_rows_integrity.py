"""messages rows belong to a live folder (sql/0004): checked once per batch, and removed
with their folder or account, documents and all (real Postgres)."""

from __future__ import annotations

import pytest
import trio

from actors.indexer import drain
from mailbridge.errors import FolderRemoved
from mailbridge.store import messages as message_store
from tests.support.rows import account_with_folder, meta


async def counts(db, account_id: int) -> tuple[int, int]:
    return (await db.fetchval("SELECT count(*) FROM messages WHERE account_id = $1", account_id),
            await db.fetchval("SELECT count(*) FROM message_search WHERE account_id = $1", account_id))


async def test_removing_an_account_removes_its_messages_and_their_documents(db):
    account_id, folder_id = await account_with_folder(db)
    kept_account, kept_folder = await account_with_folder(db, "kept@example.test")
    for a, f in ((account_id, folder_id), (kept_account, kept_folder)):
        await message_store.upsert(db, a, f, [meta(u, "hello") for u in range(1, 21)], emit_events=False)
    await drain(db)
    assert await counts(db, account_id) == (20, 20)
    await db.execute("DELETE FROM accounts WHERE id = $1", account_id)
    assert await counts(db, account_id) == (0, 0)
    assert await counts(db, kept_account) == (20, 20)


async def test_a_batch_for_a_removed_folder_writes_nothing(db):
    account_id, folder_id = await account_with_folder(db)
    await db.execute("DELETE FROM folders WHERE id = $1", folder_id)
    with pytest.raises(FolderRemoved):
        await message_store.upsert(db, account_id, folder_id, [meta(1, "late")], emit_events=False,
                                   folder=message_store.FolderUpdate(synced_high_uid=1))
    assert await counts(db, account_id) == (0, 0)
    assert await db.fetchval("SELECT count(*) FROM search_pending") == 0
    # the folder id with another account's id is no target either
    other_account, other_folder = await account_with_folder(db, "other@example.test")
    with pytest.raises(FolderRemoved):
        await message_store.upsert(db, account_id, other_folder, [meta(1, "mixed")], emit_events=False)


async def test_an_account_removed_during_a_batch_takes_the_batch_with_it(db):
    """The removal waits for the batch in flight to commit, then removes its rows too:
    no row is left behind without its folder."""
    account_id, folder_id = await account_with_folder(db)
    written, release, removed = trio.Event(), trio.Event(), trio.Event()

    async def batch() -> None:
        async with db.transaction() as tx:
            await message_store.upsert(tx, account_id, folder_id, [meta(u, "racing") for u in range(1, 11)],
                                       emit_events=False)
            written.set()
            await release.wait()

    async def remove_account() -> None:
        await db.execute("DELETE FROM accounts WHERE id = $1", account_id)
        removed.set()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(batch)
            await written.wait()
            nursery.start_soon(remove_account)
            await trio.sleep(0.5)
            assert not removed.is_set()  # waiting for the batch's lock on its folder
            release.set()
            await removed.wait()
    assert await counts(db, account_id) == (0, 0)
    assert await db.fetchval("SELECT count(*) FROM folders WHERE id = $1", folder_id) == 0


async def test_any_text_round_trips_whatever_characters_it_holds(db):
    """Text goes to Postgres joined by a separator the batch does not contain: values
    holding the usual separators, quotes, braces, backslashes, empty strings and NULLs
    come back exactly."""
    import dataclasses

    from mailbridge.store import messages as store

    account_id, folder_id = await account_with_folder(db)
    odd = ["\x1f", "\x1e", "a\x1fb\x1ec", "\x1d\x1c", "", '"quoted" {braced} back\\slash', "NULL", "\ue000",
           "日本語 \u2028 line", " spaced "]
    metas = []
    for uid, text in enumerate(odd, 1):
        metas.append(dataclasses.replace(
            meta(uid, text, to=(text or "x@y", 'q"@x', "b\\@c")), message_id=text or None, from_name=text,
            in_reply_to=None if uid % 2 else text, flags=(text,) if text else (), references=(text, "r@x"),
            defects=(text,) if uid % 3 else ()))
    metas.append(dataclasses.replace(meta(len(odd) + 1, None), from_name=None, from_email=None))
    await store.upsert(db, account_id, folder_id, metas, emit_events=False)
    rows = {r["uid"]: r for r in await db.fetch(
        "SELECT uid, message_id, subject, from_name, from_email, to_emails, flags, in_reply_to, "
        "references_header, defects FROM messages WHERE folder_id = $1", folder_id)}
    assert len(rows) == len(metas)
    for m in metas:
        r = rows[m.uid]
        assert (r["message_id"], r["subject"], r["from_name"], r["from_email"], r["in_reply_to"]) == (
            m.message_id, m.subject, m.from_name, m.from_email, m.in_reply_to), m.uid
        assert (tuple(r["to_emails"]), tuple(r["flags"]), tuple(r["references_header"])) == (
            m.to_emails, m.flags, m.references), m.uid
        assert (tuple(r["defects"]) if r["defects"] is not None else ()) == m.defects, m.uid
    # a batch of one empty value, and an empty batch that only moves a cursor
    await store.upsert(db, account_id, folder_id, [meta(99, "")], emit_events=False)
    assert await db.fetchval("SELECT subject FROM messages WHERE folder_id = $1 AND uid = 99", folder_id) == ""
    await store.upsert(db, account_id, folder_id, [], emit_events=False,
                       folder=store.FolderUpdate(synced_high_uid=99))
    assert await db.fetchval("SELECT synced_high_uid FROM folders WHERE id = $1", folder_id) == 99


async def test_nul_characters_are_dropped_from_every_text_column(db):
    import dataclasses

    from mailbridge.store import messages as store

    account_id, folder_id = await account_with_folder(db)
    m = dataclasses.replace(meta(1, "sub\x00ject", to=("a\x00b@x",)), message_id="\x00id@x", from_name="\x00",
                            in_reply_to="r\x00@x", flags=("\\Se\x00en",), references=("\x00ref@x",))
    await store.upsert(db, account_id, folder_id, [m], emit_events=False)
    r = await db.fetchrow("SELECT * FROM messages WHERE folder_id = $1", folder_id)
    assert (r["subject"], r["message_id"], r["from_name"], r["in_reply_to"]) == ("subject", "id@x", "", "r@x")
    assert (r["to_emails"], r["flags"], r["references_header"]) == (["ab@x"], ["\\Seen"], ["ref@x"])

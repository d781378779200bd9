"""The folders store: a batch's `FolderUpdate` and the reads the actor uses (real Postgres)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from mailbridge.errors import FolderRemoved
from mailbridge.imap.models import SelectInfo
from mailbridge.store import accounts as account_store
from mailbridge.store import folders as folder_store
from mailbridge.store import messages as message_store
from mailbridge.store.folders import IdleState
from mailbridge.store.messages import FolderUpdate
from tests.support.rows import account_with_folder, meta


async def cursors(db, folder_id: int):
    return await db.fetchrow(
        "SELECT initial_low_uid, initial_sync_complete, synced_high_uid, message_count, last_repair_at "
        "FROM folders WHERE id = $1", folder_id)


async def test_a_batch_moves_the_named_columns_and_counts_what_it_inserted(db):
    account_id, folder_id = await account_with_folder(db)
    await folder_store.start_cursors(db, folder_id, SelectInfo(exists=10, uidvalidity=7, uidnext=11), 10)
    written = await message_store.upsert(
        db, account_id, folder_id, [meta(u, "new") for u in range(6, 11)], emit_events=False,
        folder=FolderUpdate(initial_low_uid=6, initial_sync_complete=False, count_added=True))
    assert (written.added, written.changed, written.message_count) == (5, 0, 5)
    row = await cursors(db, folder_id)
    assert (row["initial_low_uid"], row["initial_sync_complete"], row["synced_high_uid"], row["message_count"]) == (
        6, False, 10, 5)

    # the same rows again, one changed: nothing inserted, so nothing counted
    stamp = datetime(2026, 3, 2, tzinfo=timezone.utc)
    written = await message_store.upsert(
        db, account_id, folder_id, [meta(6, "changed"), *(meta(u, "new") for u in range(7, 11))],
        emit_events=False, folder=FolderUpdate(last_repair_at=stamp, count_added=True))
    assert (written.added, written.changed, written.message_count) == (0, 1, 5)
    row = await cursors(db, folder_id)
    assert (row["initial_low_uid"], row["message_count"], row["last_repair_at"]) == (6, 5, stamp)

    # without a FolderUpdate the folder row is left alone and no count is returned
    written = await message_store.upsert(db, account_id, folder_id, [meta(11, "later")], emit_events=False)
    assert (written.added, written.message_count) == (1, None)
    assert (await cursors(db, folder_id))["message_count"] == 5


async def test_a_batch_for_another_accounts_folder_moves_no_cursor(db):
    account_id, _folder_id = await account_with_folder(db)
    _other_account, other_folder = await account_with_folder(db, "other@example.test")
    with pytest.raises(FolderRemoved):
        await message_store.upsert(db, account_id, other_folder, [], emit_events=False,
                                   folder=FolderUpdate(synced_high_uid=42))
    assert (await cursors(db, other_folder))["synced_high_uid"] is None


async def test_the_reads_the_actor_uses(db):
    account_id, folder_id = await account_with_folder(db)
    assert await folder_store.get_idle_state(db, folder_id) == IdleState(None, None, None)
    assert await folder_store.get_uidvalidity(db, folder_id) is None
    await folder_store.start_cursors(db, folder_id, SelectInfo(exists=3, uidvalidity=9, uidnext=4,
                                                               highestmodseq=17), 3)
    assert await folder_store.get_idle_state(db, folder_id) == IdleState(uidnext=4, highestmodseq=17,
                                                                        server_message_count=3)
    assert await folder_store.get_uidvalidity(db, folder_id) == 9
    assert await folder_store.server_counts(db, account_id) == {folder_id: 3}
    assert await account_store.get_owner(db, account_id) is None
    await account_store.set_owner(db, account_id, "host:1")
    assert await account_store.get_owner(db, account_id) == "host:1"

    await db.execute("DELETE FROM folders WHERE id = $1", folder_id)
    assert await folder_store.get_idle_state(db, folder_id) is None
    assert await folder_store.get_uidvalidity(db, folder_id) is None
    assert await folder_store.server_counts(db, account_id) == {}
    assert await account_store.get_owner(db, 999_999) is None

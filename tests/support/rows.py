"""Rows written straight through the store (no IMAP): an account, a folder, messages."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from mailbridge.imap.models import MessageMeta
from mailbridge.store import accounts as account_store
from mailbridge.store.accounts import NewAccount

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def meta(uid: int, subject: str, *, sender: str = "ann@example.com", to: tuple[str, ...] = ()) -> MessageMeta:
    return MessageMeta(uid=uid, flags=(), internal_date=T0 + timedelta(minutes=uid), size_bytes=100,
                       message_id=f"m{uid}@example.com", subject=subject, from_name="Ann Lee",
                       from_email=sender, to_emails=to, cc_emails=(), sent_at=None, in_reply_to=None,
                       references=(), modseq=None)


async def account_with_folder(db, email: str = "search@example.test") -> tuple[int, int]:
    new = NewAccount(email=email, imap_host="127.0.0.1", imap_port=143, imap_tls="none",
                     imap_username=email, verify_certificate=False)
    account_id = await account_store.insert(db, new, b"not-a-real-ciphertext", limit=20)
    folder_id = await db.fetchval(
        "INSERT INTO folders (account_id, name, raw_name) VALUES ($1, 'INBOX', 'INBOX') RETURNING id", account_id)
    return account_id, folder_id

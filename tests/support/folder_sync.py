"""One folder's sync without the actor (real Dovecot, real Postgres): an INBOX written
straight into the Maildir, an account row that needs no login test, a session, the
discovered INBOX."""

from __future__ import annotations

from mailbridge.aio.imap import ImapEndpoint, ImapSession
from mailbridge.store import accounts as account_store
from mailbridge.store.accounts import NewAccount
from mailbridge.sync.discover import discover_folders
from mailbridge.testing.mailgen import MaildirWriter, corpus


def fill_inbox(user, n: int) -> None:
    """`n` generated messages in INBOX; two of every three \\\\Seen."""
    MaildirWriter().write(user, "INBOX", corpus(n, seed=11, folder_hint="INBOX"),
                          flags_for=lambda i, _m: ("\\Seen",) if i % 3 else ())


async def insert_account_row(db, dovecot, user) -> int:
    """The account row of a test Dovecot user, with no usable password (the session is
    opened by the test itself)."""
    new = NewAccount(email=f"{user.username}@example.test", imap_host="127.0.0.1", imap_port=dovecot.port,
                     imap_tls="none", imap_username=user.username, verify_certificate=False)
    return await account_store.insert(db, new, b"not-a-real-ciphertext", limit=20)


def open_session(dovecot, user):
    """An IMAP session of `user` on the test Dovecot (plain IMAP on loopback)."""
    return ImapSession.open(ImapEndpoint("127.0.0.1", dovecot.port, "none", user.username), user.password)


async def inbox_of(db, session, account_id):
    """CONDSTORE on, the folders discovered; the INBOX's `Folder`."""
    await session.enable("CONDSTORE")
    folders = (await discover_folders(db, session, account_id, None)).folders
    return next(f for f in folders if f.name == "INBOX")

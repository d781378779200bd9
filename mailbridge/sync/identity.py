"""A message's `email_id`: one identity for every copy of a message in an account.

The server's own where it offers one (Gmail's `X-GM-MSGID`, RFC 8474 `EMAILID`: stored
as the server sends it), else derived here from what every copy of a message shares on
any server: its Message-ID, its INTERNALDATE (whole seconds; COPY and MOVE keep it,
RFC 3501 6.4.7) and its RFC822.SIZE:

    "mb-" + the first 16 hex digits of md5("<message_id>\\n<epoch seconds>\\n<size>")

md5 because Postgres has it built in: `sql/0013_moves.sql` computes the very
same value for the rows stored before (see `SQL_EXPRESSION`), and it costs about 1 µs a
message here.  It is an identity, not a secret: no collision resistance is needed
beyond 64 bits across one account's messages.

By design two copies of one message (same Message-ID, date and size) in two folders
share an id: that is what makes a move visible as a move, and what `GET
/emails/{email_id}` lists.  A message without a Message-ID (or a placeholder row without
a date or size) gets none: NULL, never a guess from subject and sender, which would
join unrelated messages (automated mail repeats both); such a message's move shows as a
remove and an add.
"""

from __future__ import annotations

from datetime import datetime
from hashlib import md5

PREFIX = "mb-"

# the same derivation in SQL, over the messages columns (NULL when any part is missing)
SQL_EXPRESSION = ("'mb-' || left(md5(message_id || E'\\n' || floor(extract(epoch FROM internal_date))::bigint::text"
                  " || E'\\n' || size_bytes::text), 16)")


def derive_email_id(message_id: str | None, internal_date: datetime | None, size: int | None) -> str | None:
    """The derived `email_id` of a message (see the module doc); None when it has no
    Message-ID, date or size."""
    if not message_id or internal_date is None or size is None:
        return None
    seconds = int(internal_date.timestamp() // 1)
    if "\x00" in message_id:  # as stored: Postgres text holds no NUL
        message_id = message_id.replace("\x00", "")
    digest = md5(f"{message_id}\n{seconds}\n{size}".encode("utf-8", "surrogatepass"), usedforsecurity=False)
    return PREFIX + digest.hexdigest()[:16]


__all__ = ["PREFIX", "SQL_EXPRESSION", "derive_email_id"]

"""mailbridge's own error types.

Every library error is translated into one of these at the seam (`mailbridge.aio`), so
the rest of the code, the command line and the API handle one vocabulary.  Messages are
written for the person running mailbridge: what went wrong and how to fix it.  No
message ever contains a password.
"""

from __future__ import annotations


class MailbridgeError(Exception):
    """Base of every error mailbridge raises on purpose."""


class ConfigError(MailbridgeError):
    """A missing or malformed setting; the message names the variable and the fix."""


# --- database -------------------------------------------------------------------------


class DatabaseError(MailbridgeError):
    """Postgres refused a statement.  `sqlstate` is the SQLSTATE code when known."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class DatabaseUnavailable(DatabaseError):
    """Postgres cannot be reached, or the connection was lost."""


class DatabaseTimeout(DatabaseError):
    """A statement ran past `statement_timeout` (SQLSTATE 57014) or waited past
    `lock_timeout` for a lock (55P03); `sqlstate` tells which.  The work can be retried."""


class DatabaseDataError(DatabaseError):
    """A statement's values were refused: by Postgres (SQLSTATE classes 22 and 54: out of
    range, invalid text, too long for an index entry) or by the driver encoding them
    (then without a SQLSTATE).  Writing fewer or other rows may succeed."""


class UniqueViolation(DatabaseError):
    """An insert or update broke a unique constraint."""


class FolderRemoved(DatabaseError):
    """A batch was written for a folder whose row is gone (its account was removed)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "23503")  # as the foreign key it replaces would have said


class MigrationError(DatabaseError):
    """The schema cannot be brought up to date (e.g. an applied file was edited)."""


class LockLost(MailbridgeError):
    """The connection holding an account's advisory lock went away: the lock is gone."""


# --- IMAP -----------------------------------------------------------------------------


class ImapError(MailbridgeError):
    """Base of IMAP failures."""


class ImapConnectError(ImapError):
    """The server could not be reached (DNS, refused, timeout)."""


class ImapTlsError(ImapConnectError):
    """The TLS handshake failed (certificate, protocol)."""


class ImapUnavailable(ImapConnectError):
    """The server is there but will not serve us now: a ``* BYE`` greeting, a
    ``[UNAVAILABLE]`` answer, "too many connections".  Retry later, not at once.

    `retry_after`: seconds the server asked us to wait, when it said so (else None).
    `reason_code`: the RFC 5530 response code it gave (e.g. ``"UNAVAILABLE"``,
    ``"INUSE"``, ``"LIMIT"``), or ``"TOOMANYCONNECTIONS"`` when only its words said so.
    """

    def __init__(self, message: str, *, retry_after: float | None = None,
                 reason_code: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.reason_code = reason_code


class ImapAuthError(ImapError):
    """The server rejected the credentials.  `code`: its RFC 5530 response code
    (``"AUTHENTICATIONFAILED"``, ``"AUTHORIZATIONFAILED"``, ``"EXPIRED"``, ...) or None."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class OAuth2Error(ImapAuthError):
    """An OAuth2 access token could not be had: the token endpoint refused the refresh
    or cannot be reached.  `error`: the endpoint's RFC 6749 error code when it gave one."""

    def __init__(self, message: str, error: str | None = None) -> None:
        super().__init__(message, None)
        self.error = error


class OAuth2Revoked(OAuth2Error):
    """The refresh token was refused (``invalid_grant``: revoked, expired, or the client
    changed): no retry helps until new credentials are stored."""


class OAuth2Unavailable(ImapConnectError):
    """The token endpoint could not be reached or failed (network, 5xx): retry later."""


class ImapThrottled(ImapError):
    """The server refused a command because we send too many (Office 365's "Request is
    throttled. Suggested Backoff Time: N milliseconds").  Wait `retry_after` seconds
    (capped by us) before the next command; the connection stays usable."""

    def __init__(self, message: str, retry_after: float, command: str = "") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.command = command


class ImapCommandError(ImapError):
    """The server answered NO or BAD to a command.  `code`: the RFC 5530 response code
    of the answer (``"LIMIT"``, ``"INUSE"``, ``"OVERQUOTA"``, ``"SERVERBUG"``,
    ``"NONEXISTENT"``, ...), upper-case, or None."""

    def __init__(self, message: str, command: str = "", status: str = "",
                 code: str | None = None) -> None:
        super().__init__(message)
        self.command = command
        self.status = status
        self.code = code


class UnusableMailboxName(ImapCommandError):
    """A mailbox name cannot be put in a command (it holds CR, LF or NUL): no command was
    sent, the connection is fine; skip that mailbox.  `name`: the name as received."""

    def __init__(self, message: str, name: str, command: str = "") -> None:
        super().__init__(message, command, "")
        self.name = name


class ImapProtocolError(ImapError):
    """The server sent something we cannot parse, or is not an IMAP server (foreign
    banner, wrong tag, no IMAP4rev1)."""


class ImapResponseTooLarge(ImapProtocolError):
    """The server sent a line or a literal over our bound (`limit` bytes); the connection
    was dropped before reading it."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class ImapConnectionLost(ImapError):
    """The connection dropped or timed out mid-command."""


class ImapTimeout(ImapConnectionLost):
    """A command got no answer in time."""


# --- credentials ----------------------------------------------------------------------


class SecretError(MailbridgeError):
    """A stored credential cannot be decrypted with the configured keys."""


# --- accounts -------------------------------------------------------------------------


class AccountNotFound(MailbridgeError):
    """No account has that id."""


class AccountLimitReached(MailbridgeError):
    """Adding the account would exceed MAILBRIDGE_MAX_ACCOUNTS."""


class InvalidInput(MailbridgeError):
    """A request or argument is invalid; `fields` maps field name → problem."""

    def __init__(self, message: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.fields = dict(fields or {})


class NameTaken(InvalidInput):
    """Something with that unique name exists already (an OAuth2 client, ...): the API's 409."""


# --- messages -------------------------------------------------------------------------


class MessageGone(MailbridgeError):
    """The message is no longer on the server (expunged, moved, or its folder reset)."""


class MessageTooLarge(MailbridgeError):
    """The message is bigger than MAILBRIDGE_BODY_MAX_BYTES."""

    def __init__(self, message: str, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class WriteRefused(MailbridgeError):
    """A write-back (flags, move, delete) that mailbridge will not do as asked: the
    server lacks what would make it safe (UID EXPUNGE without UIDPLUS and other messages
    marked \\Deleted), or there is no Trash folder.  Nothing was changed.  The API's 409."""


# --- webhooks -------------------------------------------------------------------------


class WebhookNotFound(MailbridgeError):
    """No webhook has that id."""


# --- exception groups -----------------------------------------------------------------


def root_cause(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups (else `exc`).

    A failure that travelled out of a nursery arrives wrapped in a group of one; this is
    what to report, match on, or re-raise.  A group of several holding a LockLost gives
    that LockLost (losing the lock cancels the work, whose errors follow from it); any
    other group of several is returned as it is.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, BaseExceptionGroup):
        lost, _ = exc.split(LockLost)
        if lost is not None:
            return root_cause(lost.exceptions[0])
    return exc

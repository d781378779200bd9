"""Known server behaviours in one place: `quirks_for(host, greeting, capabilities)` →
a frozen `ServerQuirks`.  Pure (no I/O); keyed by the host name, the greeting text and
the capabilities.  Each entry names where the knowledge comes from.

What the session uses today: `idle_reissue_seconds` (how long one IDLE lasts before
DONE and a new IDLE; short where news only comes when polled) and `qresync_broken`
(QRESYNC is not ENABLEd).  The rest are recorded for the code that will use them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

#: seconds between IDLE re-issues on servers that report news only when polled
POLL_REISSUE_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class ServerQuirks:
    """What is known about one server.  None: nothing special (the settings hold)."""

    name: str = "generic"
    idle_reissue_seconds: float | None = None  # end and re-issue IDLE this often at most
    reports_only_on_poll: bool = False  # news comes with DONE/NOOP, not pushed during IDLE
    max_connections: int | None = None  # simultaneous connections per account
    qresync_broken: bool = False  # do not ENABLE QRESYNC
    throttle_hint: str | None = None  # what the server's throttling looks like
    gmail_all_mail: bool = False  # labels: every message is also in [Gmail]/All Mail


GENERIC = ServerQuirks()

# Gmail: 15 simultaneous IMAP connections per account
#   http://email.about.com/od/gmailtips/fl/Know-the-Simultaneous-Gmail-IMAP-Connection-Limit.htm and
#   https://canarymail.io/help/too-many-simultaneous-connections-on-gmail/ (Google's own 2008 page,
#   http://mail.google.com/support/bin/answer.py?answer=97150, said 10; no current vendor figure found)
# X-GM-EXT-1 and the All Mail label model: https://developers.google.com/gmail/imap/imap-extensions
GMAIL = ServerQuirks("gmail", max_connections=15, gmail_all_mail=True)

# iCloud: QRESYNC advertised, but no ENABLED reply and wrong VANISHED (mail "disappears"):
#   https://github.com/Foundry376/Mailspring-Sync/pull/91 (disables QRESYNC for iCloud),
#   https://github.com/bkaankose/Wino-Mail/issues/43, https://bugzilla.mozilla.org/show_bug.cgi?id=1747311.
#   No vendor statement found.
ICLOUD = ServerQuirks("icloud", qresync_broken=True)

# Yahoo: drops idle connections well before RFC 2177's 29 minutes; clients re-issue IDLE
#   about every 5 minutes.  Source NOT found (no vendor doc, no public issue found in the time
#   given); kept as a conservative bound that costs one DONE/IDLE per 5 minutes.
YAHOO = ServerQuirks("yahoo", idle_reissue_seconds=300.0)

# Office 365 / Exchange Online: throttles per user (BAD/NO "Request is throttled", BYE with
#   "[UNAVAILABLE]"); at most 20 concurrent IMAP connections per mailbox.
#   https://learn.microsoft.com/en-us/exchange/clients-and-mobile-in-exchange-online/pop3-and-imap4/pop3-and-imap4
#   https://learn.microsoft.com/en-us/office365/servicedescriptions/exchange-online-service-description/exchange-online-limits
#   (not re-checked with the search tool: these addresses are from memory)
OFFICE365 = ServerQuirks("office365", max_connections=20,
                         throttle_hint="per-user throttling: 'Request is throttled', '[UNAVAILABLE]'")

# Courier-IMAP with IMAP_ENHANCEDIDLE=0 (Debian's default imapd config): IDLE reports news
#   only when it ends (DONE) or on NOOP -- imapd(8), "Realtime concurrent folder status
#   updates" (IMAP_ENHANCEDIDLE needs FAM/gamin): https://manpages.ubuntu.com/manpages/kinetic/en/man8/imapd.8.html
#   Measured here: tests/integration/test_poll_servers_freshness.py.
COURIER = ServerQuirks("courier", idle_reissue_seconds=POLL_REISSUE_SECONDS, reports_only_on_poll=True)

# Cyrus IMAP without `idled` (Debian's cyrus.conf starts none): imapd's IDLE polls the
#   mailbox only every `imapidlepoll` seconds (imapd.conf(5)); idled is what "signals the
#   appropriate imapd to report the changes": https://manpages.ubuntu.com/manpages/lunar/man8/cyrus-idled.8.html
#   Measured here (Cyrus 3.6, no idled): nothing during IDLE, `* n EXISTS` only with DONE.
#   Whether idled runs cannot be told from outside, so every Cyrus gets the short IDLE.
CYRUS = ServerQuirks("cyrus", idle_reissue_seconds=POLL_REISSUE_SECONDS, reports_only_on_poll=True)

_HOSTS: tuple[tuple[str, ServerQuirks], ...] = (
    ("imap.gmail.com", GMAIL),
    ("imap.googlemail.com", GMAIL),
    ("imap.mail.me.com", ICLOUD),
    ("imap.mail.yahoo.com", YAHOO),
    ("outlook.office365.com", OFFICE365),
)
_GREETINGS: tuple[tuple[re.Pattern[str], ServerQuirks], ...] = (
    (re.compile(r"\bGimap\b"), GMAIL),
    (re.compile(r"\bCourier-IMAP\b", re.I), COURIER),
    (re.compile(r"\bCyrus IMAP\b", re.I), CYRUS),
)


def quirks_for(host: str, greeting: str = "", capabilities: Iterable[str] = ()) -> ServerQuirks:
    """The known quirks of the server at `host` that greeted with `greeting` and offers
    `capabilities`; GENERIC when nothing is known.  The host wins, then capabilities
    (X-GM-EXT-1 is Gmail wherever it is hosted), then the greeting."""
    host = host.lower().rstrip(".")
    for name, quirks in _HOSTS:
        if host == name:
            return quirks
    if "X-GM-EXT-1" in {c.upper() for c in capabilities}:
        return GMAIL
    for pattern, quirks in _GREETINGS:
        if pattern.search(greeting):
            return quirks
    return GENERIC


def polled(quirks: ServerQuirks) -> ServerQuirks:
    """`quirks` for a server seen to report news only when polled (learnt at run time)."""
    if quirks.reports_only_on_poll:
        return quirks
    return replace(quirks, reports_only_on_poll=True, idle_reissue_seconds=POLL_REISSUE_SECONDS)


__all__ = ["GENERIC", "POLL_REISSUE_SECONDS", "ServerQuirks", "polled", "quirks_for"]

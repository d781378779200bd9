"""What a server's status text says beyond OK/NO/BAD (mailbridge.imap.codes)."""

from __future__ import annotations

import pytest

from mailbridge.imap.codes import MAX_BACKOFF, THROTTLE_DEFAULT, response_code, throttle_hint, too_many_connections


@pytest.mark.parametrize(("text", "code"), [
    ("NO [LIMIT] too many mailboxes", "LIMIT"),
    ("[INUSE] mailbox in use", "INUSE"),
    ("A12 NO [OVERQUOTA] quota exceeded", "OVERQUOTA"),
    ("* BYE [UNAVAILABLE] system is down", "UNAVAILABLE"),
    ("NO [AUTHENTICATIONFAILED] Authentication failed.", "AUTHENTICATIONFAILED"),
    ("BAD [SERVERBUG] oops", "SERVERBUG"),
    ("OK [READ-ONLY] EXAMINE completed", "READ-ONLY"),
    ("OK [CAPABILITY IMAP4rev1 IDLE] Logged in", "CAPABILITY"),
    ("no [limit] lower case", "LIMIT"),
    (b"NO [UNAVAILABLE] bytes too", "UNAVAILABLE"),
    ("NO mailbox does not exist", None),
    ("NO something [LIMIT] later in the text", None),
    ("", None),
    ("[", None),
    ("\x00\xff[[[", None),
])
def test_response_code(text, code):
    assert response_code(text) == code


def test_throttle_hint_reads_office365s_line_and_caps_it():
    assert throttle_hint("NO Request is throttled. Suggested Backoff Time: 1500 milliseconds") == 1.5
    assert throttle_hint(b"A3 NO Request is throttled. Suggested Backoff Time: 250 ms") == 0.25
    assert throttle_hint("NO Request is throttled. Suggested Backoff Time: 99999999999 milliseconds") == MAX_BACKOFF
    assert throttle_hint("NO Request is throttled.") == THROTTLE_DEFAULT
    assert throttle_hint("NO Mailbox doesn't exist") is None
    assert throttle_hint("NO [LIMIT] too many") is None
    assert MAX_BACKOFF == 600.0


@pytest.mark.parametrize(("text", "crowded"), [
    ("* BYE too many connections", True),
    ("* BYE [UNAVAILABLE] Too many simultaneous connections. (Failure)", True),
    ("NO Maximum number of connections from user+IP exceeded (mail_max_userip_connections=10)", True),
    ("* BYE Connection limit reached", True),
    ("* BYE Logging out", False),
    ("NO [AUTHENTICATIONFAILED] Authentication failed.", False),
])
def test_too_many_connections(text, crowded):
    assert too_many_connections(text) is crowded


def test_never_raises_on_anything():
    for text in ("\ud800", "x" * 100_000, b"\xff\xfe" * 1000, bytearray(b"[A"), "Backoff Time: 5 s throttled"):
        response_code(text)
        throttle_hint(text)
        too_many_connections(text)
    assert throttle_hint("throttled; Suggested Backoff Time: 5 seconds") == 5.0

"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailbridge.imap.utf7 import decode_mailbox_name, encode_mailbox_name

PAIRS = [
    ("INBOX", "INBOX"),
    ("Reise &- Urlaub", "Reise & Urlaub"),
    ("&ZeVnLIqe-", "日本語"),
    ("Reise &- Urlaub.&ZeVnLIqe-", "Reise & Urlaub.日本語"),
    ("Entw&APw-rfe", "Entwürfe"),
    ("Gel&APY-schte Elemente", "Gelöschte Elemente"),
    ("&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-", "Отправленные"),
    ("[Gmail]/Alle Nachrichten", "[Gmail]/Alle Nachrichten"),
    ("&-&-", "&&"),
    ("~peter/mail/&U,BTFw-/&ZeVnLIqe-", "~peter/mail/台北/日本語"),
    ("&2D3eAA-", "\U0001f600"),  # a surrogate pair
]


@pytest.mark.parametrize("raw, name", PAIRS)
def test_decode(raw, name):
    assert decode_mailbox_name(raw) == name


@pytest.mark.parametrize("raw, name", PAIRS)
def test_encode(raw, name):
    assert encode_mailbox_name(name) == raw


@pytest.mark.parametrize("raw", [
    "Reise & Urlaub",      # '&' not shifted
    "&ZeVnLIqe",           # no closing '-'
    "&Ze!nLIqe-",          # not base64
    "&ZeVnLIq-",           # bits left over
    "&ANx-",               # non-zero padding bits (&ANw- is Ü)
    "&2D0-",               # lone high surrogate
    "&A-",                 # too short
    "Grüße & Co",          # UTF-8 from a UTF8=ACCEPT server
])
def test_malformed_comes_back_unchanged(raw):
    assert decode_mailbox_name(raw) == raw


def test_non_canonical_ascii_in_base64_is_accepted():
    assert decode_mailbox_name("&AGEAYg-") == "ab"


@settings(max_examples=300)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_round_trip(name):
    raw = encode_mailbox_name(name)
    assert raw.isascii()
    assert all(" " <= c <= "~" for c in raw)
    assert decode_mailbox_name(raw) == name


@settings(max_examples=300)
@given(st.text(alphabet="&-AZaz09+,/. " + "é日"))
def test_decoding_never_raises(raw):
    assert isinstance(decode_mailbox_name(raw), str)

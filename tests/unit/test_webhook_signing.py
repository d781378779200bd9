"""The Mailbridge-Signature header: what a receiver computes, and `verify`."""

from __future__ import annotations

import hashlib
import hmac

from mailbridge.webhooks.signing import parse, sign, signature, verify

BODY = b'{"id":7,"type":"message_added","account_id":1,"created_at":"2026-01-01T00:00:00+00:00","data":{}}'


def test_the_header_is_t_and_the_hmac_sha256_of_t_dot_body_in_lowercase_hex():
    expected = hmac.new(b"s3cret", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert signature("s3cret", 1700000000, BODY) == expected
    assert sign("s3cret", 1700000000, BODY) == f"t=1700000000,v1={expected}"
    assert expected == expected.lower() and len(expected) == 64


def test_verify_accepts_its_own_signature_within_five_minutes():
    header = sign("s3cret", 1700000000, BODY)
    assert verify("s3cret", header, BODY, now=1700000000)
    assert verify("s3cret", header, BODY, now=1700000000 + 300)
    assert verify("s3cret", header, BODY, now=1700000000 - 300)  # a receiver's clock a little behind


def test_verify_rejects_an_old_timestamp_a_wrong_secret_and_a_changed_body():
    header = sign("s3cret", 1700000000, BODY)
    assert not verify("s3cret", header, BODY, now=1700000000 + 301)
    assert not verify("other", header, BODY, now=1700000000)
    assert not verify("s3cret", header, BODY + b" ", now=1700000000)
    # the timestamp is signed: moving it forward breaks the signature
    forged = header.replace("t=1700000000", "t=1700000100")
    assert not verify("s3cret", forged, BODY, now=1700000100)


def test_verify_never_raises_on_a_missing_or_malformed_header():
    for header in (None, "", "garbage", "t=abc,v1=00", "v1=00", "t=1700000000", "t=1700000000,v1="):
        assert verify("s3cret", header, BODY, now=1700000000) is False


def test_parse_reads_several_signatures_and_ignores_unknown_parts():
    good = signature("s3cret", 1700000000, BODY)
    t, sigs = parse(f"t=1700000000, v0=abc, v1=DEADBEEF, v1={good}")
    assert t == 1700000000 and sigs == ["deadbeef", good]
    assert verify("s3cret", f"t=1700000000,v1=deadbeef,v1={good}", BODY, now=1700000000)

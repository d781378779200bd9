"""Pure parts of OAuth2 sign-in: SASL responses, mechanism choice, token responses."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import pytest

from mailbridge.credentials import Bearer, Password, choose_mechanism, oauthbearer_response, xoauth2_response
from mailbridge.errors import ImapAuthError, OAuth2Error, OAuth2Revoked, OAuth2Unavailable
from mailbridge.oauth2.tokens import needs_refresh, parse_token_response

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_oauthbearer_response_is_rfc7628_gs2_with_escaped_user():
    raw = base64.b64decode(oauthbearer_response("a,b=c@x", "TOK", "imap.x", 993)).decode()
    assert raw == "n,a=a=2Cb=3Dc@x,\x01host=imap.x\x01port=993\x01auth=Bearer TOK\x01\x01"


def test_xoauth2_response():
    assert base64.b64decode(xoauth2_response("u@x", "TOK")) == b"user=u@x\x01auth=Bearer TOK\x01\x01"


def test_oauthbearer_is_preferred_then_xoauth2():
    assert choose_mechanism({"AUTH=XOAUTH2", "AUTH=OAUTHBEARER"}) == "OAUTHBEARER"
    assert choose_mechanism({"AUTH=XOAUTH2", "AUTH=PLAIN"}) == "XOAUTH2"
    assert choose_mechanism({"AUTH=PLAIN"}) is None


def test_credentials_never_show_their_secret():
    assert "s3cret" not in repr(Password("s3cret")) and "t0ken" not in repr(Bearer("u", "t0ken"))


def test_a_grant_with_expiry_and_rotated_refresh_token():
    grant = parse_token_response(200, json.dumps({"access_token": "A", "expires_in": 5,
                                                  "refresh_token": "R2"}).encode(), NOW)
    assert (grant.access_token, grant.expires_at, grant.refresh_token) == ("A", NOW + timedelta(seconds=5), "R2")
    assert parse_token_response(200, b'{"access_token": "A"}', NOW).refresh_token is None


def test_invalid_grant_is_revoked_and_an_auth_error_without_the_secret():
    with pytest.raises(OAuth2Revoked) as caught:
        parse_token_response(400, b'{"error": "invalid_grant", "error_description": "bad R1"}', NOW,
                             secrets=("R1",))
    assert isinstance(caught.value, ImapAuthError) and caught.value.error == "invalid_grant"
    assert "R1" not in str(caught.value)


@pytest.mark.parametrize("status, body, error", [
    (401, b'{"error": "invalid_client"}', OAuth2Error),
    (503, b"down", OAuth2Unavailable),
    (502, b'{"error": "x"}', OAuth2Unavailable),
    (200, b'{"token_type": "Bearer"}', OAuth2Error),
    (200, b"<html>", OAuth2Unavailable),
])
def test_other_answers(status, body, error):
    with pytest.raises(error):
        parse_token_response(status, body, NOW)


def test_refresh_when_less_than_the_margin_is_left():
    assert needs_refresh(None, NOW)
    assert needs_refresh(NOW + timedelta(seconds=59), NOW)
    assert not needs_refresh(NOW + timedelta(seconds=61), NOW)


def test_renewal_delay_ends_a_session_a_margin_or_half_the_time_left_before_expiry():
    from datetime import datetime, timedelta, timezone

    from mailbridge.oauth2.tokens import renewal_delay

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert renewal_delay(now + timedelta(hours=1), now, 60) == 3540
    assert renewal_delay(now + timedelta(seconds=8), now, 60) == 4
    assert renewal_delay(now, now, 60) == 1.0  # never a tight loop
    assert renewal_delay(now - timedelta(seconds=5), now, 60) == 1.0

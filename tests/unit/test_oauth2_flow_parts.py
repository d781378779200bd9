"""The pure parts of OAuth2 sign-in's user-facing side: PKCE, the authorization URL, the
redirect's reading, and the one client validation the CLI and the API share."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from mailbridge.errors import InvalidInput, OAuth2Error
from mailbridge.oauth2.authorize import authorization_url, code_challenge, pkce_pair, read_redirect
from mailbridge.oauth2.clients import check_secret, validate_client


def test_the_s256_challenge_matches_rfc_7636_appendix_b():
    assert code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128 and challenge == code_challenge(verifier)
    assert pkce_pair()[0] != verifier


def test_the_authorization_url_keeps_the_endpoints_query_and_adds_googles_offline_access():
    url = authorization_url("https://idp.example/auth?tenant=x", "cid", "http://127.0.0.1:5000/", scopes="a b",
                            state="st", challenge="ch", login_hint="u@example.test")
    query = parse_qs(urlsplit(url).query)
    assert query == {"tenant": ["x"], "response_type": ["code"], "client_id": ["cid"],
                     "redirect_uri": ["http://127.0.0.1:5000/"], "state": ["st"], "code_challenge": ["ch"],
                     "code_challenge_method": ["S256"], "scope": ["a b"], "login_hint": ["u@example.test"]}
    google = parse_qs(urlsplit(authorization_url("https://accounts.google.com/o/oauth2/v2/auth", "c",
                                                 "http://127.0.0.1:1/", scopes="", state="s",
                                                 challenge="c")).query)
    assert google["access_type"] == ["offline"] and google["prompt"] == ["consent"] and "scope" not in google


def test_reading_the_redirect():
    assert read_redirect("code=abc&state=s1", "s1") == "abc"
    assert read_redirect("", "s1") is None  # not a redirect: keep waiting
    assert read_redirect("foo=1", "s1") is None
    with pytest.raises(OAuth2Error, match="state does not match"):
        read_redirect("code=abc&state=s2", "s1")
    with pytest.raises(OAuth2Error, match="state does not match"):
        read_redirect("code=abc", "s1")
    with pytest.raises(OAuth2Error, match=r"refused the sign-in: access_denied \(no thanks\)") as caught:
        read_redirect("error=access_denied&error_description=no+thanks&state=s1", "s1")
    assert caught.value.error == "access_denied"
    with pytest.raises(OAuth2Error, match="no authorization code"):
        read_redirect("code=&state=s1", "s1")


def test_one_client_validation_names_every_bad_field():
    new = validate_client({"name": " g ", "client_id": "id", "preset": "google"})
    assert (new.name, new.token_url, new.scopes) == ("g", "https://oauth2.googleapis.com/token",
                                                      "https://mail.google.com/")
    own = validate_client({"name": "n", "client_id": "i", "token_url": "http://127.0.0.1:9/token",
                           "scopes": ["imap", "offline_access x"], "preset": "microsoft"})
    assert own.token_url == "http://127.0.0.1:9/token" and own.scopes == "imap offline_access x"
    assert own.authorize_url.startswith("https://login.microsoftonline.com/")
    with pytest.raises(InvalidInput) as caught:
        validate_client({"name": "", "client_id": 5, "token_url": "ftp://x/y", "authorize_url": "not a url",
                         "scopes": 'a"b', "preset": "yahoo"})
    assert set(caught.value.fields) == {"name", "client_id", "token_url", "authorize_url", "scopes", "preset"}
    assert str(caught.value).startswith("invalid OAuth2 client: ")
    with pytest.raises(InvalidInput) as caught:
        validate_client({"name": "n", "client_id": "c"})
    assert caught.value.fields == {"token_url": "is required (or a preset: google, microsoft)"}
    assert check_secret(None) == "" and check_secret("s") == "s"
    with pytest.raises(InvalidInput):
        check_secret("x\n")
